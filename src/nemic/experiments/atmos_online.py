"""Recipe ``nemic atmos train --online``: the column network trained through rollouts of the hybrid atmosphere.

Starts from a network in nemic's weights format (typically the offline one, ``nemic atmos train --offline``),
trains it with :func:`nemic.experiments.atmos_training.train_online` (rollout-length curriculum, the one training
loop, checkpoints in the staging directory so that a killed run resumes) on the truth's ``train.zarr``, and scores
1-5 day forecasts of T, u, q and p_s (:func:`~nemic.experiments.atmos_training.forecast_rmse`) of the hybrid with
the initial network, with the trained one and (optionally) of the bare dynamical core, all from the same start
states of the held-out ``test.zarr``. Writes ``column_net.eqx``, ``metrics.json`` and ``online.png`` (loss per
iteration, forecast RMSE per lead).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.data.atmosphere.dataset import PROFILE_VARS, open_truth
from nemic.experiments.atmos_training import OnlineConfig, forecast_rmse, hybrid, train_online
from nemic.experiments.config import CHECKPOINTS, staged_run
from nemic.io.files import write_json
from nemic.io.output import save_figure
from nemic.io.terminal import progress_bar
from nemic.models.atmosphere import PrimitiveEquations
from nemic.nn.column import ColumnNet
from nemic.train.checkpoint import load_module, save_module

__all__ = ["run_online", "UNITS"]

#: forecast variables and the factor to the reported unit (q in g/kg)
UNITS = {"T": ("K", 1.0), "u": ("m/s", 1.0), "q": ("g/kg", 1e3), "ps": ("Pa", 1.0)}
STATE_VARS = PROFILE_VARS + ("ps",)


def _load_net(path: str | Path) -> ColumnNet:
    p = Path(path)
    if not p.exists() and not p.with_suffix(".eqx").exists():
        raise ConfigError(f"initial network '{p}' does not exist (train one with 'nemic atmos train --offline')")
    return load_module(p, kind="ColumnNet")


def _plot(hist: list[float], scores: dict[str, dict[str, list[float]]], out: Path) -> None:
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8), layout="constrained")
    axes[0].semilogy(hist)
    axes[0].set(xlabel="iteration", ylabel="normalised state MSE", title="online training loss")
    for ax, (k, (unit, f)) in zip(axes[1:], UNITS.items()):
        for name, r in scores.items():
            ax.plot(np.arange(1, len(r[k]) + 1), np.asarray(r[k]) * f, marker="o", label=name)
        ax.set(xlabel="lead [days]", ylabel=f"RMSE {k} [{unit}]", title=f"forecast RMSE of {k}")
        ax.legend(fontsize=7)
    save_figure(fig, out)


def run_online(cfg: OnlineConfig, truth: str | Path, init: str | Path, out: str | Path, *,
               progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``init`` online on ``truth/train.zarr``, score forecasts on ``truth/test.zarr``, write ``out``."""
    t0 = time.perf_counter()
    truth = Path(truth)
    if not truth.is_dir():
        raise ConfigError(f"truth directory '{truth}' does not exist (create it with 'nemic atmos generate')")
    net = _load_net(init)
    sigma = 0.5 * (np.asarray(net.sigma_boundaries[1:]) + np.asarray(net.sigma_boundaries[:-1]))
    train = open_truth(truth / "train.zarr", truncation=cfg.truncation, sigma=sigma, variables=STATE_VARS)
    test = open_truth(truth / "test.zarr", truncation=cfg.truncation, sigma=sigma, variables=STATE_VARS)
    levels = np.linspace(0.0, 1.0, net.levels + 1)
    if not np.allclose(net.sigma_boundaries, levels, atol=1e-6):
        raise DataError(f"the hybrid core has equidistant sigma levels; the network was trained on interfaces "
                        f"{np.round(net.sigma_boundaries, 3).tolist()} (use a truth with vertical = 'equidistant')")
    model = PrimitiveEquations(cfg.truncation, net.levels, dt=cfg.dt)
    settings = {**dataclasses.asdict(cfg), "truth": str(truth.resolve()), "init": str(Path(init).resolve())}
    with staged_run(out, "atmos train --online", settings) as stage:
        log(f"online training from {init}: curriculum {list(cfg.curriculum)} (saves of the truth, iterations), "
            f"batch {cfg.batch_size}, learning rate {cfg.learning_rate:g}")
        t1 = time.perf_counter()
        trained, hist = train_online(net, model, train, cfg, progress=progress, checkpoint_dir=stage / CHECKPOINTS)
        train_s = time.perf_counter() - t1
        if not np.all(np.isfinite(hist)):
            bad = int(np.argmin(np.isfinite(hist)))
            raise DataError(f"online training produced a non-finite loss at iteration {bad}")
        save_module(stage / "column_net.eqx", trained,
                    extra={"recipe": "atmos train --online", "sigma": sigma.tolist(), "truncation": cfg.truncation,
                           "init": str(init)})
        cases = [("initial network", hybrid(model, net)), ("online network", hybrid(model, trained))]
        if cfg.score_bare:
            cases.append(("bare core", model))
        scores = {}
        with progress_bar(progress) as pb:
            task = pb.add_task("forecasts", total=len(cases), info="")
            for i, (name, proc) in enumerate(cases):
                pb.update(task, completed=i, info=name)
                scores[name] = forecast_rmse(proc, model, test, dt=cfg.dt, lead_days=cfg.lead_days,
                                             n_starts=cfg.n_starts)
            pb.update(task, completed=len(cases), info="done")
        stages, i = [], 0
        for n, it in cfg.curriculum:
            seg = hist[i:i + int(it)]
            i += int(it)
            if seg:
                stages.append({"window_saves": int(n), "iterations": int(it), "loss_first": float(seg[0]),
                               "loss_last10_mean": float(np.mean(seg[-10:]))})
        better = {k: [bool(a < b) for a, b in zip(scores["online network"][k], scores["initial network"][k])]
                  for k in UNITS}
        metrics = {
            "config": settings,
            "loss": {"first": float(hist[0]), "last10_mean": float(np.mean(hist[-10:])), "stages": stages},
            "forecast_rmse": scores,
            "forecast_units": {k: "K" if k == "T" else "m s-1" if k == "u" else "kg kg-1" if k == "q" else "Pa"
                               for k in UNITS},
            "online_better_than_initial": better,
            "train_seconds": train_s,
            "wall_seconds": time.perf_counter() - t0,
        }
        _plot(hist, scores, stage / "online.png")
        write_json(metrics, stage / "metrics.json")
    log("forecast RMSE at the last lead (initial -> online): " + ", ".join(
        f"{k} {scores['initial network'][k][-1] * f:.3g} -> {scores['online network'][k][-1] * f:.3g} {u}"
        for k, (u, f) in UNITS.items()))
    return metrics

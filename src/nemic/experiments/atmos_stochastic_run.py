"""Recipe ``nemic atmos train --stochastic``: the SPPT amplitude of the hybrid fitted by CRPS, scored on held-out
forecasts (see :mod:`nemic.experiments.atmos_stochastic`).

Fitting starts are the last ``fit_days`` of the truth's training period; scoring starts are spread over its test
period. Writes ``metrics.json`` (every candidate's mean CRPS / MAE on the fitting starts, the chosen amplitude,
and per variable and lead day on the test starts: CRPS, the deterministic hybrid's MAE, their ratio, the
ensemble-mean RMSE and spread/error), ``sppt.json`` (the chosen pattern: amplitude, length, time) and
``stochastic.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import matplotlib.pyplot as plt
import numpy as np

from nemic.core.errors import ConfigError
from nemic.data.atmosphere.columns import TRUTH_VARIABLES
from nemic.data.atmosphere.dataset import days_since_2000, open_truth
from nemic.experiments.atmos_stochastic import ensemble_forecasts, forecast_scores, stochastic_hybrid
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.output import save_figure
from nemic.models.atmosphere import PrimitiveEquations
from nemic.nn.column import ColumnNet
from nemic.train.checkpoint import load_module

__all__ = ["StochasticConfig", "quick_stochastic_config", "run_stochastic"]


@dataclasses.dataclass(frozen=True)
class StochasticConfig:
    """Settings of the SPPT fit: candidate amplitudes, pattern, ensembles, forecasts."""

    sigmas: tuple[float, ...] = (0.25, 0.5, 1.0)
    length_km: float = 500.0
    tau_hours: float = 6.0
    members: int = 6
    fit_starts: int = 2
    fit_days: float = 40.0
    test_starts: int = 4
    lead_days: int = 5
    dt: float = 1800.0
    seed: int = 0

    def __post_init__(self):
        if not self.sigmas or any(not (np.isfinite(s) and s > 0) for s in self.sigmas):
            raise ConfigError(f"sigmas must be positive numbers, got {self.sigmas!r}")
        if self.members < 2 or self.fit_starts < 1 or self.test_starts < 1 or self.lead_days < 1:
            raise ConfigError("need members >= 2, fit_starts >= 1, test_starts >= 1, lead_days >= 1")
        if not self.fit_days > self.lead_days:
            raise ConfigError(f"fit_days ({self.fit_days}) must exceed lead_days ({self.lead_days})")


def quick_stochastic_config() -> StochasticConfig:
    """One candidate, 2 members, one start each, 1-day leads: a smoke test."""
    return StochasticConfig(sigmas=(0.5,), members=2, fit_starts=1, fit_days=2.0, test_starts=1, lead_days=1)


def _mean_ratio(scores: dict[str, dict[str, list[float]]]) -> float:
    return float(np.mean([np.mean(s["crps_over_mae"]) for s in scores.values()]))


def _plot(scores: dict[str, dict[str, list[float]]], out: Path) -> None:
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, s in scores.items():
        days = np.arange(1, len(s["crps"]) + 1)
        ax[0].plot(days, s["crps_over_mae"], marker="o", label=name)
        ax[1].plot(days, s["spread_error"], marker="o", label=name)
    ax[0].axhline(1.0, color="k", lw=0.8)
    ax[0].set(xlabel="lead [days]", ylabel="CRPS / deterministic MAE", title="stochastic hybrid, test period")
    ax[1].axhspan(0.7, 1.3, color="0.9")
    ax[1].axhline(1.0, color="k", lw=0.8)
    ax[1].set(xlabel="lead [days]", ylabel="spread / error", title="ensemble reliability")
    ax[0].legend(fontsize=8)
    save_figure(fig, out / "stochastic.png")


def run_stochastic(cfg: StochasticConfig, truth: str | Path, init: str | Path, out: str | Path, *,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the SPPT amplitude of the hybrid with network ``init`` by CRPS and score it on the test period."""
    t0 = time.perf_counter()
    truth = Path(truth)
    net = load_module(init, kind="ColumnNet")
    if not isinstance(net, ColumnNet):
        raise ConfigError(f"{init} holds a {type(net).__name__}, not a ColumnNet")
    train = open_truth(truth / "train.zarr", truncation=21, sigma=None, variables=TRUTH_VARIABLES)
    test = open_truth(truth / "test.zarr", truncation=21, sigma=train["level"].values, variables=TRUTH_VARIABLES)
    per_day = int(round(1.0 / float(np.median(np.diff(days_since_2000(train["time"].values))))))
    fit = train.isel(time=slice(-int(round(cfg.fit_days * per_day)), None))
    model = PrimitiveEquations(21, net.levels, dt=cfg.dt, fix_dry_mass=True)
    key = jax.random.key(cfg.seed)
    settings = {**dataclasses.asdict(cfg), "truth": str(truth.resolve()), "init": str(Path(init).resolve())}
    with staged_run(out, "atmos train --stochastic", settings) as stage:
        det = stochastic_hybrid(model, net, 0.0)
        kw = {"lead_days": cfg.lead_days, "key": key}
        det_fit, y_fit = ensemble_forecasts(det, model, fit, members=1, n_starts=cfg.fit_starts, **kw)
        candidates = {}
        for s in cfg.sigmas:
            ens, _ = ensemble_forecasts(stochastic_hybrid(model, net, s, length_km=cfg.length_km,
                                                          tau_hours=cfg.tau_hours), model, fit,
                                        members=cfg.members, n_starts=cfg.fit_starts, **kw)
            candidates[s] = _mean_ratio(forecast_scores(ens, det_fit, y_fit))
            log(f"sigma {s:g}: mean CRPS / MAE on the fitting starts {candidates[s]:.3f}")
        best = min(candidates, key=candidates.get)
        det_te, y_te = ensemble_forecasts(det, model, test, members=1, n_starts=cfg.test_starts, **kw)
        ens_te, _ = ensemble_forecasts(stochastic_hybrid(model, net, best, length_km=cfg.length_km,
                                                         tau_hours=cfg.tau_hours), model, test,
                                       members=cfg.members, n_starts=cfg.test_starts,
                                       lead_days=cfg.lead_days, key=jax.random.fold_in(key, 1))
        scores = forecast_scores(ens_te, det_te, y_te)
        metrics = {"config": settings, "fit_crps_over_mae": {str(k): v for k, v in candidates.items()},
                   "sigma": best, "test": scores, "test_mean_crps_over_mae": _mean_ratio(scores),
                   "wall_seconds": time.perf_counter() - t0}
        write_json(metrics, stage / "metrics.json")
        write_json({"sigma": best, "length_km": cfg.length_km, "tau_hours": cfg.tau_hours,
                    "network": str(Path(init).resolve())}, stage / "sppt.json")
        _plot(scores, stage)
    log(f"SPPT amplitude {best:g}; test CRPS / deterministic MAE (mean over variables and leads) "
        f"{metrics['test_mean_crps_over_mae']:.3f}")
    return metrics

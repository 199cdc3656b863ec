"""Recipe ``nemic atmos guard``: the novelty guard of the column physics on held-out columns and in a +4 K climate.

1. Fits the guard's detector (:func:`nemic.experiments.atmos_guard.fit_column_detector`) on every column of the
   control truth's ``train.zarr`` and measures its flag rate on the held-out ``test.zarr`` (in-distribution) and on
   every column of the shifted truth (``nemic atmos generate`` with ``sst_offset = 4``), per latitude and as maps.
2. Runs the hybrid (dinosaur's core + the column network) from states of the shifted truth's test period for
   ``days`` days without the guard and with the guard for each fallback, and reports the biases of global-mean
   temperature, specific humidity and precipitation against the shifted truth at the same times, the RMSE of
   temperature, and the fraction of the run's columns the guard flags each day.

Writes ``metrics.json``, ``guard.png`` (flag-rate maps, distance histograms, flag rate by latitude) and
``guard_runs.png`` (daily global-mean biases of the runs).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nemic.core.errors import ConfigError
from nemic.core.rollout import rollout
from nemic.data.atmosphere.columns import TRUTH_VARIABLES
from nemic.data.atmosphere.dataset import open_truth
from nemic.experiments.atmos_guard import (FALLBACKS, GuardedColumnNet, column_distances, column_inputs_of,
                                           fit_column_detector)
from nemic.experiments.atmos_online import _load_net
from nemic.experiments.atmos_training import _days, check_levels, reference_states
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.output import save_figure
from nemic.io.terminal import progress_bar
from nemic.models.atmosphere import ColumnPhysics, PackedColumnFunction, PrimitiveEquations
from nemic.models.atmosphere.column import column_inputs, insolation_field
from nemic.nn.column import ColumnNet

__all__ = ["GuardConfig", "quick_guard_config", "run_guard"]


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """Settings: detector (``quantile``, ``features``), runs (``days``, ``n_starts``, ``fallbacks``, ``dt``)."""

    truncation: int = 21
    quantile: float = 0.998
    features: str = "thermo"
    fallbacks: tuple = ("clip", "zero")
    days: int = 6
    n_starts: int = 1
    dt: float = 1200.0

    def __post_init__(self):
        if not 0 < self.quantile < 1:
            raise ConfigError(f"quantile must be in (0, 1), got {self.quantile!r}")
        bad = [f for f in self.fallbacks if f not in FALLBACKS]
        if bad:
            raise ConfigError(f"fallbacks must be among {FALLBACKS}, got {bad}")
        if self.days < 0 or self.n_starts < 1:
            raise ConfigError(f"need days >= 0 and n_starts >= 1, got {self.days}, {self.n_starts}")


def quick_guard_config() -> GuardConfig:
    """Flag rates and one 1-day run per case at dt = 1 h (a smoke test)."""
    return GuardConfig(days=1, fallbacks=("clip",), dt=3600.0)


def _weights(lat: np.ndarray) -> np.ndarray:
    w = np.cos(np.deg2rad(lat))
    return w / w.sum()


def _gmean(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Area mean over (lat, lon) (and the mean over levels when present) of (time, [level,] lat, lon)."""
    a = a.mean(axis=-1)
    a = np.einsum("...j,j->...", a, w)
    return a.mean(axis=1) if a.ndim == 2 else a


def _run_case(physics, model, guarded, state0, t0, days, dt):
    steps = int(round(86400.0 / dt))

    @eqx.filter_jit
    def run(ph, s0, g, t0):
        traj = rollout(model + ph, model.default_stepper(), s0, dt=dt, n_steps=days * steps, save_every=steps,
                       observe=ph.observe, t0=t0)
        f = traj.states
        ins = jax.vmap(lambda t: insolation_field(model.grid, t, "daily", day0=0.0))(traj.t)
        cols = jax.vmap(lambda fi, si: column_inputs(model.grid, fi, si))(f, ins)
        x = ColumnNet.pack(cols.temperature, cols.specific_humidity, cols.eastward_wind, cols.northward_wind,
                           cols.surface_pressure, cols.insolation, cols.latitude)
        return f, jnp.mean(g.distance(x) > g.detector.threshold, axis=-1)

    return run(physics, state0, guarded, jnp.asarray(t0))


def run_guard(cfg: GuardConfig, truth: str | Path, shifted: str | Path, net_path: str | Path, out: str | Path, *,
              progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the guard on ``truth``, score it on ``truth``'s test period and on ``shifted``, run the hybrid there."""
    t_start = time.perf_counter()
    truth, shifted = Path(truth), Path(shifted)
    for p in (truth, shifted):
        if not p.is_dir():
            raise ConfigError(f"truth directory '{p}' does not exist (create it with 'nemic atmos generate')")
    net = _load_net(net_path)
    sigma = 0.5 * (np.asarray(net.sigma_boundaries[1:]) + np.asarray(net.sigma_boundaries[:-1]))
    kw = dict(truncation=cfg.truncation, sigma=sigma, variables=TRUTH_VARIABLES)
    train, test = open_truth(truth / "train.zarr", **kw), open_truth(truth / "test.zarr", **kw)
    s_train, s_test = open_truth(shifted / "train.zarr", **kw), open_truth(shifted / "test.zarr", **kw)
    settings = {**dataclasses.asdict(cfg), "truth": str(truth.resolve()), "shifted": str(shifted.resolve()),
                "net": str(Path(net_path).resolve())}
    with staged_run(out, "atmos guard", settings) as stage:
        det, lo, hi = fit_column_detector(net, column_inputs_of(train), quantile=cfg.quantile, features=cfg.features)
        g0 = GuardedColumnNet(net, det, lo, hi, fallback=cfg.fallbacks[0] if cfg.fallbacks else "clip")
        thr = float(det.threshold)
        d_test = column_distances(g0, test)
        d_shift = np.concatenate([column_distances(g0, s_train), column_distances(g0, s_test)])
        d_train = column_distances(g0, train)
        lat = test["lat"].values
        rates = {"train": float((d_train > thr).mean()), "held_out": float((d_test > thr).mean()),
                 "shifted": float((d_shift > thr).mean()),
                 "held_out_by_day": [float(a) for a in (d_test > thr).reshape(-1, 4, *d_test.shape[1:]).mean(
                     axis=(1, 2, 3))] if d_test.shape[0] % 4 == 0 else None,
                 "shifted_by_latitude": [float(a) for a in (d_shift > thr).mean(axis=(0, 2))],
                 "held_out_by_latitude": [float(a) for a in (d_test > thr).mean(axis=(0, 2))]}
        log(f"guard flags {100 * rates['held_out']:.2f} % of held-out columns and {100 * rates['shifted']:.1f} % "
            f"of the shifted climate's columns (threshold {thr:.2f}, quantile {cfg.quantile})")
        _plot_rates(d_test, d_shift, d_train, thr, lat, test["lon"].values, stage / "guard.png")

        model = PrimitiveEquations(cfg.truncation, net.levels, dt=cfg.dt)
        ref = reference_states(model, s_test)
        t_days = _days(s_test)
        per_day = int(round(1.0 / float(np.median(np.diff(t_days)))))
        n_days = (len(t_days) - 1) // per_day
        days = min(cfg.days, n_days)
        runs: dict[str, Any] = {}
        w = _weights(lat)
        if days >= 1:
            starts = np.linspace(0, len(t_days) - 1 - days * per_day, cfg.n_starts).astype(int)
            check_levels(model, net)
            cases = [("no guard", net)] + [(f"guard, {fb} fallback", GuardedColumnNet(net, det, lo, hi, fallback=fb))
                                           for fb in cfg.fallbacks]
            done = 0
            with progress_bar(progress) as pb:
                task = pb.add_task("hybrid runs in the shifted climate", total=len(cases) * len(starts), info="")
                for name, fn in cases:
                    physics = ColumnPhysics(model.grid, PackedColumnFunction(fn, net.levels), insolation="daily")
                    series = {"T": [], "q": [], "precipitation": [], "T_rmse": [], "flagged": []}
                    for s in starts:
                        pb.update(task, info=name)
                        state0 = jax.tree_util.tree_map(lambda x: x[s], ref)
                        f, flagged = _run_case(physics, model, g0, state0, float(t_days[s] * 86400.0), days, cfg.dt)
                        idx = s + per_day * np.arange(0, days + 1)
                        tT, tq, tp = (s_test[k].values[idx] for k in ("T", "q", "precipitation"))
                        pT, pq = np.asarray(f.air_temperature), np.asarray(f.specific_humidity)
                        pp = np.asarray(f.precipitation_flux)
                        series["T"].append(_gmean(pT - tT, w))
                        series["q"].append(_gmean(pq - tq, w) * 1e3)
                        series["precipitation"].append(_gmean(pp - tp, w) * 86400.0)
                        series["T_rmse"].append(np.sqrt(_gmean((pT - tT) ** 2, w)))
                        series["flagged"].append(np.asarray(flagged))
                        done += 1
                        pb.update(task, completed=done)
                    mean = {k: np.mean(v, axis=0) for k, v in series.items()}
                    runs[name] = {
                        "daily_global_mean_bias": {"T_K": mean["T"].tolist(), "q_g_kg": mean["q"].tolist(),
                                                   "precipitation_mm_day": mean["precipitation"].tolist()},
                        "daily_T_rmse_K": mean["T_rmse"].tolist(),
                        "daily_flagged_fraction": mean["flagged"].tolist(),
                        "bias_mean_days_1_to_n": {"T_K": float(mean["T"][1:].mean()),
                                                  "q_g_kg": float(mean["q"][1:].mean()),
                                                  "precipitation_mm_day": float(mean["precipitation"][1:].mean())},
                        "finite": bool(all(np.all(np.isfinite(a)) for a in series["T"])),
                    }
            _plot_runs(runs, stage / "guard_runs.png")
        truth_precip = float(np.einsum("tjk,j->", s_test["precipitation"].values, w)
                             / s_test.sizes["time"] / s_test.sizes["lon"] * 86400.0)
        metrics = {"config": settings, "threshold": thr, "flag_rate": rates, "runs": runs, "run_days": days,
                   "shifted_truth_mean_precipitation_mm_day": truth_precip,
                   "wall_seconds": time.perf_counter() - t_start}
        write_json(metrics, stage / "metrics.json")
    for name, r in runs.items():
        b = r["bias_mean_days_1_to_n"]
        log(f"{name}: mean bias over days 1-{days}: T {b['T_K']:+.2f} K, q {b['q_g_kg']:+.3f} g/kg, "
            f"precipitation {b['precipitation_mm_day']:+.2f} mm/day")
    return metrics


def _plot_rates(d_test, d_shift, d_train, thr, lat, lon, path):
    fig, axes = plt.subplots(1, 4, figsize=(21, 4), layout="constrained")
    for ax, d, title in ((axes[0], d_test, "held-out control"), (axes[1], d_shift, "shifted (+4 K) climate")):
        im = ax.pcolormesh(lon, lat, (d > thr).mean(axis=0), vmin=0, vmax=1, cmap="viridis", shading="auto")
        fig.colorbar(im, ax=ax, label="fraction of times flagged")
        ax.set(title=f"flag rate, {title}", xlabel="longitude [deg]", ylabel="latitude [deg]")
    bins = np.logspace(np.log10(max(min(d_train.min(), d_shift.min()), 1e-2)), np.log10(d_shift.max() * 1.05), 60)
    for d, name in ((d_train, "training"), (d_test, "held-out"), (d_shift, "+4 K")):
        axes[2].hist(d.ravel(), bins=bins, density=True, histtype="step", label=name)
    axes[2].axvline(thr, color="k", ls="--", label="threshold")
    axes[2].set(xscale="log", xlabel="Mahalanobis distance", ylabel="density", title="column distances")
    axes[2].legend(fontsize=7)
    for d, name in ((d_test, "held-out"), (d_shift, "+4 K")):
        axes[3].plot(lat, (d > thr).mean(axis=(0, 2)), marker=".", label=name)
    axes[3].set(xlabel="latitude [deg]", ylabel="flag rate", title="flag rate by latitude", ylim=(-0.02, 1.02))
    axes[3].legend(fontsize=7)
    save_figure(fig, path)


def _plot_runs(runs, path):
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8), layout="constrained")
    keys = (("T_K", "T bias [K]"), ("q_g_kg", "q bias [g/kg]"), ("precipitation_mm_day", "P bias [mm/day]"))
    for name, r in runs.items():
        days = np.arange(len(r["daily_T_rmse_K"]))
        for ax, (k, label) in zip(axes[:3], keys):
            ax.plot(days, r["daily_global_mean_bias"][k], marker="o", label=name)
            ax.set(xlabel="day", ylabel=label, title=f"global mean {label.split(' [')[0]}")
        axes[3].plot(days, r["daily_flagged_fraction"], marker="o", label=name)
    axes[3].set(xlabel="day", ylabel="fraction of columns flagged", title="guard flags in the run", ylim=(0, 1.02))
    for ax in axes:
        ax.legend(fontsize=7)
    save_figure(fig, path)

"""Recipe: a correction of the one-scale Lorenz-96 model learned from its nudging tendencies.

Following Watt-Meyer et al. (2021, GRL 48, e2021GL092555, doi:10.1029/2021GL092555) and Bretherton et al.
(2022, JAMES 14, e2021MS002794, doi:10.1029/2021MS002794), on the Lorenz-96 pair of Wilks (2005, QJRMS 131,
389-407, doi:10.1256/qj.04.03):

1. truth: the two-scale model (K=8, J=32, h=1, b=10, c=10, F=20), saved every coarse step;
2. nudged run: the one-scale model + :class:`~nemic.processes.nudging.Nudging` toward the truth's X with time
   scale ``tau``; its nudging tendencies (written as CF netCDF) estimate the one-scale model's error, which here
   is the missing subgrid tendency U_k = -(h c / b) sum_j Y_jk (in the steady linear limit a fraction
   tau_B / (tau + tau_B) of it, with tau_B ~ 1 the model's damping time);
3. correction: a local-stencil MLP fitted to map the nudged state to its nudging tendency;
4. evaluation on an independent truth run of four coarse models run free: ``none`` (one-scale model alone),
   ``nudging_correction`` (this recipe), and the two closures of :mod:`nemic.experiments.l96_closure` trained on
   the diagnosed U offline (``nn_offline``) and through the solver (``nn_online``): climate (mean, standard
   deviation and Hellinger distance of the X distribution against the truth's), forecast RMSE, stability, and a
   novelty guard's report (the fraction of the corrected free run's states outside the nudged training
   distribution).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nemic.core.errors import ConfigError, check_positive
from nemic.core.steppers import RK4
from nemic.experiments.config import CHECKPOINTS, settings_hash, staged_run
from nemic.experiments.l96_closure import L96ClosureConfig, evaluate, truth_run
from nemic.io.nudging import nudging_dataset
from nemic.io.output import save_figure, to_xarray, write_json, write_netcdf
from nemic.io.terminal import progress as progress_reporter
from nemic.metrics.climate import hellinger_distance
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.guards import GuardedTendency, MahalanobisDetector, guard_dataset, guard_report, moment_features
from nemic.processes.neural import NeuralTendency
from nemic.processes.nudging import Nudging, nudged_run
from nemic.train.checkpoint import save_module
from nemic.train.offline import fit_offline
from nemic.train.online import fit_online

MODELS = ("none", "nudging_correction", "nn_offline", "nn_online")


@dataclasses.dataclass(frozen=True)
class NudgingL96Config:
    """Settings of the nudging recipe (non-dimensional time; the truth and evaluation settings are those of
    :class:`~nemic.experiments.l96_closure.L96ClosureConfig`, passed as ``closure``)."""

    closure: L96ClosureConfig = L96ClosureConfig()
    tau: float = 0.05
    online: bool = True
    guard_quantile: float = 0.999

    def __post_init__(self):
        if not isinstance(self.closure, L96ClosureConfig):
            raise ConfigError(f"closure must be an L96ClosureConfig, got {type(self.closure).__name__}")
        if not isinstance(self.online, bool):
            raise ConfigError(f"online must be true or false, got {self.online!r}")
        check_positive("tau", self.tau)
        if not 0 < self.guard_quantile < 1:
            raise ConfigError(f"guard_quantile must be in (0, 1), got {self.guard_quantile!r}")
        if self.tau < 2 * self.closure.coarse_dt:
            raise ConfigError(f"tau ({self.tau}) must be at least 2 coarse_dt ({self.closure.coarse_dt}) for a "
                              "stable explicit nudged run")

    @classmethod
    def tiny(cls, **kw) -> "NudgingL96Config":
        """A configuration that runs in seconds (for tests and ``--small``); numbers are not meaningful."""
        c = L96ClosureConfig(J=8, spinup_time=1.0, train_time=8.0, test_time=6.0, n_forecasts=4,
                             forecast_spacing=1.0, max_lead=1.0, climate_time=6.0, nn_width=16, offline_iters=200,
                             online_curriculum=((2, 20),), online_batch=8)
        return cls(closure=c, **kw)


def _flat(cfg: NudgingL96Config) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(cfg.closure).items() if not isinstance(v, tuple)}
    d.update(tau=cfg.tau, guard_quantile=cfg.guard_quantile, online=int(cfg.online))
    return d


def run(cfg: NudgingL96Config = NudgingL96Config(), out: str | Path = "runs/nudging_l96", *, progress: bool = True,
        log=print) -> dict[str, Any]:
    """Run the recipe, write everything to ``out`` and return the metrics dictionary.

    Files: ``metrics.json``; ``nudged_run.nc`` (the nudged state and ``x_nudging_tendency``); ``truth.nc``;
    ``free_run_<model>.nc``; ``guard.nc`` (per-time novelty of the corrected free run); PNG plots; fitted
    networks in ``models/``. The results are staged and replace ``out`` whole at the end
    (:func:`~nemic.experiments.config.staged_run`): a failed run leaves an earlier ``out`` as it was.
    """
    if not isinstance(cfg, NudgingL96Config):
        raise ConfigError(f"cfg must be a NudgingL96Config, got {type(cfg).__name__}")
    with staged_run(out, "nudging l96", _flat(cfg)) as stage:
        return _run(cfg, stage, progress=progress, log=log)


def _run(cfg: NudgingL96Config, out: Path, *, progress: bool, log) -> dict[str, Any]:
    t_start = time.perf_counter()
    c = cfg.closure
    ckpt = out / CHECKPOINTS / settings_hash(dataclasses.asdict(cfg))  # resumes only the very same settings
    k_train, k_test, k_nn, k_fit, k_off, k_on = jax.random.split(jax.random.PRNGKey(c.seed), 6)
    truth_model = TwoScaleLorenz96(h=c.h, b=c.b, c=c.c, F=c.F)
    coarse = Lorenz96(F=c.F)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log("[1/5] truth runs of the two-scale model")
    train, u_train = truth_run(truth_model, c, k_train, c.train_time, progress)
    test, _ = truth_run(truth_model, c, k_test, max(c.test_time, c.climate_time), progress)
    x_train, x_test = np.asarray(train.states.x), np.asarray(test.states.x)
    timings["truth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"[2/5] one-scale model nudged toward the truth (tau = {cfg.tau:g})")
    nudging = Nudging(train, cfg.tau)
    n_steps = c.steps(c.train_time, c.coarse_dt)
    with progress_reporter("nudged run", enabled=bool(progress)) as report:
        nrun = nudged_run(coarse, nudging, RK4(), Lorenz96State(x=train.states.x[0]), dt=c.coarse_dt,
                          n_steps=n_steps, t0=float(train.t[0]), progress=report)
    write_netcdf(nudging_dataset(nrun, attrs={"title": "one-scale Lorenz-96 nudged toward the two-scale truth",
                                              **_flat(cfg)}), out / "nudged_run.nc")
    x_nudged = np.asarray(nrun.trajectory.states.x)
    n_tend = np.asarray(nrun.nudging_tendency.states.x)
    timings["nudged_run"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log("[3/5] networks: nudging correction (state -> nudging tendency) and offline closure (X -> U)")
    net = LocalStencilMLP(c.nn_halfwidth, c.nn_width, c.nn_depth, key=k_nn, in_mean=float(x_train.mean()),
                          in_std=float(x_train.std()), out_scale=float(u_train.std()))
    nets: dict[str, Any] = {}
    nets["nudging_correction"], hist_nudge = fit_offline(net, x_nudged, n_tend, n_iters=c.offline_iters,
                                                         batch_size=c.offline_batch, learning_rate=c.offline_lr,
                                                         key=k_fit, progress=progress,
                                                         checkpoint_dir=ckpt / "nudging_correction")
    nets["nn_offline"], hist_off = fit_offline(net, x_train, u_train, n_iters=c.offline_iters,
                                               batch_size=c.offline_batch, learning_rate=c.offline_lr, key=k_off,
                                               progress=progress, checkpoint_dir=ckpt / "nn_offline")
    timings["offline_fits"] = time.perf_counter() - t0
    hist_on: list[float] = []
    if cfg.online:
        t0 = time.perf_counter()
        log("[4/5] online closure (through rollouts of the coarse model)")
        trained, hist_on = fit_online(NeuralTendency(nets["nn_offline"], "x"), lambda m: coarse + m, RK4(),
                                      Lorenz96State(x=jnp.asarray(x_train)), dt=c.coarse_dt,
                                      curriculum=c.online_curriculum, batch_size=c.online_batch,
                                      learning_rate=c.online_lr, key=k_on, progress=progress,
                                      checkpoint_dir=ckpt / "nn_online")
        nets["nn_online"] = trained.net
        timings["nn_online"] = time.perf_counter() - t0
    for name, module in nets.items():
        save_module(out / "models" / name, module, module.config(), extra={"recipe": "nudging_l96"})

    t0 = time.perf_counter()
    log("[5/5] free runs and forecasts on an independent truth run")
    detector = MahalanobisDetector.fit(np.asarray(jax.vmap(moment_features)(jnp.asarray(x_nudged))).reshape(-1, 3),
                                       quantile=cfg.guard_quantile)
    models = {"none": coarse}
    for name in ("nudging_correction", "nn_offline", "nn_online"):
        if name in nets:
            models[name] = coarse + NeuralTendency(nets[name], "x")
    clim_std = float(x_test.std())
    results = {name: evaluate(m, c, x_test, clim_std) for name, m in models.items()}
    guard = GuardedTendency(NeuralTendency(nets["nudging_correction"], "x"), detector, moment_features, "x")
    greport = guard_report(guard, results["nudging_correction"]["free_run"])
    write_netcdf(guard_dataset(guard, results["nudging_correction"]["free_run"]), out / "guard.nc")
    in_dist = detector.false_alarm_rate(jax.vmap(moment_features)(jnp.asarray(x_test)).reshape(-1, 3))
    timings["evaluation"] = time.perf_counter() - t0

    truth_mean, truth_std = float(x_test.mean()), float(x_test.std())
    metrics: dict[str, Any] = {"config": {**dataclasses.asdict(cfg)}, "truth": {"mean_x": truth_mean,
                                                                                  "std_x": truth_std}}
    u_at_nudged = u_train[: n_tend.shape[0]]
    metrics["nudging"] = {
        "tau": cfg.tau,
        "rmse_nudged_vs_truth_x": float(np.sqrt(np.mean((x_nudged - x_train[: x_nudged.shape[0]]) ** 2))),
        "corr_nudging_tendency_vs_subgrid_u": float(np.corrcoef(n_tend.ravel(), u_at_nudged.ravel())[0, 1]),
        "regression_slope_nudging_on_u": float(np.polyfit(u_at_nudged.ravel(), n_tend.ravel(), 1)[0]),
    }
    metrics["models"] = {}
    for name, r in results.items():
        xs = np.asarray(r["free_run"].states.x)
        metrics["models"][name] = {
            "mean_x": float(xs.mean()), "std_x": float(xs.std()),
            "mean_bias": float(xs.mean()) - truth_mean, "std_bias": float(xs.std()) - truth_std,
            "hellinger_x": hellinger_distance(xs, x_test, bins=50),
            "forecast_rmse": r["forecast_rmse"], "skill_lost_lead_time": r["skill_lost_lead_time"],
            "stable": r["stable"], "blowup": r["blowup"],
            "free_run_time": float(xs.shape[0] - 1) * c.coarse_dt,
        }
    metrics["guard"] = {"corrected_free_run": greport, "false_alarm_rate_truth_test": in_dist,
                        "features": "mean, std, mean |X| of each state", "quantile": cfg.guard_quantile}
    metrics["training"] = {"nudging_correction_final_loss": float(np.mean(hist_nudge[-50:])),
                           "nn_offline_final_loss": float(np.mean(hist_off[-50:])),
                           "nn_online_final_loss": float(np.mean(hist_on[-50:])) if hist_on else None}
    metrics["timings_seconds"] = timings

    attrs = _flat(cfg)
    write_netcdf(to_xarray(test, attrs={"title": "two-scale Lorenz-96 truth (X), test period", **attrs}),
                 out / "truth.nc")
    for name, r in results.items():
        write_netcdf(to_xarray(r["free_run"], attrs={"title": f"coarse Lorenz-96 free run, model {name}", **attrs}),
                     out / f"free_run_{name}.nc")
    plot_all(out, x_test, results, n_tend, u_at_nudged, nrun, x_train)
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(metrics, out / "metrics.json")
    return metrics


COLORS = {"truth": "black", "none": "tab:gray", "nudging_correction": "tab:green", "nn_offline": "tab:orange",
          "nn_online": "tab:red"}


def plot_all(out: Path, x_test, results, n_tend, u, nrun, x_train) -> None:
    """PNG plots: X distributions, forecast RMSE, nudging tendency against the true subgrid tendency, series."""

    from nemic.experiments.l96_plots import plot_x_pdfs

    def save(fig, name):
        save_figure(fig, out / name)

    save(plot_x_pdfs(x_test, {n: r["free_run"].states.x for n, r in results.items()}, COLORS,
                     "Climate of X in free runs"), "pdf_x.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(r["lead_times"], r["rmse_curve"], color=COLORS[name], label=name)
    ax.axhline(x_test.std(), color="k", ls=":", lw=1, label="climatological std")
    ax.set(xlabel="lead time (model time units)", ylabel="RMSE of X", title="Forecast error")
    ax.legend(fontsize=8)
    save(fig, "rmse_vs_lead.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(u.ravel(), n_tend.ravel(), s=2, alpha=0.3)
    lim = [min(u.min(), n_tend.min()), max(u.max(), n_tend.max())]
    ax.plot(lim, lim, "k--", lw=1, label="1:1")
    ax.set(xlabel="subgrid tendency U of the truth", ylabel="nudging tendency",
           title="Nudging tendency estimates the model error")
    ax.legend()
    save(fig, "nudging_vs_subgrid.png")

    fig, axs = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
    t = np.asarray(nrun.trajectory.t)
    n = min(len(t), 400)
    axs[0].plot(t[:n], x_train[:n, 0], "k", label="truth X_1")
    axs[0].plot(t[:n], np.asarray(nrun.trajectory.states.x)[:n, 0], "g--", label="nudged X_1")
    axs[0].legend(fontsize=8)
    axs[1].plot(t[:n], n_tend[:n, 0], "g", label="nudging tendency")
    axs[1].plot(t[:n], u[:n, 0], "k:", label="true U_1")
    axs[1].set(xlabel="time")
    axs[1].legend(fontsize=8)
    save(fig, "nudged_series.png")


__all__ = ["MODELS", "NudgingL96Config", "run"]

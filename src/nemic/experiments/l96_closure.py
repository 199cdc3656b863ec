"""Recipe: closures of the two-scale Lorenz-96 model, from physics-only to a neural closure trained online.

The truth is the two-scale model (Wilks 2005, QJRMS 131, 389-407, doi:10.1256/qj.04.03; K=8, J=32, h=1, b=10,
c=10, F=20) integrated with RK4 at ``truth_dt``. The coarse model is the one-scale model at ``coarse_dt`` (five
times larger) plus one of four closures of the subgrid tendency U_k = -(h c / b) sum_j Y_jk:

``none``         the one-scale model alone;
``polynomial``   U ~ quartic polynomial of X_k, least squares on the truth's diagnosed U (Wilks 2005);
``nn_offline``   a local, translation-invariant MLP of (X_{k-2}..X_{k+2}) regressed on the same U;
``nn_online``    the same MLP, started from ``nn_offline`` and trained through rollouts of the coarse hybrid
                 model against the truth with a rollout-length curriculum.

Evaluation on an independent truth run: forecast RMSE against lead time over many initial conditions, the lead
time at which the RMSE reaches the climatological standard deviation, the Hellinger distance between the X
distributions of a long free run and of the truth, autocorrelation of X, and stability (no blow-up).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import BlowUpError, ConfigError, check_int_at_least, check_positive
from nemic.core.rollout import Trajectory, rollout, simulate
from nemic.core.steppers import RK4
from nemic.experiments.config import CHECKPOINTS, staged_run
from nemic.experiments.l96_plots import plot_all
from nemic.io.output import to_xarray, write_json, write_netcdf
from nemic.io.terminal import progress as progress_reporter
from nemic.metrics.climate import autocorrelation, hellinger_distance
from nemic.metrics.skill import forecast_rmse, skill_lost_lead_time
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.neural import NeuralTendency
from nemic.processes.polynomial import PolynomialClosure
from nemic.train.checkpoint import read_header, save_module
from nemic.train.offline import fit_offline
from nemic.train.online import fit_online

CLOSURES = ("none", "polynomial", "nn_offline", "nn_online")
#: largest memory a recipe's arrays may take, and most steps of a run, before it is refused at the door
MAX_BYTES = 32 * 2**30
MAX_STEPS = 10**9


def check_finite_number(name: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class L96ClosureConfig:
    """Settings of the Lorenz-96 closure recipe (model time units are non-dimensional; 1 unit ~ 5 days)."""

    K: int = 8
    J: int = 32
    h: float = 1.0
    b: float = 10.0
    c: float = 10.0
    F: float = 20.0
    truth_dt: float = 0.001
    coarse_dt: float = 0.005
    spinup_time: float = 10.0
    train_time: float = 100.0
    test_time: float = 150.0
    n_forecasts: int = 50
    forecast_spacing: float = 2.0
    max_lead: float = 2.0
    lead_save_every: int = 4
    climate_time: float = 150.0
    polynomial_degree: int = 4
    nn_halfwidth: int = 2
    nn_width: int = 32
    nn_depth: int = 2
    offline_iters: int = 3000
    offline_batch: int = 128
    offline_lr: float = 3e-3
    online_curriculum: tuple = ((2, 300), (5, 300), (10, 400), (20, 300))
    online_batch: int = 32
    online_lr: float = 1e-3
    acf_max_lag: float = 2.0
    seed: int = 0

    def __post_init__(self):
        check_int_at_least("K", self.K, 4)
        check_int_at_least("J", self.J, 1)
        for name in ("truth_dt", "coarse_dt", "train_time", "test_time", "climate_time", "max_lead",
                     "forecast_spacing", "offline_lr", "online_lr", "acf_max_lag"):
            check_positive(name, getattr(self, name))
        check_positive("spinup_time", self.spinup_time, allow_zero=True)
        check_positive("b", self.b)
        for name in ("n_forecasts", "lead_save_every", "offline_iters", "offline_batch", "online_batch",
                     "nn_width", "nn_depth"):
            check_int_at_least(name, getattr(self, name), 1)
        r = self.coarse_dt / self.truth_dt
        if abs(r - round(r)) > 1e-9 or round(r) < 1:
            raise ConfigError(f"coarse_dt ({self.coarse_dt}) must be a whole multiple of truth_dt ({self.truth_dt})")
        need = (self.n_forecasts - 1) * self.forecast_spacing + self.max_lead
        if need > self.test_time + 1e-9:
            raise ConfigError(f"test_time ({self.test_time}) is too short for {self.n_forecasts} forecasts spaced "
                              f"{self.forecast_spacing} with lead {self.max_lead} (needs {need:g})")
        for name in ("h", "c", "F"):
            check_finite_number(name, getattr(self, name))
        check_int_at_least("nn_halfwidth", self.nn_halfwidth, 0)
        check_int_at_least("polynomial_degree", self.polynomial_degree, 0)
        check_int_at_least("seed", self.seed, 0)
        if self.steps(self.max_lead, self.coarse_dt) < self.lead_save_every:
            raise ConfigError(f"max_lead ({self.max_lead}) must be at least lead_save_every ({self.lead_save_every}) "
                              f"coarse steps of {self.coarse_dt}")
        if self.steps(self.acf_max_lag, self.coarse_dt) >= self.steps(self.test_time, self.coarse_dt):
            raise ConfigError(f"acf_max_lag ({self.acf_max_lag}) must be shorter than test_time ({self.test_time})")
        self._check_curriculum()
        self._check_sizes()

    def _check_curriculum(self) -> None:
        cur = self.online_curriculum
        if not isinstance(cur, (tuple, list)) or len(cur) == 0:
            raise ConfigError(f"online_curriculum must be a non-empty list of [rollout_saves, iterations] pairs, "
                              f"got {cur!r}")
        n_train = self.steps(self.train_time, self.coarse_dt) + 1  # saved training states
        for stage in cur:
            ok = isinstance(stage, (tuple, list)) and len(stage) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in stage)
            if not ok or stage[0] < 1 or stage[1] < 0:
                raise ConfigError(f"online_curriculum stages must be [rollout_saves >= 1, iterations >= 0] integer "
                                  f"pairs, got {stage!r}")
            if stage[0] + 1 > n_train:
                raise ConfigError(f"online_curriculum stage {list(stage)} needs {stage[0] + 1} training states but "
                                  f"train_time {self.train_time} gives {n_train}")

    def _check_sizes(self) -> None:
        """Refuse settings whose arrays cannot fit in memory before anything runs (one line, not an XLA trace)."""
        coarse_states = sum(self.steps(t, self.coarse_dt) for t in (self.train_time, self.test_time,
                                                                    self.climate_time))
        need = 8.0 * self.K * (self.J + 2) * coarse_states * 4  # truth X, U, free runs of four closures
        if need > MAX_BYTES:
            raise ConfigError(f"these run lengths (train_time {self.train_time}, test_time {self.test_time}, "
                              f"climate_time {self.climate_time}) with K={self.K}, J={self.J} would need about "
                              f"{need / 2**30:.0f} GiB of memory; reduce them")
        truth_steps = self.steps(self.spinup_time + self.train_time + max(self.test_time, self.climate_time),
                                 self.truth_dt)
        if truth_steps > MAX_STEPS:
            raise ConfigError(f"the truth runs would take {truth_steps:.3g} steps of truth_dt {self.truth_dt}; at "
                              f"most {MAX_STEPS:.0e} are allowed (shorten the run times or raise truth_dt)")

    @property
    def ratio(self) -> int:
        return int(round(self.coarse_dt / self.truth_dt))

    def steps(self, duration: float, dt: float) -> int:
        return int(round(duration / dt))


def truth_run(model: TwoScaleLorenz96, cfg: L96ClosureConfig, key: jax.Array, duration: float,
              progress: bool = False) -> tuple[Trajectory, np.ndarray]:
    """Spin up the two-scale truth and run it for ``duration``, saving every coarse step.

    Returns the coarse trajectory (X only, as :class:`Lorenz96State`) and the diagnosed subgrid tendency U at the
    saved times, shape (T, K).
    """
    s0 = model.initial_state(key, K=cfg.K, J=cfg.J)
    model.check_state(s0)
    spin = simulate(model, RK4(), s0, dt=cfg.truth_dt, n_steps=cfg.steps(cfg.spinup_time, cfg.truth_dt),
                    save_every=cfg.steps(cfg.spinup_time, cfg.truth_dt) or 1) if cfg.spinup_time else None
    s0 = spin.final if spin is not None else s0
    n = cfg.steps(duration, cfg.coarse_dt) * cfg.ratio
    with progress_reporter("truth run (two-scale)", enabled=bool(progress)) as report:
        traj = simulate(model, RK4(), s0, dt=cfg.truth_dt, n_steps=n, save_every=cfg.ratio, progress=report)
    u = np.asarray(jax.vmap(model.subgrid_tendency)(traj.states))
    coarse = Trajectory(t=traj.t, states=Lorenz96State(x=traj.states.x), blowup_step=traj.blowup_step)
    return coarse, u


def build_closure(name: str, coarse: Lorenz96, params: dict[str, Any]):
    """The coarse hybrid model for closure ``name`` given fitted parameters (``params[name]``)."""
    if name == "none":
        return coarse
    if name == "polynomial":
        return coarse + params["polynomial"]
    if name in ("nn_offline", "nn_online"):
        return coarse + NeuralTendency(params[name], "x")
    raise ConfigError(f"unknown closure {name!r}; choose from {CLOSURES}")


def evaluate(model, cfg: L96ClosureConfig, test_x: np.ndarray, clim_std: float) -> dict[str, Any]:
    """Forecast skill over ``cfg.n_forecasts`` initial conditions, and a long free run's climate."""
    spacing = cfg.steps(cfg.forecast_spacing, cfg.coarse_dt)
    n_lead = cfg.steps(cfg.max_lead, cfg.coarse_dt)
    n_lead -= n_lead % cfg.lead_save_every
    starts = np.arange(cfg.n_forecasts) * spacing
    x0 = jnp.asarray(test_x[starts])

    @jax.jit
    def forecasts(x0):
        return jax.vmap(lambda x: rollout(model, RK4(), Lorenz96State(x=x), dt=cfg.coarse_dt, n_steps=n_lead,
                                          save_every=cfg.lead_save_every).states.x)(x0)

    fc = np.asarray(forecasts(x0))
    idx = starts[:, None] + np.arange(0, n_lead + 1, cfg.lead_save_every)[None, :]
    truth = test_x[idx]
    leads = np.arange(0, n_lead + 1, cfg.lead_save_every) * cfg.coarse_dt
    # a forecast that blew up was frozen at its last finite state; count it as having lost all skill
    curve = np.asarray(forecast_rmse(jnp.asarray(fc), jnp.asarray(truth)))

    def at(lead):
        i = int(np.argmin(np.abs(leads - lead)))
        return float(curve[i]) if abs(leads[i] - lead) < 1e-9 else None

    out = {
        "lead_times": leads.tolist(),
        "rmse_curve": curve.tolist(),
        "forecast_rmse": {f"{v:.1f}": at(v) for v in (0.5, 1.0, 2.0) if v <= cfg.max_lead + 1e-9},
        # None when the RMSE stays below the threshold up to max_lead (JSON has no infinity)
        "skill_lost_lead_time": (None if not np.isfinite(lost := skill_lost_lead_time(leads, curve, clim_std))
                                 else lost),
    }
    n_clim = cfg.steps(cfg.climate_time, cfg.coarse_dt)
    try:
        free = simulate(model, RK4(), Lorenz96State(x=x0[0]), dt=cfg.coarse_dt, n_steps=n_clim, save_every=1)
        stable, blow = True, None
    except BlowUpError as e:
        free, stable, blow = e.trajectory, False, {"step": e.step, "time": e.time, "variable": e.variable}
    out.update({"stable": stable, "blowup": blow, "free_run": free})
    return out


def run(cfg: L96ClosureConfig = L96ClosureConfig(), out: str | Path = "runs/quickstart", *,
        progress: bool = True, log=print) -> dict[str, Any]:
    """Run the whole recipe, write everything to ``out`` and return the metrics dictionary.

    Files written: ``metrics.json``, ``truth.nc`` (test-period X), ``free_run_<closure>.nc``,
    ``forecast_rmse.nc``, PNG plots, and the fitted closures in ``models/``. The results are staged and replace
    ``out`` whole at the end (:func:`~nemic.experiments.config.staged_run`): a failed or interrupted run leaves an
    earlier ``out`` exactly as it was, and its training checkpoints let a rerun with the same settings resume.
    """
    if not isinstance(cfg, L96ClosureConfig):
        raise ConfigError(f"cfg must be an L96ClosureConfig, got {type(cfg).__name__}")
    with staged_run(out, "quickstart", dataclasses.asdict(cfg)) as stage:
        return _run(cfg, stage, progress=progress, log=log)


def _run(cfg: L96ClosureConfig, out: Path, *, progress: bool, log) -> dict[str, Any]:
    t_start = time.perf_counter()
    # training resumes from checkpoints only of the very same configuration (kept in the staging directory)
    ckpt_dir = out / CHECKPOINTS / _config_hash(cfg)
    key = jax.random.PRNGKey(cfg.seed)
    k_train, k_test, k_nn, k_off, k_on = jax.random.split(key, 5)
    truth_model = TwoScaleLorenz96(h=cfg.h, b=cfg.b, c=cfg.c, F=cfg.F)
    coarse = Lorenz96(F=cfg.F)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log("[1/5] truth runs of the two-scale model")
    train, u_train = truth_run(truth_model, cfg, k_train, cfg.train_time, progress)
    n_test = max(cfg.test_time, cfg.climate_time)
    test, _ = truth_run(truth_model, cfg, k_test, n_test, progress)
    x_train, x_test = np.asarray(train.states.x), np.asarray(test.states.x)
    clim_std = float(x_test.std())
    timings["truth"] = time.perf_counter() - t0

    params: dict[str, Any] = {}
    t0 = time.perf_counter()
    log("[2/5] polynomial closure (least squares)")
    params["polynomial"] = PolynomialClosure.fit(x_train, u_train, degree=cfg.polynomial_degree)
    timings["polynomial"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log("[3/5] neural closure, offline (regression on the diagnosed subgrid tendency)")
    net = LocalStencilMLP(cfg.nn_halfwidth, cfg.nn_width, cfg.nn_depth, key=k_nn, in_mean=float(x_train.mean()),
                          in_std=float(x_train.std()), out_scale=float(u_train.std()))
    params["nn_offline"], hist_off = fit_offline(net, x_train, u_train, n_iters=cfg.offline_iters,
                                                 batch_size=cfg.offline_batch, learning_rate=cfg.offline_lr,
                                                 key=k_off, progress=progress,
                                                 checkpoint_dir=str(ckpt_dir))
    timings["nn_offline"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log("[4/5] neural closure, online (through rollouts of the coarse model)")
    reference = Lorenz96State(x=jnp.asarray(x_train))  # saved every coarse step: save_every=1 model step
    params["nn_online"], hist_on = fit_online(
        NeuralTendency(params["nn_offline"], "x"), lambda c: coarse + c, RK4(), reference, dt=cfg.coarse_dt,
        save_every=1, curriculum=cfg.online_curriculum, batch_size=cfg.online_batch, learning_rate=cfg.online_lr, key=k_on,
        progress=progress, checkpoint_dir=str(ckpt_dir))
    params["nn_online"] = params["nn_online"].net
    timings["nn_online"] = time.perf_counter() - t0

    models_dir = out / "models"
    for name in ("nn_offline", "nn_online"):
        # one file per network (kind, hyperparameters and weights): nemic.train.checkpoint.load_module reads it;
        # the JSON beside it is a readable copy of its header (never read back)
        path = save_module(models_dir / name, params[name], extra={"recipe": "l96_closure"})
        header = read_header(path)
        write_json({"weights": path.name, "kind": header["kind"], "config": header["config"],
                    "extra": header["extra"], "load_with": "nemic.train.checkpoint.load_module"},
                   models_dir / f"{name}.json")
    write_json({"coeffs_lowest_degree_first": np.asarray(params["polynomial"].coeffs).tolist()},
               models_dir / "polynomial.json")

    t0 = time.perf_counter()
    log("[5/5] evaluation: forecasts and free runs")
    results = {name: evaluate(build_closure(name, coarse, params), cfg, x_test, clim_std) for name in CLOSURES}
    timings["evaluation"] = time.perf_counter() - t0

    n_acf = cfg.steps(cfg.acf_max_lag, cfg.coarse_dt)
    acf_truth = autocorrelation(x_test, n_acf)
    metrics: dict[str, Any] = {"config": dataclasses.asdict(cfg), "climatological_std": clim_std, "closures": {}}
    for name, r in results.items():
        xs = np.asarray(r["free_run"].states.x)
        acf = autocorrelation(xs, n_acf) if xs.shape[0] > n_acf + 1 else np.full(n_acf + 1, np.nan)
        metrics["closures"][name] = {
            "forecast_rmse": r["forecast_rmse"],
            "skill_lost_lead_time": r["skill_lost_lead_time"],
            "hellinger_x": hellinger_distance(xs, x_test, bins=50),
            "acf_rmse": float(np.sqrt(np.mean((acf - acf_truth) ** 2))),
            "mean_x": float(xs.mean()),
            "std_x": float(xs.std()),
            "stable": r["stable"],
            "blowup": r["blowup"],
            "free_run_time": float(xs.shape[0] - 1) * cfg.coarse_dt,
        }
    metrics["training"] = {"offline_final_loss": float(np.mean(hist_off[-50:])),
                           "online_final_loss": float(np.mean(hist_on[-50:])) if hist_on else None}
    metrics["timings_seconds"] = timings

    _write_outputs(out, cfg, test, results, acf_truth, n_acf, hist_off, hist_on)
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(metrics, out / "metrics.json")
    return metrics


def _config_hash(cfg: L96ClosureConfig) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]


def _write_outputs(out: Path, cfg, test, results, acf_truth, n_acf, hist_off, hist_on) -> None:
    attrs = {k: v for k, v in dataclasses.asdict(cfg).items() if not isinstance(v, tuple)}
    write_netcdf(to_xarray(test, attrs={"title": "two-scale Lorenz-96 truth (X), test period", **attrs}),
                 out / "truth.nc")
    curves = {}
    for name, r in results.items():
        write_netcdf(to_xarray(r["free_run"], attrs={"title": f"coarse Lorenz-96 free run, closure {name}",
                                                     **attrs}), out / f"free_run_{name}.nc")
        curves[name] = ("lead_time", np.asarray(r["rmse_curve"]),
                        {"units": "1", "long_name": f"forecast RMSE of X, closure {name}"})
    lead = np.asarray(next(iter(results.values()))["lead_times"])
    ds = xr.Dataset(curves, coords={"lead_time": ("lead_time", lead, {"units": "1", "long_name": "lead time"})})
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic", "n_forecasts": cfg.n_forecasts})
    write_netcdf(ds, out / "forecast_rmse.nc")
    plot_all(out, cfg, test, results, acf_truth, n_acf, hist_off, hist_on)



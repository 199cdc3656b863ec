"""Recipe: a correction of the 64-point two-layer QG model learned from its nudging tendencies.

Following Watt-Meyer et al. (2021, GRL 48, e2021GL092555, doi:10.1029/2021GL092555) and Bretherton et al.
(2022, JAMES 14, e2021MS002794, doi:10.1029/2021MS002794), on the eddy configuration of the ocean subgrid
benchmark (Ross et al. 2023, JAMES 15, e2022MS003258, doi:10.1029/2022MS003258):

1. reference: the high-resolution model (``nx_hi``, e.g. 256 points) restarted from the last state of a
   ``nemic qg generate`` directory and run ``days`` days (dt = 3600 s), coarse-grained with the benchmark's
   operator ``op1`` (:class:`~nemic.data.coarsen.Coarsener`) to the low-resolution grid (``nx_lo``, e.g. 64) every
   ``save_hours`` hours;
2. nudged run: the low-resolution model + :class:`~nemic.processes.nudging.Nudging` of ``q`` toward the reference
   (tau of order a day, optionally spectral); its nudging tendencies (CF netCDF ``nudged_run.nc``) estimate the
   low-resolution model's error;
3. correction: a small zero-mean :class:`~nemic.nn.conv.CircularCNN` inside a
   :class:`~nemic.processes.qg_closures.CNNClosure` fitted offline (Adam, normalised MSE) to map the nudged PV to
   its nudging tendency; skill measured on the last ``holdout`` fraction of the nudged run;
4. validation: the correction times one output scale ``alpha`` (:class:`ScaledCorrection`) run free from a few
   snapshots of the coarse-grained high-resolution climate (``op1.nc`` of the long ``generate`` run) for each
   ``alpha`` in ``scales``; :func:`choose_scale` keeps the one with the smallest biases;
5. test: from *other* climate snapshots, free runs of the uncorrected model, the correction with ``alpha = 1`` and
   with the chosen ``alpha``, and subgrid closures to compare (backscatter, saved CNNs); mean and spread over the
   starts (:func:`spread_summary`) of the relative biases of time-mean total (layer-weighted) and per-layer kinetic
   energy and enstrophy against the climate, the benchmark's similarity score per start
   (:func:`nemic.experiments.qg_subgrid.similarity`, Ross et al. 2023, eq. 9), and the flag rates of a
   Mahalanobis novelty guard (:mod:`nemic.processes.guards`) on :func:`pv_features`.

Outputs: ``metrics.json``, ``nudged_run.nc``, ``correction/``, ``free_runs.nc`` (energy series of the test runs),
``bias_spread.png``, ``ke_spectra.png``, ``energy_series.png``, ``nudging_tendency.png``. Every setting, the data
(finite) and the closures to compare are checked before any run; the files replace ``out`` whole at the end
(:func:`~nemic.experiments.config.staged_run`), so a failed rerun leaves an earlier ``out`` as it was.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError, check_finite, check_int_at_least, check_positive
from nemic.core.rollout import Trajectory, simulate
from nemic.data.coarsen import Coarsener
from nemic.data.qg_benchmark import load_generated
from nemic.experiments.config import check_replaceable, load_config, staged_run
from nemic.experiments.nudging_qg_plots import plot_results
from nemic.experiments.nudging_qg_scores import (  # noqa: F401  (the scores stay importable from here)
    _climate_stats,
    choose_scale,
    climate_stats,
    relative_biases,
    spread_summary,
)
from nemic.experiments.qg_evaluation import check_distinct_paths, check_qg_size, run_closure, similarity, summarize
from nemic.experiments.qg_subgrid import load_trained_closure, make_cnn_closure, save_trained_closure, train_offline
from nemic.io.nudging import nudging_dataset
from nemic.io.output import write_json, write_netcdf
from nemic.io.terminal import progress as progress_reporter
from nemic.models.qg import QGFields, QGState
from nemic.processes.guards import GuardedTendency, MahalanobisDetector
from nemic.processes.nudging import NudgedRun, Nudging, nudged_run
from nemic.processes.qg_closures import BackscatterBiharmonic
from nemic.processes.qg_nudging import Float32Net, ScaledCorrection, pv_features, spectral_nudging_weights

DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class NudgingQGConfig:
    """Settings of the QG nudging recipe (times in days/hours/years of 360 days, dt in seconds).

    ``days``: length of the high-resolution reference and nudged runs; ``save_hours``: spacing of the reference
    (and of the recorded nudging tendencies); ``tau_days``: nudging time scale; ``spectral_cutoff``: if set, only
    wavenumbers ``|k| <= cutoff`` are nudged; ``discard_days``: start of the nudged run left out of training (the
    nudged state starts on the reference, so its tendency is zero at first); ``holdout``: fraction of the nudged run
    (at its end) used to measure offline skill; ``widths``/``kernel_sizes``: the CNN; ``train_steps``, ``batch``,
    ``lr``: Adam; ``free_years``, ``free_save_days``, ``free_spinup_days``: free runs and their sampling;
    ``net_float32``: evaluate the network in float32 inside float64 runs (float64 convolutions are several times
    slower on CPU). Evaluation: ``val_starts`` / ``test_starts`` are indices of op1 climate snapshots the free runs
    start from (validation chooses the output scale among ``scales``; test reports mean and spread; they must
    differ); ``compare``: other closures run on the test starts (``"backscatter"`` or saved closure
    directories); ``guard_quantile``: training quantile that sets the novelty threshold.
    """

    days: float = 360.0
    dt: float = 3600.0
    save_hours: float = 6.0
    tau_days: float = 3.0
    spectral_cutoff: int | None = None
    discard_days: float = 5.0
    holdout: float = 0.2
    widths: tuple = (16, 16)
    kernel_sizes: tuple | None = (5, 3, 3)
    train_steps: int = 2000
    batch: int = 16
    lr: float = 1e-3
    free_years: float = 2.5
    free_save_days: float = 5.0
    free_spinup_days: float = 180.0
    net_float32: bool = True
    seed: int = 0
    val_starts: tuple = (9, 45)
    test_starts: tuple = (0, 18, 36, 54, 72, 90)
    scales: tuple = (0.25, 0.5, 0.75, 1.0)
    compare: tuple = ("backscatter",)
    guard_quantile: float = 0.99

    def __post_init__(self):
        for n in ("days", "dt", "save_hours", "tau_days", "lr", "free_years", "free_save_days"):
            check_positive(n, getattr(self, n))
        for n in ("discard_days", "free_spinup_days"):
            check_positive(n, getattr(self, n), allow_zero=True)
        check_int_at_least("train_steps", self.train_steps, 1)
        check_int_at_least("batch", self.batch, 1)
        check_int_at_least("seed", self.seed, 0)
        if not self.widths or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                      for w in self.widths):
            raise ConfigError(f"widths must be a non-empty list of positive integers, got {self.widths!r}")
        if self.kernel_sizes is not None:
            ks = self.kernel_sizes
            if len(ks) != len(self.widths) + 1 or not all(isinstance(k, int) and not isinstance(k, bool)
                                                          and k >= 1 and k % 2 for k in ks):
                raise ConfigError(f"kernel_sizes must be {len(self.widths) + 1} odd positive integers (one per "
                                  f"convolution, len(widths) + 1), got {ks!r}")
        if not all(isinstance(c, str) and c for c in self.compare):
            raise ConfigError(f"compare must be a list of names ('backscatter' or closure directories), "
                              f"got {self.compare!r}")
        if len(set(self.compare)) != len(self.compare):
            raise ConfigError(f"compare lists a closure twice: {self.compare!r}")
        if self.spectral_cutoff is not None:
            check_int_at_least("spectral_cutoff", self.spectral_cutoff, 0)
        if not self.test_starts:
            raise ConfigError("test_starts must name at least one snapshot of the op1 climate")
        for n in ("val_starts", "test_starts"):
            for i in getattr(self, n):
                check_int_at_least(n, i, 0)
        if set(self.val_starts) & set(self.test_starts):
            raise ConfigError(f"val_starts {tuple(self.val_starts)} and test_starts {tuple(self.test_starts)} must "
                              "be different snapshots (the scale is chosen on validation starts only)")
        if not self.scales or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a)
                                  or not a > 0 for a in self.scales):
            raise ConfigError(f"scales must be a non-empty list of positive numbers, got {self.scales!r}")
        if not 0 < self.guard_quantile < 1:
            raise ConfigError(f"guard_quantile must lie in (0, 1), got {self.guard_quantile}")
        if not 0 < self.holdout < 1:
            raise ConfigError(f"holdout must lie in (0, 1), got {self.holdout}")
        if self.tau_days * DAY < 2 * self.dt:
            raise ConfigError(f"tau_days ({self.tau_days}) must be at least two timesteps ({2 * self.dt / DAY:g} "
                              "days) for the explicit nudging term")
        if self.save_hours * 3600.0 < self.dt or abs(self.save_hours * 3600.0 / self.dt
                                                    - round(self.save_hours * 3600.0 / self.dt)) > 1e-9:
            raise ConfigError(f"save_hours ({self.save_hours}) must be a whole number of timesteps of {self.dt} s")
        if self.discard_days >= self.days * (1 - self.holdout):
            raise ConfigError(f"discard_days ({self.discard_days}) leaves no training data in {self.days} days")
        if self.free_spinup_days >= self.free_years * 360:
            raise ConfigError(f"free_spinup_days ({self.free_spinup_days}) must be shorter than the free run "
                              f"({self.free_years * 360:g} days)")

    @classmethod
    def tiny(cls) -> "NudgingQGConfig":
        """A few-second configuration (for tests; its numbers mean nothing)."""
        return cls(days=4.0, save_hours=3.0, tau_days=0.5, discard_days=0.5, widths=(4,), kernel_sizes=(3, 3),
                   train_steps=3, batch=4, free_years=6 / 360, free_save_days=1.0, free_spinup_days=1.0,
                   val_starts=(1,), test_starts=(0, 2), scales=(0.5, 1.0))


# ====================================================================== data
def reference_run(hi, lo, q0, *, dt: float, n_steps: int, save_every: int, progress: bool | str = False) -> Trajectory:
    """Run ``hi`` from ``q0`` and coarse-grain every saved state with op1 to ``lo``'s grid (times start at 0);
    the coarse states are :class:`QGState` (spectral) of ``lo``."""
    state0 = hi.initial_state(q=q0)
    hi.check_timestep(state0, dt)
    with progress_reporter(progress if isinstance(progress, str) else "reference", enabled=bool(progress)) as rep:
        traj = simulate(hi, None, state0, dt=dt, n_steps=n_steps, save_every=save_every, observe=hi.observe,
                        progress=rep)
    if int(traj.blowup_step) >= 0:
        raise DataError(f"the high-resolution reference run blew up after {int(traj.blowup_step)} steps")
    coarsen = eqx.filter_jit(lambda c, x: jax.vmap(c.coarsen)(x))
    op = Coarsener(hi, lo, "op1")
    qbar = jnp.concatenate([coarsen(op, c) for c in jnp.array_split(traj.states.q, max(1, len(traj) // 64))])
    return Trajectory(t=traj.t, states=QGState.from_q(qbar), blowup_step=traj.blowup_step)


def _load_compare(name: str, lo, float32: bool):
    if name == "backscatter":
        return "backscatter", BackscatterBiharmonic(lo.grid)
    p = Path(name)
    closure, info = load_trained_closure(p)
    check_finite(f"the closure in '{p}'", closure)
    if float32:
        closure = eqx.tree_at(lambda c: c.net, closure, Float32Net(closure.net))
    return f"cnn_{info.get('mode', 'closure')}_{p.name}", closure


# ====================================================================== the recipe
def build_correction(data: dict, cfg: NudgingQGConfig, out: Path, *, progress: bool = False, log=print):
    """Steps 1-3: reference, nudged run (written to ``out/nudged_run.nc``) and the fitted correction (saved to
    ``out/correction``). Returns ``(closure, info)`` with the nudged run's arrays and skill in ``info``."""
    timings: dict[str, float] = {}
    hi, lo, dt = data["hi"], data["lo"], cfg.dt
    every = int(round(cfg.save_hours * 3600.0 / dt))
    n_steps = int(round(cfg.days * DAY / dt))
    n_steps -= n_steps % every
    if n_steps < 2 * every:
        raise ConfigError(f"days ({cfg.days}) must span at least two reference snapshots of {cfg.save_hours} h")

    log(f"[1/5] reference: {hi.nx}-point {data['config']} model from the restart, {cfg.days:g} days, "
        f"coarse-grained (op1) to {lo.nx} points")
    t0 = time.perf_counter()
    ref = reference_run(hi, lo, data["q_restart"], dt=dt, n_steps=n_steps, save_every=every,
                        progress=progress and "reference")
    timings["reference_s"] = time.perf_counter() - t0

    log(f"[2/5] {lo.nx}-point model nudged toward it (tau = {cfg.tau_days:g} days"
        + (f", spectral cutoff {cfg.spectral_cutoff})" if cfg.spectral_cutoff is not None else ")"))
    t0 = time.perf_counter()
    # nudging of the spectral PV; spectral nudging is a box mask on the rfft2 grid (no transforms)
    w = spectral_nudging_weights(lo.grid, cfg.spectral_cutoff)
    nud = Nudging(ref, {"qh": cfg.tau_days * DAY}, **({} if w is None else {"weights": {"qh": w}}))
    with progress_reporter("nudged", enabled=bool(progress)) as rep:
        nrun = nudged_run(lo, nud, None, QGState(qh=ref.states.qh[0]), dt=dt, n_steps=n_steps, save_every=every,
                          progress=rep)
    if int(nrun.trajectory.blowup_step) >= 0:
        raise DataError(f"the nudged run blew up after {int(nrun.trajectory.blowup_step)} steps")
    nrun = NudgedRun(*(Trajectory(t=tr.t, states=QGFields(q=tr.states.q), blowup_step=tr.blowup_step)
                       for tr in (nrun.trajectory, nrun.nudging_tendency)))
    ds_n = nudging_dataset(nrun, attrs={"title": f"{lo.nx}-point two-layer QG nudged toward the op1-coarse-grained "
                                                 f"{hi.nx}-point model", "config": data["config"],
                                        "tau_seconds": cfg.tau_days * DAY, "dt": dt,
                                        "spectral_cutoff": -1 if cfg.spectral_cutoff is None else cfg.spectral_cutoff,
                                        "restart_time_seconds": data["t_restart"]})
    write_netcdf(ds_n, out / "nudged_run.nc")
    timings["nudged_s"] = time.perf_counter() - t0
    q_n, N = np.asarray(nrun.trajectory.states.q), np.asarray(nrun.nudging_tendency.states.q)
    q_ref = np.asarray(ref.states.q)
    tracking = float(np.sqrt(np.mean((q_n - q_ref) ** 2) / np.mean(q_ref**2)))

    log(f"[3/5] CNN fitted offline ({cfg.train_steps} Adam steps): nudged PV -> nudging tendency")
    t0 = time.perf_counter()
    n = q_n.shape[0]
    i0 = int(np.ceil(cfg.discard_days * DAY / (every * dt)))
    i1 = i0 + int(round((n - i0) * (1 - cfg.holdout)))
    if i1 - i0 < 1 or n - i1 < 1:
        raise ConfigError(f"the nudged run has {n} snapshots; too few for discard_days and holdout")
    train = xr.Dataset({"q": (("time", "lev", "y", "x"), q_n[i0:i1]),
                        "q_nudging_tendency": (("time", "lev", "y", "x"), N[i0:i1])})
    in_scale, out_scale = q_n[i0:i1].std(axis=(0, 2, 3)), N[i0:i1].std(axis=(0, 2, 3))
    key_net, key_train = jax.random.split(jax.random.key(cfg.seed))
    closure = make_cnn_closure(in_scale, out_scale, widths=cfg.widths, kernel_sizes=cfg.kernel_sizes, key=key_net)
    if cfg.net_float32:
        closure = eqx.tree_at(lambda c: c.net, closure, Float32Net(closure.net))
    closure, losses = train_offline(closure, train, steps=cfg.train_steps, batch=cfg.batch, lr=cfg.lr, key=key_train,
                                    target="q_nudging_tendency")
    predict = eqx.filter_jit(lambda c, x: jax.vmap(c.forcing)(x))
    pred = np.asarray(predict(closure, jnp.asarray(q_n[i1:])))
    resid = ((pred - N[i1:]) ** 2).mean(axis=(0, 2, 3))
    r2 = 1 - resid / N[i1:].var(axis=(0, 2, 3))
    timings["training_s"] = time.perf_counter() - t0
    # saved without the float32 evaluation wrapper (a CircularCNN inside, as every saved QG closure)
    plain = eqx.tree_at(lambda c: c.net, closure, closure.net.net) if cfg.net_float32 else closure
    save_trained_closure(plain, out / "correction",
                         {"mode": "nudging", "tau_days": cfg.tau_days, "steps": cfg.train_steps, "lr": cfg.lr,
                          "losses": losses, "config": data["config"]})
    info = {"q_n": q_n, "N": N, "i0": i0, "i1": i1, "every": every, "timings": timings,
            "nudged_run": {"snapshots": n, "train_snapshots": i1 - i0, "holdout_snapshots": n - i1,
                           "relative_rms_distance_to_reference": tracking,
                           "nudging_tendency_std": [float(s) for s in out_scale],
                           "holdout_r2": [float(v) for v in r2], "final_train_loss": losses[-1][1]}}
    return closure, info


def run(data_dir: str | Path, cfg: NudgingQGConfig = NudgingQGConfig(), out: str | Path = "runs/nudging_qg", *,
        progress: bool = False, log=print) -> dict[str, Any]:
    """Run the recipe on the ``nemic qg generate`` directory ``data_dir``; write results into ``out``.

    Steps 1-3: :func:`build_correction`. Step 4 (validation): the low-resolution model + ``alpha`` times the
    correction (:class:`ScaledCorrection`) run free from the op1 climate snapshots ``val_starts`` for each
    ``alpha`` in ``scales``; :func:`choose_scale` picks one. Step 5 (test): from the different snapshots
    ``test_starts``, free runs of the uncorrected model, the correction with ``alpha = 1`` and with the chosen
    ``alpha``, and the closures named in ``compare`` (``"backscatter"`` or a directory saved by ``nemic qg
    train``); mean and spread over starts of the relative biases (:func:`spread_summary`), similarity scores per
    start, and the novelty guard's flag rates (:class:`~nemic.processes.guards.MahalanobisDetector` on
    :func:`pv_features`, fitted on the training states of the nudged run). Returns the metrics (also written to
    ``metrics.json``).
    """
    t_start = time.perf_counter()
    if not isinstance(cfg, NudgingQGConfig):
        raise ConfigError(f"cfg must be a NudgingQGConfig, got {type(cfg).__name__}")
    check_replaceable(out)
    check_distinct_paths(out, data_dir)
    data = load_generated(data_dir)  # every array it returns is checked finite
    lo, dt, climate = data["lo"], cfg.dt, data["climate"]
    compare = [_load_compare(c, lo, cfg.net_float32) for c in cfg.compare]
    n_clim = climate.shape[0]
    bad = [i for i in (*cfg.val_starts, *cfg.test_starts) if i >= n_clim]
    if bad:
        raise ConfigError(f"start snapshots {bad} do not exist: the op1 climate has {n_clim} snapshots")
    f_every = max(1, int(round(cfg.free_save_days * DAY / dt)))
    f_steps = int(round(cfg.free_years * 360 * DAY / dt))
    f_steps -= f_steps % f_every
    if f_steps < f_every:
        raise ConfigError(f"free_years ({cfg.free_years:g}) is shorter than one saved interval of "
                          f"free_save_days ({cfg.free_save_days:g})")
    spin = int(round(cfg.free_spinup_days * DAY / dt))
    every = int(round(cfg.save_hours * 3600.0 / dt))
    n_ref = int(round(cfg.days * DAY / dt))
    check_qg_size(data["hi"].nx, n_ref, n_ref // every + 1, "the reference run (days)")
    check_qg_size(lo.nx, f_steps, f_steps // f_every + 1, "a free run (free_years)")
    if n_ref - n_ref % every < 2 * every:
        raise ConfigError(f"days ({cfg.days}) must span at least two reference snapshots of {cfg.save_hours} h")
    with staged_run(out, "nudging qg", {**dataclasses.asdict(cfg), "data": str(data_dir)}) as stage:
        metrics = _run(data, data_dir, cfg, stage, compare, f_every, f_steps, spin, t_start, progress, log)
    return metrics


def _run(data, data_dir, cfg, out, compare, f_every, f_steps, spin, t_start, progress, log):
    """Steps 1-5 of :func:`run`, writing into the staging directory ``out``."""
    lo, dt, climate = data["lo"], cfg.dt, data["climate"]
    n_clim = climate.shape[0]
    closure, info = build_correction(data, cfg, out, progress=progress, log=log)
    timings = info["timings"]

    n_keep = len(range(0, f_steps + 1, f_every)) - len(range(0, spin, f_every))
    ref_stats = climate_stats(lo, climate)
    ref = {k: float(v.mean()) for k, v in ref_stats.items()}

    def free(proc, i):
        q = run_closure(lo, proc, climate[i], dt=dt, n_steps=f_steps, save_every=f_every, spinup_steps=spin)
        stable = q.shape[0] == n_keep and bool(np.all(np.isfinite(q)))
        return q, stable

    def biases(q, stable):
        if not stable or q.shape[0] == 0:
            return {k: float("inf") for k in ("KE", "KE1", "KE2", "enstrophy")}
        return relative_biases(lo, q, ref)

    log(f"[4/5] validation: free runs from op1 snapshots {list(cfg.val_starts)} for scales {list(cfg.scales)} "
        f"({cfg.free_years:g} years, first {cfg.free_spinup_days:g} days discarded)")
    t0 = time.perf_counter()
    val: dict[float, list] = {}
    for a in cfg.scales:
        val[float(a)] = [biases(*free(ScaledCorrection(closure, a), i)) for i in cfg.val_starts]
        log(f"      scale {float(a):g}: KE biases " + ", ".join(f"{100 * b['KE']:+.1f} %" for b in val[float(a)]))
    alpha = choose_scale(val) if cfg.val_starts else 1.0
    timings["validation_s"] = time.perf_counter() - t0

    log(f"[5/5] test: free runs from op1 snapshots {list(cfg.test_starts)} (chosen scale {alpha:g})")
    t0 = time.perf_counter()
    models = {"low_res": None, "nudging_corrected": ScaledCorrection(closure, 1.0)}
    if alpha != 1.0:
        models["nudging_corrected_scaled"] = ScaledCorrection(closure, alpha)
    models.update(dict(compare))
    runs: dict[str, list] = {}
    stable: dict[str, list] = {}
    for name, proc in models.items():
        t1 = time.perf_counter()
        res = [free(proc, i) for i in cfg.test_starts]
        runs[name], stable[name] = [r[0] for r in res], [r[1] for r in res]
        timings[f"test_{name}_s"] = time.perf_counter() - t1
        log(f"      {name}: KE biases " + ", ".join(f"{100 * biases(q, s)['KE']:+.1f} %" for q, s in res))
    timings["test_s"] = time.perf_counter() - t0

    # ---- metrics
    high = summarize(lo, climate)
    summ = {name: [summarize(lo, q) if q.shape[0] else None for q in rs] for name, rs in runs.items()}
    per_start = {name: [biases(q, s) for q, s in zip(runs[name], stable[name])] for name in runs}
    q_n, i0, i1 = info["q_n"], info["i0"], info["i1"]
    feats = pv_features(lo)
    fmap = jax.jit(jax.vmap(lambda x: feats(x)[0]))
    detector = MahalanobisDetector.fit(np.asarray(fmap(jnp.asarray(q_n[i0:i1]))), quantile=cfg.guard_quantile)
    guard = GuardedTendency(ScaledCorrection(closure, alpha), detector, features=feats, field="q")
    # a second detector fitted on the first 2/3 of the high-resolution (op1) climate: it measures how far the free
    # runs leave the target climate, where the first one measures how far they leave the (one-year, strongly
    # autocorrelated) training sample of the nudged run
    f_clim = np.asarray(fmap(jnp.asarray(climate)))
    n_fit = (2 * f_clim.shape[0]) // 3
    det_clim = (MahalanobisDetector.fit(f_clim[:n_fit], quantile=cfg.guard_quantile)
                if n_fit >= f_clim.shape[1] + 1 and f_clim.shape[0] - n_fit > 0 else None)
    # the guard's distance of every saved state (one compiled function for all runs; the same numbers as
    # guard_report, which compiles afresh per call)
    guard_dist = eqx.filter_jit(lambda g, q: jax.vmap(lambda x: g.distance(QGState.from_q(x)))(q))
    metrics: dict[str, Any] = {
        "config": {**dataclasses.asdict(cfg), "data_dir": str(data_dir), "qg_config": data["config"],
                   "nx_hi": data["hi"].nx, "nx_lo": lo.nx},
        "nudged_run": info["nudged_run"],
        "reference_climate": {**ref, "snapshots": int(n_clim)},
        "validation": {"scales": [float(a) for a in cfg.scales], "starts": list(cfg.val_starts),
                       "relative_biases": {f"{a:g}": v for a, v in val.items()}, "chosen_scale": alpha},
        "test_starts": list(cfg.test_starts),
        "models": {},
        "guard_climate": None if det_clim is None else {
            "fitted_on": f"op1 climate snapshots 0-{n_fit - 1}", "threshold": float(det_clim.threshold),
            "false_alarm_rate_climate_rest": det_clim.false_alarm_rate(f_clim[n_fit:]),
            "false_alarm_rate_nudged_run": det_clim.false_alarm_rate(fmap(jnp.asarray(q_n[i0:]))), "free_runs": {}},
        "guard": {"features": "per layer: log std(q), kurtosis(q), log KE", "quantile": cfg.guard_quantile,
                  "threshold": float(detector.threshold),
                  "false_alarm_rate_nudged_holdout": detector.false_alarm_rate(fmap(jnp.asarray(q_n[i1:]))),
                  "false_alarm_rate_hr_climate": detector.false_alarm_rate(fmap(jnp.asarray(climate))),
                  "free_runs": {}},
    }
    for name in runs:
        m: dict[str, Any] = {"stable": stable[name], "all_stable": all(stable[name]),
                             "biases": spread_summary(per_start[name], None if name == "low_res"
                                                      else per_start["low_res"])}
        if name != "low_res":
            sims = [similarity(s, sl, high)["mean"] if s is not None and sl is not None and ok else float("nan")
                    for s, sl, ok in zip(summ[name], summ["low_res"], stable[name])]
            m["similarity"] = {"per_start": sims, "mean": float(np.mean(sims)),
                               "std": float(np.std(sims, ddof=1)) if len(sims) > 1 else float("nan")}
        metrics["models"][name] = m
        d = [np.asarray(guard_dist(guard, jnp.asarray(q))) for q in runs[name] if q.shape[0]]
        metrics["guard"]["free_runs"][name] = {
            "flagged_fraction": float(np.mean([np.mean(x > float(detector.threshold)) for x in d])) if d else None,
            "per_start": [float(np.mean(x > float(detector.threshold))) for x in d],
            "max_distance": float(max(x.max() for x in d)) if d else None}
        if det_clim is not None:
            fr = [det_clim.false_alarm_rate(fmap(jnp.asarray(q))) for q in runs[name] if q.shape[0]]
            metrics["guard_climate"]["free_runs"][name] = {"flagged_fraction": float(np.mean(fr)) if fr else None,
                                                           "per_start": fr}
    metrics["timings_s"] = timings
    _write_series(out, lo, runs, cfg.test_starts, f_every * dt, spin * dt)
    ke_series = {name: [climate_stats(lo, q)["KE"] for q in rs if q.shape[0]] for name, rs in runs.items()}
    plot_results(out, high, summ, ref_stats, runs, ke_series, metrics, f_every * dt, info["N"], q_n, info["every"] * dt)
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(metrics, out / "metrics.json")
    return metrics


def _write_series(out: Path, lo, runs: dict, starts, save_dt: float, start: float) -> None:
    """Per-snapshot KE, KE1, KE2 and enstrophy of every test free run (CF netCDF ``free_runs.nc``)."""
    ds = xr.Dataset(coords={"start": ("start", np.asarray(starts), {"long_name": "index of the op1 climate "
                                                                                "snapshot the run started from"})})
    units = {"KE": "m2 s-2", "KE1": "m2 s-2", "KE2": "m2 s-2", "enstrophy": "s-2"}
    for name, qs in runs.items():
        n = max(q.shape[0] for q in qs)
        t = start + save_dt * np.arange(n)
        for k in units:
            a = np.full((len(qs), n), np.nan)
            for j, q in enumerate(qs):
                if q.shape[0]:
                    a[j, : q.shape[0]] = climate_stats(lo, q)[k]
            ds[f"{k}_{name}"] = xr.DataArray(a, dims=("start", f"time_{name}"),
                                             coords={f"time_{name}": (f"time_{name}", t,
                                                                      {"units": "s", "standard_name": "time"})},
                                             attrs={"units": units[k], "long_name": f"{k}, {name} free run"})
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic",
                     "title": "domain-mean energy and enstrophy of the low-resolution QG free runs"})
    write_netcdf(ds, out / "free_runs.nc")


def config_from_file(path: str | Path | None, overrides: dict | None = None) -> NudgingQGConfig:
    """Read a TOML/JSON file of :class:`NudgingQGConfig` settings (see :func:`nemic.experiments.config.load_config`)."""
    return load_config(NudgingQGConfig, path, overrides)


__all__ = ["Float32Net", "NudgingQGConfig", "ScaledCorrection", "build_correction", "choose_scale", "climate_stats",
           "config_from_file", "load_generated", "pv_features", "reference_run", "relative_biases", "run",
           "spread_summary"]

"""Recipe: a stochastic CNN closure of the two-layer QG eddy configuration, trained by the CRPS through rollouts.

Data: two directories written by ``nemic qg generate`` for the same configuration and grids (256 -> 64 points in
the benchmark of Ross et al. 2023, JAMES 15, e2022MS003258, doi:10.1029/2022MS003258):

* ``data`` (long, snapshots days apart): offline training of the deterministic CNN closure (as ``nemic qg
  train``) and the high-resolution climate that free runs are scored against (the benchmark's similarity);
* ``forecast_data`` (short, snapshots hours apart): its first ``train_fraction`` is the reference for the CRPS
  fine-tuning, the rest gives the initial conditions and verifying states of the ensemble forecasts.

Steps:

1. deterministic pre-training: the offline CNN closure (:func:`~nemic.experiments.qg_subgrid.train_offline`, or
   a saved one with ``init``);
2. the stochastic closure (:class:`~nemic.processes.qg_stochastic.StochasticCNNClosure`): by default
   (``closure_mode="multiplicative"``) the same network's forcing perturbed SPPT-style by a Gaussian random field,
   ``f (1 + clip(e, -1, 1))`` less its domain mean, so that the mean forcing over the noise is the deterministic
   one; or (``"input"``) the random field as extra input channels of the network. The field's amplitude,
   correlation length and time (and the network, if ``crps_train_net``) are fitted by the fair CRPS of
   ``crps_members``-member ensembles through rollouts of the 64-point model against the coarse-grained
   high-resolution states (:func:`~nemic.train.ensemble_losses.fit_ensemble`, gradients through the solver with
   checkpointing), over a curriculum of window lengths (by default 1, 2 and 5 days);
3. ensemble forecasts: ``n_members`` members from each of ``n_forecasts`` coarse-grained high-resolution states
   (exact initial states, the spread comes from the closure), up to ``max_lead_days``: fair CRPS, ensemble-mean
   RMSE, spread and spread/error against lead time (PV normalised per layer by its standard deviation), beside the
   deterministic CNN (one member: its CRPS is its mean absolute error);
4. free runs from ``free_runs`` long-data snapshots with the uncorrected model, the deterministic CNN and the
   stochastic CNN (one member per start), scored by the benchmark's similarity ``1 - D(param, HR) / D(LR, HR)``
   (:mod:`nemic.metrics.qg_similarity`) against the high-resolution run.

Files: ``metrics.json``, ``scores.nc`` (closure x lead_time), ``forecast_stochastic_cnn.nc`` (the first forecast,
dims member x time x lev x y x x), ``closures/{deterministic_cnn,stochastic_cnn}/closure.eqx`` (nemic's weights
format), ``spread_error.png``, ``crps_vs_lead.png``, ``spectra.png``, ``training.png``, ``members.png``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nemic.core.errors import BlowUpError, ConfigError, DataError, check_int_at_least, check_positive
from nemic.core.rollout import simulate
from nemic.data.qg_benchmark import load_dataset, load_hires
from nemic.experiments.config import check_replaceable, staged_run
from nemic.experiments.qg_ensemble import (choose_amplitude, ensemble_forecasts, fit_starts, forecast_scores,
                                          forecast_starts)
from nemic.experiments.qg_evaluation import check_distinct_paths, run_closure, start_indices, summarize
from nemic.experiments.qg_subgrid import (load_trained_closure, make_cnn_closure, save_trained_closure, scales,
                                          train_offline)
from nemic.io.files import ensure_writable_dir, write_json
from nemic.metrics.qg_similarity import distances, resolved_kmax, similarity
from nemic.metrics.verification_ensemble import crps_ensemble
from nemic.models.qg import QGState
from nemic.processes.qg_stochastic import MODES, STOCHASTIC_CNN_CLOSURE_KIND, StochasticCNNClosure
from nemic.train.checkpoint import load_module, save_module
from nemic.train.ensemble_losses import fit_ensemble

DAY = 86400.0
REPORT_DAYS = (1, 2, 3, 4, 5)


@dataclasses.dataclass(frozen=True)
class QGStochasticConfig:
    """Settings of the stochastic QG recipe (times in days unless named otherwise)."""

    operator: str = "op1"
    widths: tuple = (32, 32, 32, 32)
    kernel_sizes: tuple = (5, 5, 3, 3, 3)
    offline_steps: int = 400
    offline_batch: int = 8
    offline_lr: float = 1e-3
    closure_mode: str = "multiplicative"  # how the noise enters (StochasticCNNClosure): input, multiplicative, additive
    noise_channels: int = 1
    noise_sigma: float = 0.5  # SPPT's standard deviation; "input" mode was run with 1.0
    noise_length: float = 1.5  # grid points (float32: the filter exp(-k^2 L^2 / 4) underflows past ~2.9)
    noise_tau_days: float = 1.0
    noise_weight: float = 0.1  # "input" mode only; 1.0 was measured over-dispersed (docs/uncertainty.md)
    crps_train_net: bool = False  # False: only the random field's amplitude, length and time are trained
    crps_members: int = 2
    crps_curriculum: tuple = ((4, 20), (8, 10), (20, 6))  # (forecast-data snapshots per window, Adam steps)
    crps_batch: int = 2
    crps_lr: float = 1e-3
    noise_lr: float = 3e-2  # Adam on the random field's log amplitude, length and time (36 steps can move them e-fold)
    train_fraction: float = 0.5
    n_forecasts: int = 10
    n_members: int = 8
    ic_perturbation: float | None = None  # random-field initial perturbations (climate std units); None: fitted
    ic_candidates: tuple = (0.0, 0.02, 0.05, 0.1, 0.15)  # amplitudes tried on training-period forecasts
    n_fit_forecasts: int = 4  # training-period forecasts that choose the amplitude
    max_lead_days: float = 5.0
    free_runs: int = 3
    free_days: float = 180.0
    free_spinup_days: float = 30.0
    free_save_days: float = 5.0
    seed: int = 0

    def __post_init__(self):
        for name in ("offline_steps", "offline_batch", "noise_channels", "crps_batch", "n_forecasts", "free_runs",
                     "n_fit_forecasts"):
            check_int_at_least(name, getattr(self, name), 1)
        check_int_at_least("crps_members", self.crps_members, 2)
        check_int_at_least("n_members", self.n_members, 2)
        for name in ("offline_lr", "noise_sigma", "noise_length", "noise_tau_days", "crps_lr", "noise_lr", "max_lead_days",
                     "free_days", "free_save_days"):
            check_positive(name, getattr(self, name))
        check_positive("noise_weight", self.noise_weight, allow_zero=True)
        if self.ic_perturbation is not None:
            check_positive("ic_perturbation", self.ic_perturbation, allow_zero=True)
        elif not self.ic_candidates or any(float(a) < 0 for a in self.ic_candidates):
            raise ConfigError(f"ic_candidates needs amplitudes >= 0, got {self.ic_candidates}")
        check_positive("free_spinup_days", self.free_spinup_days, allow_zero=True)
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be between 0 and 1, got {self.train_fraction}")
        if self.free_spinup_days >= self.free_days:
            raise ConfigError(f"free_spinup_days ({self.free_spinup_days:g}) must be shorter than free_days "
                              f"({self.free_days:g})")
        if not self.crps_curriculum or any(n < 1 or it < 0 for n, it in self.crps_curriculum):
            raise ConfigError(f"crps_curriculum needs (snapshots >= 1, steps >= 0) stages, got {self.crps_curriculum}")
        if self.closure_mode not in MODES:
            raise ConfigError(f"closure_mode must be one of {', '.join(MODES)}; got {self.closure_mode!r}")
        if self.closure_mode == "input" and not self.crps_train_net:
            raise ConfigError("closure_mode 'input' needs crps_train_net = true (its noise weights are trained)")
        if len(self.kernel_sizes) != len(self.widths) + 1:
            raise ConfigError(f"kernel_sizes needs len(widths) + 1 = {len(self.widths) + 1} entries")


def quick_config(**overrides: Any) -> QGStochasticConfig:
    """Tiny sizes for tests and a first look (seconds on small grids; not science)."""
    base = dict(widths=(4,), kernel_sizes=(3, 3), offline_steps=5, offline_batch=2, crps_curriculum=((1, 2),),
                crps_batch=1, n_forecasts=2, n_members=2, max_lead_days=1.0, free_runs=1, free_days=4.0,
                free_spinup_days=1.0, free_save_days=1.0, ic_candidates=(0.0, 0.1), n_fit_forecasts=1)
    base.update(overrides)
    return QGStochasticConfig(**base)


# ------------------------------------------------------------------------------------------------ data
def load_inputs(data: str | Path, forecast_data: str | Path, cfg: QGStochasticConfig) -> dict[str, Any]:
    """Read and check both datasets before any work: the same low-resolution model and timestep, a forecast
    dataset sampled at whole steps and long enough for the CRPS windows and the forecasts."""
    ds, lo = load_dataset(data, cfg.operator)
    fs, lo_f = load_dataset(forecast_data, cfg.operator)
    if lo_f.params() != lo.params():
        raise DataError(f"'{forecast_data}' and '{data}' hold different low-resolution models")
    dt = float(ds.attrs["dt"])
    if abs(float(fs.attrs["dt"]) - dt) > 1e-9 * dt:
        raise DataError(f"'{forecast_data}' has dt = {fs.attrs['dt']} s and '{data}' dt = {dt} s")
    tf = np.asarray(fs["time"].values, dtype=float)
    if tf.size < 3:
        raise DataError(f"'{forecast_data}' has {tf.size} snapshots; the forecasts need many, hours apart")
    every = int(round((tf[1] - tf[0]) / dt))
    if every < 1 or not np.allclose(np.diff(tf), every * dt, rtol=1e-6):
        raise DataError(f"'{forecast_data}' snapshots are not evenly spaced by whole steps of {dt:g} s")
    n_lead = int(round(cfg.max_lead_days * DAY / (every * dt)))
    n_train = int(tf.size * cfg.train_fraction)
    longest = max(n for n, _ in cfg.crps_curriculum)
    if n_lead < 1:
        raise ConfigError(f"max_lead_days = {cfg.max_lead_days:g} is shorter than the forecast data's spacing "
                          f"({every * dt / DAY:g} days)")
    if n_train < longest + 1:
        raise DataError(f"the training part of '{forecast_data}' has {n_train} snapshots, too few for "
                        f"{longest}-snapshot CRPS windows")
    if tf.size - n_train < n_lead + 1:
        raise DataError(f"the test part of '{forecast_data}' has {tf.size - n_train} snapshots, too few for "
                        f"{cfg.max_lead_days:g}-day forecasts ({n_lead + 1} snapshots)")
    return {"ds": ds, "lo": lo, "fs": fs, "dt": dt, "every": every, "n_lead": n_lead, "n_train": n_train}


def layer_scale(q: np.ndarray) -> np.ndarray:
    """Standard deviation of PV per layer (2,), for scores that weigh both layers alike."""
    return np.asarray(q).std(axis=(0, 2, 3))


# ------------------------------------------------------------------------------------------------ training
def closure_filter(closure: StochasticCNNClosure, train_net: bool = True):
    """``filter_spec``: the random field's parameters train, and the network's weights if ``train_net``; the
    scales do not."""
    spec = jax.tree_util.tree_map(lambda _: False, closure)
    if train_net:
        spec = eqx.tree_at(lambda c: c.net, spec,
                           replace=jax.tree_util.tree_map(eqx.is_inexact_array, closure.net))
    return eqx.tree_at(lambda c: (c.noise.log_sigma, c.noise.log_length, c.noise.log_tau), spec,
                       replace=(True, True, True))


def crps_optimizer(cfg: QGStochasticConfig, closure: StochasticCNNClosure):
    """Adam with learning rate ``crps_lr`` for the network and ``noise_lr`` for the random field's logarithmic
    parameters (a few tens of steps must be able to move them by a factor of a few)."""
    def labels(params):
        lab = jax.tree_util.tree_map(lambda _: "net", params)
        return eqx.tree_at(lambda c: (c.noise.log_sigma, c.noise.log_length, c.noise.log_tau), lab,
                           replace=("noise", "noise", "noise"))

    return optax.multi_transform({"net": optax.adam(cfg.crps_lr), "noise": optax.adam(cfg.noise_lr)}, labels)


def normalised_crps(scale):
    """The ensemble score for :func:`fit_ensemble`: fair CRPS of the physical PV of QG states (members first),
    normalised per layer by ``scale`` (2,), averaged over everything."""
    s = jnp.asarray(scale)[:, None, None]

    def score(ensemble: QGState, target: QGState) -> jax.Array:
        return jnp.mean(crps_ensemble(ensemble.q / s.astype(ensemble.q.dtype), target.q / s.astype(ensemble.q.dtype),
                                      fair=True))

    return score


def train(cfg: QGStochasticConfig, inp: dict[str, Any], key: jax.Array, *, init=None, init_stochastic=None,
          progress: bool = False) -> tuple[Any, StochasticCNNClosure, dict[str, Any]]:
    """Deterministic pre-training (or ``init``), then CRPS fine-tuning (or ``init_stochastic``, an already
    fitted :class:`StochasticCNNClosure`); returns (deterministic, stochastic, record)."""
    k_net, k_off, k_noise, k_crps = jax.random.split(key, 4)
    ds, lo, fs = inp["ds"], inp["lo"], inp["fs"]
    record: dict[str, Any] = {}
    t0 = time.perf_counter()
    if init is not None:
        det, info = init
        record["deterministic_cnn"] = {"source": "init", "info": info, "losses": []}
    else:
        in_s, out_s = scales(ds)
        det = make_cnn_closure(in_s, out_s, widths=cfg.widths, kernel_sizes=cfg.kernel_sizes, key=k_net)
        det, losses = train_offline(det, ds, steps=cfg.offline_steps, batch=cfg.offline_batch, lr=cfg.offline_lr,
                                    key=k_off, log_every=10, progress=progress)
        record["deterministic_cnn"] = {"source": "offline", "losses": losses,
                                       "first_loss": losses[0][1], "final_loss": losses[-1][1]}
    record["deterministic_cnn"]["seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if init_stochastic is not None:
        st = init_stochastic
        record["stochastic_cnn"] = {"source": "init", "mode": st.mode, "crps_history": [],
                                    "noise_sigma": np.asarray(st.noise.sigma).tolist(),
                                    "noise_length_points": np.asarray(st.noise.length).tolist(),
                                    "noise_tau_days": (np.asarray(st.noise.tau) / DAY).tolist(), "seconds": 0.0}
        return det, st, record
    st = StochasticCNNClosure.from_deterministic(det, lo, channels=cfg.noise_channels, sigma=cfg.noise_sigma,
                                                 length=cfg.noise_length, tau=cfg.noise_tau_days * DAY,
                                                 noise_weight=cfg.noise_weight, mode=cfg.closure_mode,
                                                 key=k_noise)
    q_train = np.asarray(fs["q"].values[: inp["n_train"]])
    t_train = np.asarray(fs["time"].values[: inp["n_train"]], dtype=float)
    res = fit_ensemble(st, lambda c: lo + c, lo.default_stepper(), QGState.from_q(jnp.asarray(q_train)),
                       dt=inp["dt"], key=k_crps, n_members=cfg.crps_members,
                       score=normalised_crps(layer_scale(q_train)), save_every=inp["every"],
                       curriculum=cfg.crps_curriculum, batch_size=cfg.crps_batch,
                       optimizer=crps_optimizer(cfg, st), filter_spec=closure_filter(st, cfg.crps_train_net),
                       checkpoint_grad=True,
                       reference_times=t_train - t_train[0], progress=progress)
    st = res.model
    h = [float(x) for x in res.history]
    record["stochastic_cnn"] = {"mode": st.mode, "crps_history": h, "crps_first": float(np.mean(h[:5])) if h else None,
                                "crps_final": float(np.mean(h[-5:])) if h else None,
                                "noise_sigma": np.asarray(st.noise.sigma).tolist(),
                                "noise_length_points": np.asarray(st.noise.length).tolist(),
                                "noise_tau_days": (np.asarray(st.noise.tau) / DAY).tolist(),
                                "seconds": time.perf_counter() - t0}
    return det, st, record


# ------------------------------------------------------------------------------------------------ forecasts
# ------------------------------------------------------------------------------------------------ free runs
def free_runs(inp, cfg: QGStochasticConfig, closures: dict[str, Any], key, progress: bool = False):
    """Free runs of the coarse model with each closure from ``free_runs`` long-data snapshots; stochastic
    closures run one member per start with its own key. Returns ({name: pooled PV}, {name: info})."""
    ds, lo, dt = inp["ds"], inp["lo"], inp["dt"]
    q = np.asarray(ds["q"].values)
    every = max(1, int(round(cfg.free_save_days * DAY / dt)))
    n_steps = int(round(cfg.free_days * DAY / dt))
    n_steps -= n_steps % every
    spin = int(round(cfg.free_spinup_days * DAY / dt))
    starts = start_indices(q.shape[0], cfg.free_runs)
    runs, info = {}, {}
    for j, (name, c) in enumerate(closures.items()):
        t0 = time.perf_counter()
        parts, blew = [], []
        for i in starts:
            if c is None or not c.stochastic:
                x, b = run_closure(lo, c, q[i], dt=dt, n_steps=n_steps, save_every=every, spinup_steps=spin,
                                   return_blowup=True)
            else:
                x, b = _stochastic_free_run(lo, c, q[i], dt, n_steps, every, spin, jax.random.fold_in(key, 100 * j + i))
            parts.append(x)
            if b:
                blew.append(b)
        runs[name] = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else parts[0]
        info[name] = {"seconds": time.perf_counter() - t0, "blowups": blew, "snapshots": int(len(runs[name]))}
        if progress:
            print(f"  free runs, {name}: {len(starts)} x {cfg.free_days:g} days ({info[name]['seconds']:.0f} s)",
                  flush=True)
    return runs, info, starts


def _stochastic_free_run(lo, closure, q0, dt, n_steps, every, spin, key):
    blew = None
    try:
        tr = simulate(lo + closure, lo.default_stepper(), QGState.from_q(jnp.asarray(q0)), dt=dt, n_steps=n_steps,
                      save_every=every, key=key, observe=lo.observe)
    except BlowUpError as e:
        warnings.warn(f"run blew up ({e}); scoring the part before the blow-up", RuntimeWarning, stacklevel=2)
        tr, blew = e.trajectory, str(e)
    keep = np.asarray(tr.t) >= spin * dt
    return np.asarray(tr.states.q)[keep], blew


def similarity_scores(inp, data: str | Path, runs: dict[str, np.ndarray], closures: dict[str, Any]) -> dict:
    """The benchmark's similarity of each closure's pooled free runs, against the high-resolution run of ``data``
    (spectra and budgets over the resolved wavenumbers, distributions of full-resolution fields), relative to the
    uncorrected model. The stochastic closure's energy-flux contribution is evaluated with its noise at zero."""
    lo = inp["lo"]
    t = np.asarray(inp["ds"]["time"].values, dtype=float)
    q_hi, hi = load_hires(data, float(t[0]))
    high = summarize(hi, q_hi)
    high["kmax"] = resolved_kmax(lo)
    del q_hi
    summ = {}
    for name, q in runs.items():
        c = closures.get(name)
        if len(q):
            summ[name] = summarize(lo, q, c.with_zero_noise() if getattr(c, "stochastic", False) else c)
    if "low_res" not in summ:
        raise DataError("the uncorrected low-resolution runs blew up before their first scored snapshot")
    d_low = distances(summ["low_res"], high)
    scores = {name: similarity(summ[name], summ["low_res"], high, d_low) if name in summ else
              {"per_metric": None, "mean": None, "min": None, "blew_up": True} for name in runs if name != "low_res"}
    return {"closures": scores, "distances_low_res": d_low}, high, summ


# ------------------------------------------------------------------------------------------------ the recipe
def _at_days(leads_days: np.ndarray, curve: np.ndarray) -> dict[str, float | None]:
    out = {}
    for d in REPORT_DAYS:
        i = int(np.argmin(np.abs(leads_days - d)))
        out[str(d)] = float(curve[i]) if abs(leads_days[i] - d) < 1e-6 else None
    return out


def run(cfg: QGStochasticConfig, data: str | Path, forecast_data: str | Path, out: str | Path, *,
        init: str | Path | None = None, init_stochastic: str | Path | None = None, progress: bool = False,
        log=print) -> dict[str, Any]:
    """Run the recipe (see the module documentation); every setting and input is checked before any work and
    the files replace ``out`` whole at the end. Returns the metrics (also in ``out/metrics.json``)."""
    from nemic.experiments.qg_stochastic_plots import plot_all, write_datasets

    check_replaceable(out)
    check_distinct_paths(out, data, forecast_data, init, init_stochastic)
    t_start = time.perf_counter()
    inp = load_inputs(data, forecast_data, cfg)
    loaded = load_trained_closure(init) if init is not None else None
    loaded_st = None
    if init_stochastic is not None:
        if init is None:
            raise ConfigError("init_stochastic needs init: the deterministic closure it was fitted from")
        loaded_st = load_module(Path(init_stochastic) / "closure.eqx", kind=STOCHASTIC_CNN_CLOSURE_KIND)
    key = jax.random.key(cfg.seed)
    k_train, k_fc, k_free = jax.random.split(key, 3)
    k_ic, k_fit = jax.random.split(jax.random.fold_in(key, 7))
    settings = {"config": dataclasses.asdict(cfg), "data": str(data), "forecast_data": str(forecast_data),
                "init": None if init is None else str(init),
                "init_stochastic": None if init_stochastic is None else str(init_stochastic)}
    timings: dict[str, float] = {}
    with staged_run(out, "qg stochastic", settings) as stage:
        t0 = time.perf_counter()
        log("training: deterministic CNN (offline), then CRPS fine-tuning of the stochastic CNN through rollouts")
        det, st, record = train(cfg, inp, k_train, init=loaded, init_stochastic=loaded_st, progress=progress)
        timings["training"] = time.perf_counter() - t0
        save_trained_closure(det, stage / "closures" / "deterministic_cnn", {"recipe": "qg stochastic"})
        save_module(ensure_writable_dir(stage / "closures" / "stochastic_cnn") / "closure.eqx", st,
                    kind=STOCHASTIC_CNN_CLOSURE_KIND,
                    extra={"recipe": "qg stochastic", "training": {k: v for k, v in
                                                                   record["stochastic_cnn"].items()
                                                                   if k != "crps_history"}})

        t0 = time.perf_counter()
        lo, fs = inp["lo"], inp["fs"]
        starts = forecast_starts(inp, cfg.n_forecasts)
        log(f"ensemble forecasts: {cfg.n_members} members from {len(starts)} initial states, "
            f"{cfg.max_lead_days:g} days")
        q = np.asarray(fs["q"].values)
        truth = q[starts[:, None] + np.arange(inp["n_lead"] + 1)[None, :]]  # (N, L, 2, ny, nx)
        q_fit = q[: inp["n_train"]]
        scale = layer_scale(q_fit)
        leads_days = np.arange(inp["n_lead"] + 1) * inp["every"] * inp["dt"] / DAY
        sel = (leads_days >= 1 - 1e-6) & (leads_days <= 5 + 1e-6)
        amp, amp_record = cfg.ic_perturbation, None
        if amp is None:
            fstarts = fit_starts(inp, cfg.n_fit_forecasts)
            fit_truth = q[fstarts[:, None] + np.arange(inp["n_lead"] + 1)[None, :]]

            def ratio_of(a):
                e, _ = ensemble_forecasts(lo + st, inp, fstarts, cfg.n_members, k_fit, progress,
                                          f"fit: initial perturbation {a:g}", amplitude=a, ic_key=k_fit)
                return forecast_scores(e, fit_truth, scale)["ratio"][sel if sel.any() else slice(1, None)]

            amp, amp_record = choose_amplitude(cfg.ic_candidates, ratio_of)
            log(f"initial perturbation amplitude {amp:g} (spread/error on {len(fstarts)} training forecasts)")
        ens, blown = ensemble_forecasts(lo + st, inp, starts, cfg.n_members, k_fc, progress, "stochastic CNN",
                                        amplitude=amp, ic_key=k_ic)
        det_fc, det_blown = ensemble_forecasts(lo + det, inp, starts, 1, None, progress, "deterministic CNN")
        fc = {"stochastic_cnn": forecast_scores(ens, truth, scale),
              "deterministic_cnn": forecast_scores(det_fc, truth, scale)}
        if amp > 0:  # what each source of spread gives alone: closure noise, initial perturbations
            alone, _ = ensemble_forecasts(lo + st, inp, starts, cfg.n_members, k_fc, progress,
                                          "stochastic CNN, exact initial states")
            fc["stochastic_cnn_exact_ic"] = forecast_scores(alone, truth, scale)
            det_ens, _ = ensemble_forecasts(lo + det, inp, starts, cfg.n_members, None, progress,
                                            "deterministic CNN, perturbed initial states", amplitude=amp, ic_key=k_ic)
            fc["deterministic_cnn_ensemble"] = forecast_scores(det_ens, truth, scale)
        timings["forecasts"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        log(f"free runs: {cfg.free_runs} x {cfg.free_days:g} days per closure, scored against the high-resolution run")
        closures = {"low_res": None, "deterministic_cnn": det, "stochastic_cnn": st}
        runs, run_info, free_starts = free_runs(inp, cfg, closures, k_free, progress)
        sim, high, summ = similarity_scores(inp, data, runs, closures)
        timings["free_runs"] = time.perf_counter() - t0

        closures_out = {}
        for name, s in fc.items():
            closures_out[name] = {k: _at_days(leads_days, s[k]) for k in ("crps", "rmse", "spread")}
            closures_out[name]["spread_error"] = (_at_days(leads_days, s["ratio"]) if name != "deterministic_cnn"
                                                  else None)
            closures_out[name]["similarity"] = sim["closures"].get(name)  # free runs have no initial perturbation
        closures_out["stochastic_cnn"]["blown_forecast_members"] = int(blown.sum())
        closures_out["deterministic_cnn"]["blown_forecasts"] = int(det_blown.sum())
        ratio = fc["stochastic_cnn"]["ratio"]
        s_sim = sim["closures"]["stochastic_cnn"]["mean"]
        d_sim = sim["closures"]["deterministic_cnn"]["mean"]
        checks = {"spread_error_range_1_to_5_days": [float(ratio[sel].min()), float(ratio[sel].max())]
                  if sel.any() else None,
                  "spread_error_within_0.7_1.3": bool(sel.any() and ratio[sel].min() >= 0.7
                                                      and ratio[sel].max() <= 1.3),
                  "similarity_at_least_deterministic": None if s_sim is None or d_sim is None
                  else bool(s_sim >= d_sim),
                  "crps_below_deterministic_every_lead_1_to_5_days": bool(np.all(
                      fc["stochastic_cnn"]["crps"][sel] < fc["deterministic_cnn"]["crps"][sel]))}
        timings["total"] = time.perf_counter() - t_start
        metrics = {"config_name": inp["ds"].attrs.get("config"), "nx_lo": lo.nx, "dt": inp["dt"],
                   "forecast_interval_hours": inp["every"] * inp["dt"] / 3600,
                   "forecast_starts": starts.tolist(), "free_run_starts": list(map(int, free_starts)),
                   "closures": closures_out, "checks": checks,
                   "initial_perturbation": {"amplitude": amp, "fitted_on_training_forecasts": amp_record},
                   "distances_low_res": sim["distances_low_res"], "free_runs": run_info,
                   "training": {k: {kk: vv for kk, vv in v.items() if kk not in ("losses", "crps_history")}
                                for k, v in record.items()},
                   "config": dataclasses.asdict(cfg), "timings_seconds": timings}
        write_json(metrics, stage / "metrics.json")
        write_datasets(stage, leads_days, fc, ens[:, 0], cfg)
        plot_all(stage, leads_days, fc, high, summ, record, ens[:, 0], truth[0])
    return metrics

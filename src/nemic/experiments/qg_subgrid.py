"""The ocean subgrid-parameterization benchmark of Ross et al. (2023) on nemic's two-layer QG model.

Recipe (each step a function here and a ``nemic qg`` command):

1. :func:`generate`: spin up the high-resolution model of a configuration, coarse-grain snapshots with the three
   operators and write CF netCDF files ``hires.nc``, ``op1.nc``, ``op2.nc``, ``op3.nc`` (coarse PV and the
   ``q_subgrid_forcing`` / ``q_forcing_total`` targets) plus ``generate.json``.
2. :func:`train_offline` / :func:`train_online`: fit a CNN closure on the forcing targets (offline) or through
   rollouts of the low-resolution model against coarse-grained high-resolution trajectories (online), both with
   nemic's one training loop (:func:`nemic.train.loop.fit`, through :func:`nemic.train.online.fit_online` for
   online training); :func:`save_trained_closure` / :func:`load_trained_closure` keep the result in nemic's one
   weights format (:func:`nemic.train.checkpoint.save_module`).
3. :func:`evaluate` (in :mod:`nemic.experiments.qg_evaluation`, re-exported here): free runs of the
   low-resolution model with each closure, scored by the similarity ``1 - D(param, HR) / D(LR, HR)`` (Ross et al.
   2023, eq. 9) over spectra, energy-budget terms and marginal distributions, written to ``metrics.json`` and PNG
   figures.

Every step checks all its settings and inputs first (grid relations, sizes that would exhaust memory, timesteps,
files readable and finite) and writes through :func:`~nemic.experiments.config.staged_run`, so a failed or
interrupted rerun leaves an earlier results directory exactly as it was, never a mix of two runs.

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nemic.core.errors import ConfigError, DataError, check_int_at_least, check_positive
from nemic.core.rollout import rollout, simulate
from nemic.data.coarsen import OPERATORS, Coarsener, forcing_dataset
from nemic.data.qg_benchmark import last_snapshot, load_dataset, load_hires, model_from_attrs  # noqa: F401
from nemic.experiments.config import staged_run
from nemic.experiments.qg_evaluation import (  # noqa: F401  (the evaluation half of the recipe, re-exported)
    DISTRIBUTION_METRICS,
    MAX_NX,
    MAX_STEPS,
    SPECTRAL_METRICS,
    check_distinct_paths,
    check_qg_size,
    distances,
    evaluate,
    resolved_kmax,
    run_closure,
    similarity,
    similarity_table,
    start_indices,
    summarize,
    wasserstein1,
)
from nemic.io.output import ensure_writable_dir, to_xarray, write_json, write_netcdf
from nemic.io.terminal import progress as progress_reporter
from nemic.models.qg import SECONDS_PER_YEAR, QGState, get_config
from nemic.models.qg import diagnostics as dg
from nemic.nn.conv import CircularCNN
from nemic.processes.qg_closures import CNN_CLOSURE_KIND, CNNClosure
from nemic.train.checkpoint import load_module, read_header, save_module
from nemic.train.loop import fit
from nemic.train.offline import MinibatchSampler
from nemic.train.online import fit_online


def steps_for(years: float, dt: float) -> int:
    """Steps of ``dt`` seconds in ``years`` 360-day years (rounded)."""
    return int(round(years * SECONDS_PER_YEAR / dt))


def check_grid_pair(nx_hi: int, nx_lo: int) -> None:
    """One-line :class:`ConfigError` unless ``nx_hi`` and ``nx_lo`` are even integers >= 8, ``nx_hi`` a larger
    multiple of ``nx_lo``, and neither above :data:`~nemic.experiments.qg_evaluation.MAX_NX`."""
    check_int_at_least("nx_hi", nx_hi, 8)
    check_int_at_least("nx_lo", nx_lo, 8)
    for name, n in (("nx_hi", nx_hi), ("nx_lo", nx_lo)):
        if n % 2:
            raise ConfigError(f"{name} must be even, got {n}")
        if n > MAX_NX:
            raise ConfigError(f"{name} = {n} is too large: at most {MAX_NX} points per side (one state alone would "
                              f"hold {2 * float(n) ** 2 * 8 / 2**30:.3g} GiB)")
    if nx_hi <= nx_lo:
        raise ConfigError(f"nx_hi ({nx_hi}) must be larger than nx_lo ({nx_lo})")
    if nx_hi % nx_lo:
        raise ConfigError(f"nx_hi ({nx_hi}) must be a multiple of nx_lo ({nx_lo}) for the coarse-graining operators")


def check_generate(config: str, years: float, *, nx_hi: int = 256, nx_lo: int = 64, dt: float = 3600.0,
                   spinup_years: float | None = None, save_every: int = 1000, operators: Sequence[str] = OPERATORS,
                   seed: int = 0, q0=None) -> dict:
    """Check every setting of :func:`generate` before any work; one-line :class:`ConfigError` /
    :class:`DataError` otherwise. Returns the derived settings: ``hi``, ``lo`` (models), ``n_total`` (steps),
    ``spinup_years``, ``operators`` (tuple), ``snapshots`` (kept after the spin-up), ``q0`` (array or None)."""
    hi_cfg = get_config(config, 16)  # an unknown configuration name fails here, before anything else
    del hi_cfg
    check_positive("years", years)
    check_positive("dt", dt)
    check_int_at_least("save_every", save_every, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    check_grid_pair(nx_hi, nx_lo)
    ops = tuple(operators)
    if not ops:
        raise ConfigError(f"at least one coarse-graining operator is needed; choose from {list(OPERATORS)}")
    for op in ops:
        if op not in OPERATORS:
            raise ConfigError(f"unknown coarse-graining operator {op!r}; choose from {list(OPERATORS)}")
    if len(set(ops)) != len(ops):
        raise ConfigError(f"coarse-graining operators listed twice: {list(ops)}")
    spinup_years = years / 2 if spinup_years is None else spinup_years
    check_positive("spinup_years", spinup_years, allow_zero=True)
    if spinup_years >= years:
        raise ConfigError(f"spinup_years ({spinup_years:g}) must be shorter than years ({years:g})")
    steps = years * SECONDS_PER_YEAR / dt
    if steps > MAX_STEPS:
        raise ConfigError(f"years = {years:g} at dt = {dt:g} s would take {steps:.3g} steps; at most "
                          f"{MAX_STEPS:.0e} are allowed")
    n_total = steps_for(years, dt)
    n_total -= n_total % save_every
    if n_total < save_every:
        raise ConfigError(f"{years:g} years at dt = {dt:g} s is fewer steps than save_every = {save_every}")
    t_saved = np.arange(0, n_total + 1, save_every) * float(dt)
    snapshots = int(np.count_nonzero(t_saved >= spinup_years * SECONDS_PER_YEAR - 1e-6))
    if snapshots < 1:
        raise ConfigError(f"no snapshot would be saved after the spin-up of {spinup_years:g} years "
                          f"({n_total} steps of {dt:g} s, saved every {save_every})")
    check_qg_size(nx_hi, n_total, len(t_saved), "qg generate")
    hi, lo = get_config(config, nx_hi), get_config(config, nx_lo)
    for op in ops:
        Coarsener(hi, lo, op)  # the operators' own checks (same domain, multiple grids)
    if q0 is not None:
        q0 = np.asarray(q0)
        if q0.shape != (2, nx_hi, nx_hi):
            raise DataError(f"the initial (restart) PV has shape {q0.shape}; expected (2, {nx_hi}, {nx_hi}) for "
                            f"nx_hi = {nx_hi}")
        if not np.all(np.isfinite(q0)):
            raise DataError("the initial (restart) PV holds NaN/inf values")
    return {"hi": hi, "lo": lo, "n_total": n_total, "spinup_years": float(spinup_years), "operators": ops,
            "snapshots": snapshots, "q0": q0}


def generate(config: str, years: float, out: str | Path, *, nx_hi: int = 256, nx_lo: int = 64, dt: float = 3600.0,
             spinup_years: float | None = None, save_every: int = 1000, operators: Sequence[str] = OPERATORS,
             seed: int = 0, progress: bool = False, write_hires: bool = True, q0=None) -> dict:
    """Run the high-resolution model and write coarse-grained datasets (see the module documentation).

    Every setting is checked first (:func:`check_generate`); the files replace ``out`` whole at the end
    (:func:`~nemic.experiments.config.staged_run`), so a failed rerun leaves an earlier ``out`` as it was.

    Args:
        config: "eddy" or "jet".
        years: total model time (360-day years); snapshots are saved after ``spinup_years`` (default: half).
        out: output directory (replaced whole; refused if it holds files of something other than a nemic run).
        nx_hi, nx_lo: resolutions (benchmark: 256 and 64).
        dt: timestep, s (benchmark: 3600).
        save_every: steps between saved snapshots (benchmark: 1000).
        operators: subset of ("op1", "op2", "op3").
        seed: ``jax.random`` seed of the initial condition (pyqg's random PV).
        q0: optional initial PV (2, nx_hi, nx_hi) instead of the random one.
    Returns:
        A summary dict (also written to ``generate.json``).
    """
    c = check_generate(config, years, nx_hi=nx_hi, nx_lo=nx_lo, dt=dt, spinup_years=spinup_years,
                       save_every=save_every, operators=operators, seed=seed, q0=q0)
    hi, lo, n_total, spinup_years = c["hi"], c["lo"], c["n_total"], c["spinup_years"]
    out = Path(out)
    settings = {"config": config, "years": years, "nx_hi": nx_hi, "nx_lo": nx_lo, "dt": dt,
                "spinup_years": spinup_years, "save_every": save_every, "operators": list(c["operators"]),
                "seed": int(seed), "restart": q0 is not None, "write_hires": write_hires}
    with staged_run(out, "qg generate", settings) as stage:
        t0 = time.perf_counter()
        state0 = hi.initial_state(jax.random.key(int(seed))) if c["q0"] is None else hi.initial_state(q=c["q0"])
        hi.check_timestep(state0, dt)
        with progress_reporter("spin-up", enabled=bool(progress)) as report:
            traj = simulate(hi, None, state0, dt=dt, n_steps=n_total, save_every=save_every, observe=hi.observe,
                            progress=report)
        wall = time.perf_counter() - t0
        keep = np.asarray(traj.t) >= spinup_years * SECONDS_PER_YEAR - 1e-6
        t = np.asarray(traj.t)[keep]
        q = np.asarray(traj.states.q)[keep]
        attrs = {"config": config, "dt": dt, "years": years, "spinup_years": spinup_years, "seed": int(seed)}
        files = {}
        if write_hires:
            ds = to_xarray(traj.take(len(traj)), attrs={**attrs, **hi.to_attrs("hi_")})
            write_netcdf(ds, stage / "hires.nc")
            files["hires"] = str(out / "hires.nc")
        for op in c["operators"]:
            ds = forcing_dataset(Coarsener(hi, lo, op), hi, lo, t, q, attrs=attrs)
            write_netcdf(ds, stage / f"{op}.nc")
            files[op] = str(out / f"{op}.nc")
        summary = {"config": config, "years": years, "steps": n_total, "dt": dt, "nx_hi": nx_hi, "nx_lo": nx_lo,
                   "snapshots": int(keep.sum()), "wall_s": wall, "ms_per_step": 1e3 * wall / n_total,
                   "files": files}
        write_json(summary, stage / "generate.json")
    return summary


# ====================================================================== data
def scales(ds) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer standard deviations (2,) of ``q`` and ``q_subgrid_forcing`` (normalisation of the CNN)."""
    q = ds["q"].values
    s = ds["q_subgrid_forcing"].values
    return q.std(axis=(0, 2, 3)), s.std(axis=(0, 2, 3))


# ====================================================================== closures on disk
#: file of a trained closure inside its directory (nemic's one weights format: kind + config + weights)
CLOSURE_FILE = "closure.eqx"


def make_cnn_closure(in_scale, out_scale, *, widths=(64, 64, 32, 32), kernel_sizes=None, key=None,
                     zero_init_last: bool = False):
    """A :class:`~nemic.processes.qg_closures.CNNClosure` around a zero-mean :class:`~nemic.nn.conv.CircularCNN`."""
    key = jax.random.key(0) if key is None else key
    net = CircularCNN(2, 2, widths=tuple(widths), kernel_sizes=None if kernel_sizes is None else tuple(kernel_sizes),
                      zero_mean=True, zero_init_last=zero_init_last, key=key)
    return CNNClosure(net, in_scale, out_scale)


def save_trained_closure(closure, out: str | Path, info: dict | None = None) -> Path:
    """Save a CNN closure to ``out/closure.eqx`` with :func:`~nemic.train.checkpoint.save_module` (kind
    ``"QGCNNClosure"``: the network's kind and config, scales, weights; ``info``, e.g. the training settings and
    losses, in the header's ``extra``) and a readable copy of the header in ``out/closure.json``. Returns ``out``."""
    out = ensure_writable_dir(out)
    path = save_module(out / CLOSURE_FILE, closure, kind=CNN_CLOSURE_KIND, extra=info or {})
    header = read_header(path)
    write_json({"kind": header["kind"], "config": header["config"], "extra": header["extra"],
                "load_with": "nemic.experiments.qg_subgrid.load_trained_closure (or nemic.train.checkpoint."
                             "load_module on closure.eqx)"}, out / "closure.json")
    return out


def load_trained_closure(path: str | Path):
    """``(closure, info)`` from a directory written by :func:`save_trained_closure` (or its ``closure.eqx``).

    Weights keep the dtype they were saved in (a float32 network inside a float64 run computes in float64: the
    convolutions cast the weights to the input's dtype). A directory without ``closure.eqx``, or whose file holds
    another module's weights, is a one-line :class:`~nemic.core.errors.DataError`.
    """
    path = Path(path)
    file = path / CLOSURE_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"'{path}' is not a saved closure (expected {CLOSURE_FILE}, written by `nemic qg train`)")
    closure = load_module(file, kind=CNN_CLOSURE_KIND)
    return closure, dict(read_header(file).get("extra") or {})


def saved_closure_widths(path: str | Path) -> tuple[int, ...]:
    """The hidden widths of the network of a saved closure (directory or ``closure.eqx``), read from the file's
    header only (the file is checked complete); ``()`` when the header does not record them."""
    path = Path(path)
    file = path / CLOSURE_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"'{path}' is not a saved closure (expected {CLOSURE_FILE}, written by `nemic qg train`)")
    config = read_header(file).get("config") or {}
    widths = (config.get("net") or {}).get("widths") if isinstance(config, dict) else None
    try:
        return tuple(int(w) for w in widths) if widths else ()
    except (TypeError, ValueError):
        return ()


# ====================================================================== training
def net_filter(closure):
    """``filter_spec`` for :func:`nemic.train.loop.fit`: only the closure's network weights train (the scales
    stay fixed)."""
    spec = jax.tree_util.tree_map(lambda _: False, closure)
    return eqx.tree_at(lambda c: c.net, spec, replace=jax.tree_util.tree_map(eqx.is_inexact_array, closure.net))


def _logged(history: list[float], log_every: int) -> list[tuple[int, float]]:
    n = len(history)
    return [(i, float(history[i])) for i in range(n) if i % log_every == 0 or i == n - 1]


def normalised_forcing_loss(closure, batch, key=None):
    """``mean(((forcing(q) - S) / out_scale)^2)`` over a batch ``(q, S)`` (B, 2, ny, nx): the offline loss."""
    q, S = batch
    pred = jax.vmap(closure.forcing)(q)
    return jnp.mean(((pred - S) / closure.out_scale[:, None, None]) ** 2)


def train_offline(closure, ds, *, steps: int = 1000, batch: int = 16, lr: float = 1e-3, key=None,
                  target: str = "q_subgrid_forcing", log_every: int = 50, progress: bool = False):
    """Fit the closure's network to the forcing targets with :func:`nemic.train.loop.fit`; returns
    ``(closure, losses)`` with ``losses`` the ``(iteration, loss)`` pairs every ``log_every`` iterations.

    Loss :func:`normalised_forcing_loss` (``mean(((net(q / s_q) s_S - S) / s_S)^2)`` with the closure's scales),
    minibatches of ``batch`` distinct snapshots (:class:`~nemic.train.offline.MinibatchSampler`), Adam with
    learning rate ``lr``; only the network's weights train (:func:`net_filter`). A NaN/inf loss stops with a
    one-line :class:`~nemic.train.loop.TrainingDivergedError`.
    """
    key = jax.random.key(1) if key is None else key
    q = jnp.asarray(ds["q"].values)
    S = jnp.asarray(ds[target].values)
    sampler = MinibatchSampler(q, S, min(batch, q.shape[0]))
    res = fit(closure, normalised_forcing_loss, sampler, optimizer=optax.adam(lr), n_iters=steps, key=key,
              filter_spec=net_filter(closure), progress=progress, description="offline training")
    return res.model, _logged(res.history, log_every)


def online_rollout(closure, lo, q_ref, dt: float, save_every: int):
    """States (h, 2, ny, nx) of a rollout of ``lo + closure`` from ``q_ref[0]`` at the times of ``q_ref[1:]``
    (spaced ``save_every`` steps), with checkpointing (for gradients through long rollouts)."""
    n = (q_ref.shape[0] - 1) * save_every
    hybrid = lo + closure
    tr = rollout(hybrid, hybrid.default_stepper(), QGState.from_q(q_ref[0]), dt=dt, n_steps=n,
                 save_every=save_every, checkpoint=True, detect_blowup=False, observe=lo.observe)
    return tr.states.q[1:]


def online_loss(closure, lo, q_ref, dt: float, save_every: int):
    """Mean squared error, normalised per layer by the reference variance, of a rollout of ``lo + closure`` from
    ``q_ref[0]`` against the reference states ``q_ref[1:]`` (spaced ``save_every`` steps), with checkpointing."""
    pred = online_rollout(closure, lo, q_ref, dt, save_every)
    var = jnp.var(q_ref, axis=(0, 2, 3))[:, None, None]
    return jnp.mean((pred - q_ref[1:]) ** 2 / var)


def spectrum_loss(lo, q, q_ref):
    """Mean squared difference of the logarithms of the mean KE spectra of two sets of PV fields (..., 2, ny,
    nx), both layers, over the resolved wavenumbers (``kr < resolved_kmax``): a differentiable climate-statistics
    term for online training (it rewards the right energy at each scale rather than the right phase)."""
    def mean_spec(x):
        x = x.reshape((-1,) + x.shape[-3:])
        kr, S = dg.ke_spectrum(lo, x[0])
        return kr, jax.lax.map(lambda y: dg.ke_spectrum(lo, y)[1], x).mean(0)

    kr, a = mean_spec(q)
    _, b = mean_spec(q_ref)
    sel = np.asarray(kr) < resolved_kmax(lo)
    tiny = jnp.asarray(1e-30, a.dtype)
    return jnp.mean((jnp.log(a[:, sel] + tiny) - jnp.log(b[:, sel] + tiny)) ** 2)


def online_metric(lo, var, spectrum_weight: float = 0.0):
    """The online loss as a pure ``metric(prediction, target)`` on :class:`QGState` batches (B, n, 2, ny, nk) for
    :func:`~nemic.train.online.fit_online`: the PV mean squared error normalised per layer by ``var`` (2, 1, 1)
    plus ``spectrum_weight`` times :func:`spectrum_loss` of all predicted against all target states."""
    def metric(pred: QGState, target: QGState):
        p, y = pred.q, target.q
        loss = jnp.mean((p - y) ** 2 / var)
        if spectrum_weight:
            loss = loss + spectrum_weight * spectrum_loss(lo, p, y)
        return loss

    return metric


def train_online(closure, lo, ds, *, steps: int = 200, horizon: int = 4, batch: int = 2, lr: float = 1e-4,
                 key=None, log_every: int = 10, spectrum_weight: float = 0.0, progress: bool = False):
    """Train the closure through rollouts of the low-resolution model with :func:`nemic.train.online.fit_online`
    (Adam, gradient through the solver with checkpointing); returns ``(closure, losses)`` (``(iteration, loss)``
    pairs every ``log_every`` iterations).

    Each sample starts at a coarse-grained high-resolution snapshot ``q_bar(t_i)`` and is rolled out by
    ``lo + closure`` for ``horizon`` snapshot intervals (windows of :class:`~nemic.train.windows.WindowSampler`);
    the loss is :func:`online_metric`: the PV mean squared error against ``q_bar(t_{i+1..i+horizon})``, normalised
    per layer by the dataset's variance, plus ``spectrum_weight`` times :func:`spectrum_loss` between all
    rolled-out and all reference states of the batch. The snapshot spacing and timestep come from the dataset
    (``save_every`` steps of ``dt``). Only the network's weights train (:func:`net_filter`).
    """
    if spectrum_weight < 0:
        raise ConfigError(f"spectrum_weight must be >= 0, got {spectrum_weight}")
    key = jax.random.key(2) if key is None else key
    q = jnp.asarray(ds["q"].values)
    t = np.asarray(ds["time"].values, dtype=float)
    dt = float(ds.attrs["dt"])
    save_every = int(round((t[1] - t[0]) / dt))
    if q.shape[0] < horizon + 1:
        raise ConfigError(f"online training needs at least horizon + 1 = {horizon + 1} snapshots, "
                          f"the dataset has {q.shape[0]}")
    var = jnp.var(q, axis=(0, 2, 3))[:, None, None]
    trained, history = fit_online(
        closure, lambda c: lo + c, lo.default_stepper(), QGState.from_q(q), dt=dt, save_every=save_every,
        curriculum=((horizon, steps),), batch_size=batch, key=key, loss=online_metric(lo, var, spectrum_weight),
        filter_spec=net_filter(closure), checkpoint_grad=True, reference_times=t - t[0],
        optimizer=optax.adam(lr), progress=progress)
    return trained, _logged(history, log_every)

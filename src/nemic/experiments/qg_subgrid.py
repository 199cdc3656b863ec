"""The ocean subgrid-parameterization benchmark of Ross et al. (2023) on nemic's two-layer QG model.

Recipe (each step a function here and a ``nemic qg`` command):

1. :func:`generate`: spin up the high-resolution model of a configuration, coarse-grain snapshots with the three
   operators and write CF netCDF files ``hires.nc``, ``op1.nc``, ``op2.nc``, ``op3.nc`` (coarse PV and the
   ``q_subgrid_forcing`` / ``q_forcing_total`` targets) plus ``generate.json``.
2. :func:`train_offline` / :func:`train_online`: fit a CNN closure on the forcing targets (offline) or through
   rollouts of the low-resolution model against coarse-grained high-resolution trajectories (online).
3. :func:`evaluate` (in :mod:`nemic.experiments.qg_evaluation`, re-exported here): free runs of the
   low-resolution model with each closure, scored by the similarity ``1 - D(param, HR) / D(LR, HR)`` (Ross et al.
   2023, eq. 9) over spectra, energy-budget terms and marginal distributions, written to ``metrics.json`` and PNG
   figures.

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nemic.core.errors import ConfigError, DataError
from nemic.core.rollout import rollout, simulate
from nemic.data.coarsen import OPERATORS, Coarsener, forcing_dataset
from nemic.data.qg_benchmark import last_snapshot, load_dataset, load_hires, model_from_attrs  # noqa: F401
from nemic.experiments.qg_evaluation import (  # noqa: F401  (the evaluation half of the recipe, re-exported)
    DISTRIBUTION_METRICS,
    SPECTRAL_METRICS,
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
from nemic.io.output import atomic_write, ensure_writable_dir, to_xarray, write_json, write_netcdf
from nemic.io.progress import progress as progress_reporter
from nemic.io.progress import progress_bar
from nemic.models.qg import SECONDS_PER_YEAR, QGState, get_config
from nemic.models.qg import diagnostics as dg
from nemic.nn.conv import CircularCNN
from nemic.processes.qg_closures import CNNClosure
from nemic.train.loop import TrainingDivergedError


def steps_for(years: float, dt: float) -> int:
    n = int(round(years * SECONDS_PER_YEAR / dt))
    return n


def generate(config: str, years: float, out: str | Path, *, nx_hi: int = 256, nx_lo: int = 64, dt: float = 3600.0,
             spinup_years: float | None = None, save_every: int = 1000, operators: Sequence[str] = OPERATORS,
             seed: int = 0, progress: bool = False, write_hires: bool = True, q0=None) -> dict:
    """Run the high-resolution model and write coarse-grained datasets (see the module documentation).

    Args:
        config: "eddy" or "jet".
        years: total model time (360-day years); snapshots are saved after ``spinup_years`` (default: half).
        out: output directory.
        nx_hi, nx_lo: resolutions (benchmark: 256 and 64).
        dt: timestep, s (benchmark: 3600).
        save_every: steps between saved snapshots (benchmark: 1000).
        operators: subset of ("op1", "op2", "op3").
        seed: ``jax.random`` seed of the initial condition (pyqg's random PV).
        q0: optional initial PV (2, nx_hi, nx_hi) instead of the random one.
    Returns:
        A summary dict (also written to ``generate.json``).
    """
    for op in operators:
        if op not in OPERATORS:
            raise ConfigError(f"unknown coarse-graining operator {op!r}; choose from {list(OPERATORS)}")
    hi, lo = get_config(config, nx_hi), get_config(config, nx_lo)
    if years <= 0:
        raise ConfigError(f"years must be > 0, got {years}")
    spinup_years = years / 2 if spinup_years is None else spinup_years
    n_total = steps_for(years, dt)
    n_total -= n_total % save_every
    if n_total < save_every:
        raise ConfigError(f"{years} years at dt={dt} s is fewer steps than save_every={save_every}")
    out = ensure_writable_dir(out)
    t0 = time.perf_counter()
    state0 = hi.initial_state(jax.random.key(seed)) if q0 is None else hi.initial_state(q=q0)
    hi.check_timestep(state0, dt)
    with progress_reporter("spin-up", enabled=bool(progress)) as report:
        traj = simulate(hi, None, state0, dt=dt, n_steps=n_total, save_every=save_every, observe=hi.observe,
                        progress=report)
    wall = time.perf_counter() - t0
    keep = np.asarray(traj.t) >= spinup_years * SECONDS_PER_YEAR - 1e-6
    t = np.asarray(traj.t)[keep]
    q = np.asarray(traj.states.q)[keep]
    attrs = {"config": config, "dt": dt, "years": years, "spinup_years": spinup_years, "seed": seed}
    files = {}
    if write_hires:
        ds = to_xarray(traj.take(len(traj)), attrs={**attrs, **hi.to_attrs("hi_")})
        files["hires"] = str(write_netcdf(ds, out / "hires.nc"))
    for op in operators:
        ds = forcing_dataset(Coarsener(hi, lo, op), hi, lo, t, q, attrs=attrs)
        files[op] = str(write_netcdf(ds, out / f"{op}.nc"))
    summary = {"config": config, "years": years, "steps": n_total, "dt": dt, "nx_hi": nx_hi, "nx_lo": nx_lo,
               "snapshots": int(keep.sum()), "wall_s": wall, "ms_per_step": 1e3 * wall / n_total,
               "files": files}
    write_json(summary, out / "generate.json")
    return summary


# ====================================================================== data
def scales(ds) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer standard deviations (2,) of ``q`` and ``q_subgrid_forcing`` (normalisation of the CNN)."""
    q = ds["q"].values
    s = ds["q_subgrid_forcing"].values
    return q.std(axis=(0, 2, 3)), s.std(axis=(0, 2, 3))


# ====================================================================== closures on disk
def make_cnn_closure(in_scale, out_scale, *, widths=(64, 64, 32, 32), kernel_sizes=None, key=None,
                     zero_init_last: bool = False):
    """A :class:`~nemic.processes.qg_closures.CNNClosure` around a zero-mean :class:`~nemic.nn.conv.CircularCNN`."""
    key = jax.random.key(0) if key is None else key
    net = CircularCNN(2, 2, widths=tuple(widths), kernel_sizes=None if kernel_sizes is None else tuple(kernel_sizes),
                      zero_mean=True, zero_init_last=zero_init_last, key=key)
    return CNNClosure(net, in_scale, out_scale)


def save_closure(closure, hyper: dict, out: str | Path) -> Path:
    """Save a CNN closure: ``closure.eqx`` (``eqx.tree_serialise_leaves``) + ``closure.json`` (hyperparameters)."""
    out = ensure_writable_dir(out)
    leaves = [x for x in jax.tree_util.tree_leaves(closure) if eqx.is_inexact_array(x)]
    hyper = {**hyper, "dtype": jnp.dtype(leaves[0].dtype).name}
    atomic_write(out / "closure.eqx", lambda tmp: eqx.tree_serialise_leaves(tmp, closure))
    write_json(hyper, out / "closure.json")
    return out


def load_closure(path: str | Path):
    """Load a closure saved by :func:`save_closure` (directory holding closure.json and closure.eqx)."""
    path = Path(path)
    if not (path / "closure.json").exists() or not (path / "closure.eqx").exists():
        raise DataError(f"'{path}' is not a saved closure (expected closure.json and closure.eqx)")
    hyper = json.loads((path / "closure.json").read_text())
    skeleton = make_cnn_closure(hyper["in_scale"], hyper["out_scale"], widths=hyper["widths"],
                                kernel_sizes=hyper.get("kernel_sizes"))
    saved = jnp.dtype(hyper.get("dtype", "float32"))
    here = jnp.result_type(float)

    def cast(tree, dtype):
        return jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree)

    closure = eqx.tree_deserialise_leaves(path / "closure.eqx", cast(skeleton, saved))
    return cast(closure, here), hyper


# ====================================================================== training
def _finite_loss(loss, step: int, what: str) -> float:
    loss = float(loss)
    if not np.isfinite(loss):
        raise TrainingDivergedError(f"{what}: loss became {loss} at step {step}; lower the learning rate")
    return loss


def train_offline(closure, ds, *, steps: int = 1000, batch: int = 16, lr: float = 1e-3, key=None,
                  target: str = "q_subgrid_forcing", log_every: int = 50, progress: bool = False):
    """Fit the closure's network to the forcing targets (normalised MSE), Adam; returns ``(closure, losses)``.

    Loss: ``mean(((net(q / s_q) - S / s_S))^2)`` with the closure's scales; the targets come from the dataset.
    """
    key = jax.random.key(1) if key is None else key
    q = jnp.asarray(ds["q"].values)
    S = jnp.asarray(ds[target].values)
    n = q.shape[0]
    opt = optax.adam(lr)
    params, static = eqx.partition(closure.net, eqx.is_inexact_array)  # only the network's weights are trained
    state = opt.init(params)

    def rebuild(p):
        return eqx.tree_at(lambda c: c.net, closure, eqx.combine(p, static))

    def loss_fn(p, qb, Sb):
        c = rebuild(p)
        pred = jax.vmap(c.forcing)(qb)
        return jnp.mean(((pred - Sb) / c.out_scale[:, None, None]) ** 2)

    @jax.jit
    def step(p, s, qb, Sb):
        loss, g = jax.value_and_grad(loss_fn)(p, qb, Sb)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    losses = []
    with progress_bar(progress) as pb:
        task = pb.add_task("offline training", total=steps, info="")
        for i in range(steps):
            key, k = jax.random.split(key)
            idx = jax.random.choice(k, n, (min(batch, n),), replace=False)
            params, state, loss = step(params, state, q[idx], S[idx])
            if i % log_every == 0 or i == steps - 1:
                losses.append((i, _finite_loss(loss, i, "offline training")))
                pb.update(task, completed=i + 1, info=f"loss {losses[-1][1]:.4g}")
    return rebuild(params), losses


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


def train_online(closure, lo, ds, *, steps: int = 200, horizon: int = 4, batch: int = 2, lr: float = 1e-4,
                 key=None, log_every: int = 10, spectrum_weight: float = 0.0, progress: bool = False):
    """Train the closure through rollouts of the low-resolution model (Adam, gradient through the solver).

    Each sample starts at a coarse-grained high-resolution snapshot ``q_bar(t_i)`` and is rolled out ``horizon``
    snapshot intervals; the loss is :func:`online_loss` against ``q_bar(t_{i+1..i+horizon})`` plus
    ``spectrum_weight`` times :func:`spectrum_loss` between all rolled-out and all reference states of the batch.
    The snapshot spacing and timestep come from the dataset (``save_every`` steps of ``dt``). Returns
    ``(closure, losses)``.
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
    starts = q.shape[0] - horizon
    opt = optax.adam(lr)
    params, static = eqx.partition(closure.net, eqx.is_inexact_array)  # only the network's weights are trained
    state = opt.init(params)

    def rebuild(p):
        return eqx.tree_at(lambda c: c.net, closure, eqx.combine(p, static))

    var = jnp.var(q, axis=(0, 2, 3))[:, None, None]

    def loss_fn(p, idx):
        c = rebuild(p)
        segs = jax.vmap(lambda i: jax.lax.dynamic_slice_in_dim(q, i, horizon + 1))(idx)
        pred = jax.vmap(lambda s: online_rollout(c, lo, s, dt, save_every))(segs)
        loss = jnp.mean((pred - segs[:, 1:]) ** 2 / var)
        if spectrum_weight:
            loss = loss + spectrum_weight * spectrum_loss(lo, pred, segs[:, 1:])
        return loss

    @jax.jit
    def step(p, s, idx):
        loss, g = jax.value_and_grad(loss_fn)(p, idx)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    losses = []
    with progress_bar(progress) as pb:
        task = pb.add_task("online training", total=steps, info="")
        for i in range(steps):
            key, k = jax.random.split(key)
            idx = jax.random.randint(k, (batch,), 0, starts)
            params, state, loss = step(params, state, idx)
            if i % log_every == 0 or i == steps - 1:
                losses.append((i, _finite_loss(loss, i, "online training")))
                pb.update(task, completed=i + 1, info=f"loss {losses[-1][1]:.4g}")
    return rebuild(params), losses

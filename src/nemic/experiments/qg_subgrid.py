"""The ocean subgrid-parameterization benchmark of Ross et al. (2023) on nemic's two-layer QG model.

Recipe (each step a function here and a ``nemic qg`` command):

1. :func:`generate`: spin up the high-resolution model of a configuration, coarse-grain snapshots with the three
   operators and write CF netCDF files ``hires.nc``, ``op1.nc``, ``op2.nc``, ``op3.nc`` (coarse PV and the
   ``q_subgrid_forcing`` / ``q_forcing_total`` targets) plus ``generate.json``.
2. :func:`train_offline` / :func:`train_online`: fit a CNN closure on the forcing targets (offline) or through
   rollouts of the low-resolution model against coarse-grained high-resolution trajectories (online).
3. :func:`evaluate`: free runs of the low-resolution model with each closure, scored by the similarity
   ``1 - D(param, HR) / D(LR, HR)`` (Ross et al. 2023, eq. 9) over spectra, energy-budget terms and marginal
   distributions, written to ``metrics.json`` and PNG figures.

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

from nemic.core.errors import ConfigError
from nemic.core.output import ensure_writable_dir, to_xarray, write_json, write_netcdf
from nemic.core.progress import progress_bar
from nemic.data.coarsen import OPERATORS, Coarsener, forcing_dataset
from nemic.models.qg import SECONDS_PER_YEAR, get_config


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
    state0 = hi.random_state(jax.random.key(seed)) if q0 is None else hi.initial_state(q0)
    traj = hi.run(state0, dt=dt, n_steps=n_total, save_every=save_every, progress=progress and "spin-up")
    wall = time.perf_counter() - t0
    keep = np.asarray(traj.t) >= spinup_years * SECONDS_PER_YEAR - 1e-6
    t = np.asarray(traj.t)[keep]
    q = np.asarray(traj.states.q)[keep]
    attrs = {"config": config, "dt": dt, "years": years, "spinup_years": spinup_years, "seed": seed}
    files = {}
    if write_hires:
        ds = to_xarray(traj.take(len(traj)), attrs={**attrs, **{f"hi_{k}": v for k, v in hi.params().items()}})
        files["hires"] = str(write_netcdf(ds, out / "hires.nc"))
    for op in operators:
        ds = forcing_dataset(Coarsener(hi, lo, op), t, q, attrs=attrs)
        files[op] = str(write_netcdf(ds, out / f"{op}.nc"))
    summary = {"config": config, "years": years, "steps": n_total, "dt": dt, "nx_hi": nx_hi, "nx_lo": nx_lo,
               "snapshots": int(keep.sum()), "wall_s": wall, "ms_per_step": 1e3 * wall / n_total,
               "files": files}
    write_json(summary, out / "generate.json")
    return summary


# ====================================================================== data
def last_snapshot(path: str | Path) -> np.ndarray:
    """The last PV snapshot (2, ny, nx) of a ``hires.nc`` written by :func:`generate` (to restart a run)."""
    import xarray as xr

    from nemic.core.errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(f"restart file '{path}' does not exist")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        if "q" not in ds or ds["q"].ndim != 4:
            raise DataError(f"restart file '{path}' has no variable q (time, lev, y, x)")
        return np.asarray(ds["q"].isel(time=-1).values)


def load_dataset(data_dir: str | Path, operator: str = "op1"):
    """Open ``DIR/<operator>.nc`` (checked for the required variables) and rebuild the low-resolution model.

    Returns ``(ds, lo)``.
    """
    from nemic.data.coarsen import load_forcing_dataset

    if operator not in OPERATORS:
        raise ConfigError(f"unknown coarse-graining operator {operator!r}; choose one of {list(OPERATORS)}")
    ds = load_forcing_dataset(Path(data_dir) / f"{operator}.nc")
    return ds, model_from_attrs(ds.attrs, "lo", Path(data_dir) / f"{operator}.nc")


def model_from_attrs(attrs, prefix: str, path):
    """Rebuild the :class:`~nemic.models.qg.TwoLayerQG` whose parameters a dataset stores as ``<prefix>_<name>``
    attributes (as :func:`generate` writes them); ``DataError`` naming ``path`` if one is missing."""
    from nemic.core.errors import DataError
    from nemic.models.qg import TwoLayerQG

    a = attrs
    try:
        return TwoLayerQG(nx=int(a[f"{prefix}_nx"]), ny=int(a[f"{prefix}_ny"]), L=float(a[f"{prefix}_L"]),
                          W=float(a[f"{prefix}_W"]),
                          **{k: float(a[f"{prefix}_{k}"]) for k in ("rek", "beta", "rd", "delta", "H1", "U1", "U2",
                                                                      "filterfac")})
    except KeyError as e:
        raise DataError(f"dataset '{path}' lacks the model attribute {e.args[0]!r}") from None


def load_hires(data_dir: str | Path, t_start: float = 0.0):
    """High-resolution PV snapshots at times >= ``t_start`` (s) from ``DIR/hires.nc`` and the model that made them.

    Returns ``(q (n, 2, ny, nx), hi)``. Raises ``DataError`` when the file or its variables are missing.
    """
    import xarray as xr

    from nemic.core.errors import DataError

    path = Path(data_dir) / "hires.nc"
    if not path.exists():
        raise DataError(f"'{path}' does not exist (written by `nemic qg generate` unless write_hires=False); "
                        "use target='coarse' to score against the coarse-grained data only")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        if "q" not in ds or ds["q"].ndim != 4:
            raise DataError(f"'{path}' has no variable q (time, lev, y, x)")
        hi = model_from_attrs(ds.attrs, "hi", path)
        keep = np.asarray(ds["time"].values, dtype=float) >= t_start - 1e-6
        q = np.asarray(ds["q"].values[keep])
    if q.shape[0] == 0:
        raise DataError(f"'{path}' has no snapshot at or after t = {t_start:g} s")
    return q, hi


def scales(ds) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer standard deviations (2,) of ``q`` and ``q_subgrid_forcing`` (normalisation of the CNN)."""
    q = ds["q"].values
    s = ds["q_subgrid_forcing"].values
    return q.std(axis=(0, 2, 3)), s.std(axis=(0, 2, 3))


# ====================================================================== closures on disk
def make_cnn_closure(in_scale, out_scale, *, widths=(64, 64, 32, 32), kernel_sizes=None, key=None,
                     zero_init_last: bool = False):
    """A :class:`~nemic.processes.qg_closures.CNNClosure` around a zero-mean :class:`~nemic.nn.conv.CircularCNN`."""
    from nemic.nn.conv import CircularCNN
    from nemic.processes.qg_closures import CNNClosure

    key = jax.random.key(0) if key is None else key
    net = CircularCNN(2, 2, widths=tuple(widths), kernel_sizes=None if kernel_sizes is None else tuple(kernel_sizes),
                      zero_mean=True, zero_init_last=zero_init_last, key=key)
    return CNNClosure(net, in_scale, out_scale)


def save_closure(closure, hyper: dict, out: str | Path) -> Path:
    """Save a CNN closure: ``closure.eqx`` (``eqx.tree_serialise_leaves``) + ``closure.json`` (hyperparameters)."""
    import equinox as eqx

    from nemic.core.output import atomic_write

    out = ensure_writable_dir(out)
    leaves = [x for x in jax.tree_util.tree_leaves(closure) if eqx.is_inexact_array(x)]
    hyper = {**hyper, "dtype": jnp.dtype(leaves[0].dtype).name}
    atomic_write(out / "closure.eqx", lambda tmp: eqx.tree_serialise_leaves(tmp, closure))
    write_json(hyper, out / "closure.json")
    return out


def load_closure(path: str | Path):
    """Load a closure saved by :func:`save_closure` (directory holding closure.json and closure.eqx)."""
    import equinox as eqx

    from nemic.core.errors import DataError

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
    from nemic.train.loop import TrainingDivergedError

    loss = float(loss)
    if not np.isfinite(loss):
        raise TrainingDivergedError(f"{what}: loss became {loss} at step {step}; lower the learning rate")
    return loss


def train_offline(closure, ds, *, steps: int = 1000, batch: int = 16, lr: float = 1e-3, key=None,
                  target: str = "q_subgrid_forcing", log_every: int = 50, progress: bool = False):
    """Fit the closure's network to the forcing targets (normalised MSE), Adam; returns ``(closure, losses)``.

    Loss: ``mean(((net(q / s_q) - S / s_S))^2)`` with the closure's scales; the targets come from the dataset.
    """
    import equinox as eqx
    import optax

    from nemic.models.qg.model import QGState

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
        pred = jax.vmap(lambda x: c.tendency(QGState(q=x), 0.0).q)(qb)
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
    from nemic.core.rollout import rollout
    from nemic.models.qg.model import QGState

    n = (q_ref.shape[0] - 1) * save_every
    tr = rollout(lo + closure, lo.stepper(), QGState(q=q_ref[0]), dt=dt, n_steps=n, save_every=save_every,
                 checkpoint=True, detect_blowup=False)
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
    from nemic.models.qg import diagnostics as dg

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
    import equinox as eqx
    import optax

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


# ====================================================================== evaluation
def wasserstein1(a, b, presorted: bool = False) -> float:
    """First Wasserstein distance between the empirical distributions of samples ``a`` and ``b`` (1-D).

    ``W1 = int_0^1 |F_a^-1(p) - F_b^-1(p)| dp`` evaluated with the exact empirical quantile functions on a merged
    grid (Villani 2009, Optimal Transport, Remark 2.19); same units as the samples. ``presorted``: ``a`` and ``b``
    are already sorted 1-D arrays (saves the sorts for the millions of samples of a high-resolution run).
    """
    if not presorted:
        a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size > b.size:
        a, b = b, a
    if b.size % a.size == 0:  # a's quantile steps are a subset of b's: the merged grid is b's
        return float(np.mean(np.abs(np.repeat(a, b.size // a.size) - b)))
    p = np.union1d(np.arange(1, a.size) / a.size, np.arange(1, b.size) / b.size)
    p = np.concatenate([[0.0], p, [1.0]])
    mid = (p[:-1] + p[1:]) / 2
    qa = a[np.minimum((mid * a.size).astype(int), a.size - 1)]
    qb = b[np.minimum((mid * b.size).astype(int), b.size - 1)]
    return float(np.sum(np.abs(qa - qb) * np.diff(p)))


def resolved_kmax(lo) -> float:
    """Largest wavenumber (rad/m) the spectral distances use: where the model's exponential filter starts
    (``kappa* = 0.65 pi``, about 2/3 of the Nyquist wavenumber), as in the benchmark's ``spectral_rmse``."""
    return float(0.65 * np.pi / max(lo.dx, lo.dy))


def summarize(lo, q, closure=None) -> dict:
    """Time-mean spectra, budget terms and pooled samples of low-resolution PV ``q`` (n, 2, ny, nx).

    With a ``closure`` (the Process added to ``lo`` in the run that produced ``q``), its contributions to the KE
    and APE fluxes (:func:`nemic.models.qg.diagnostics.parameterization_energy_flux`) are added to ``KEflux`` and
    ``APEflux``, as the benchmark does (Ross et al. 2023, section 3.3).
    """
    out = {k: np.asarray(v) for k, v in _summarize(lo, jnp.asarray(q), closure).items()}
    for k in DISTRIBUTION_METRICS:  # pooled samples, sorted once for the Wasserstein distances
        out[k] = np.sort(out[k].ravel())
    out["kmax"] = resolved_kmax(lo)
    return out


@eqx.filter_jit
def _summarize(lo, q, closure):
    from nemic.models.qg import diagnostics as dg
    from nemic.models.qg.model import QGState

    ke = jax.lax.map(lambda x: dg.ke_spectrum(lo, x)[1], q).mean(0)
    ens = jax.lax.map(lambda x: dg.enstrophy_spectrum(lo, x)[1], q).mean(0)

    def budget(x):
        b = {k: v for k, v in dg.energy_budget(lo, x).items() if k != "kr"}
        if closure is not None:
            dq = closure.tendency(QGState(q=x), 0.0).q
            p = dg.parameterization_energy_flux(lo, x, dq)
            b["KEflux"] = b["KEflux"] + p["KEflux"]
            b["APEflux"] = b["APEflux"] + p["APEflux"]
        return b

    bud = jax.lax.map(budget, q)
    kr = jnp.asarray(dg.ke_spectrum(lo, q[0])[0])
    _, _, wv2 = lo.grid(q.dtype)

    def fields(x):
        ph = lo.invert(lo.fft(x))
        u, v = lo.velocities(ph)
        return u, v, lo.ifft(-wv2 * ph)

    u, v, xi = jax.lax.map(fields, q)
    out = {"kr": kr, "KEspec1": ke[0], "KEspec2": ke[1], "Ensspec1": ens[0], "Ensspec2": ens[1]}
    out.update({k: bud[k].mean(0) for k in ("KEflux", "APEflux", "APEgenspec", "KEfrictionspec")})
    for i in (0, 1):
        out[f"q{i + 1}"] = q[:, i]
        out[f"u{i + 1}"] = u[:, i]
        out[f"v{i + 1}"] = v[:, i]
        out[f"KE{i + 1}"] = (u[:, i] ** 2 + v[:, i] ** 2) / 2
        out[f"Ens{i + 1}"] = xi[:, i] ** 2
    return out


SPECTRAL_METRICS = ("KEspec1", "KEspec2", "Ensspec1", "Ensspec2", "KEflux", "APEflux", "APEgenspec",
                    "KEfrictionspec")
DISTRIBUTION_METRICS = ("q1", "q2", "u1", "u2", "v1", "v2", "KE1", "KE2", "Ens1", "Ens2")


def distances(a: dict, b: dict) -> dict:
    """Distance per metric between two :func:`summarize` results.

    Spectra and budget terms: RMS difference of the time-mean isotropic curves over the resolved wavenumbers
    ``kr < kmax`` (:func:`resolved_kmax`, the smaller of the two); marginal distributions (PV, velocities, kinetic
    energy and squared relative vorticity of each layer, pooled over space and time): Wasserstein-1 distance. As
    the benchmark's ``diagnostic_differences`` (Ross et al. 2023, section 3.3). The two summaries may come from
    different resolutions of the same domain (their shells then coincide below kmax).
    """
    kmax = min(a.get("kmax", np.inf), b.get("kmax", np.inf))
    sa, sb = np.asarray(a["kr"]) < kmax, np.asarray(b["kr"]) < kmax
    if sa.sum() != sb.sum() or not np.allclose(np.asarray(a["kr"])[sa], np.asarray(b["kr"])[sb]):
        raise ConfigError("the two summaries have different wavenumber shells below kmax (different domains?)")
    d = {k: float(np.sqrt(np.mean((a[k][sa] - b[k][sb]) ** 2))) for k in SPECTRAL_METRICS}
    d.update({k: wasserstein1(a[k], b[k], presorted=True) for k in DISTRIBUTION_METRICS})
    return d


def similarity(param: dict, low: dict, high: dict, low_distances: dict | None = None) -> dict:
    """Similarity ``1 - D(param, HR) / D(LR, HR)`` per metric (Ross et al. 2023, eq. 9), with mean and minimum.

    1 means the parameterized run matches the high-resolution run, 0 means no better than the unparameterized
    low-resolution run, negative means worse. ``low_distances``: ``distances(low, high)`` if already computed.
    """
    dp = distances(param, high)
    dl = distances(low, high) if low_distances is None else low_distances
    s = {k: 1.0 - dp[k] / dl[k] if dl[k] > 0 else float("nan") for k in dp}
    vals = [v for v in s.values() if np.isfinite(v)]
    return {"per_metric": s, "mean": float(np.mean(vals)), "min": float(np.min(vals))}


def run_closure(lo, closure, q0, *, dt: float, n_steps: int, save_every: int, spinup_steps: int = 0,
                return_blowup: bool = False):
    """Free run of ``lo (+ closure)`` from ``q0``; returns the saved PV (n, 2, ny, nx) after ``spinup_steps``
    (and, with ``return_blowup``, the blow-up message or None). A run that blows up is scored on the part before
    the blow-up."""
    import warnings

    from nemic.core.errors import BlowUpError
    from nemic.models.qg.model import QGState

    blew = None
    try:
        tr = lo.run(QGState(q=jnp.asarray(q0)), dt=dt, n_steps=n_steps, save_every=save_every, extra=closure)
    except BlowUpError as e:
        warnings.warn(f"run blew up ({e}); scoring the part before the blow-up", RuntimeWarning, stacklevel=2)
        tr, blew = e.trajectory, str(e)
    keep = np.asarray(tr.t) >= spinup_steps * dt
    q = np.asarray(tr.states.q)[keep]
    return (q, blew) if return_blowup else q


def start_indices(n_snapshots: int, n_runs: int) -> list[int]:
    """Indices of ``n_runs`` starting snapshots spread evenly over a dataset of ``n_snapshots``."""
    if n_runs < 1:
        raise ConfigError(f"the number of free runs must be >= 1, got {n_runs}")
    return sorted({int(i) for i in np.linspace(0, n_snapshots - 1, n_runs + 1)[:-1].round()})


def evaluate(data_dir: str | Path, closures: dict, out: str | Path, *, operator: str = "op1",
             n_steps: int | None = None, save_every: int | None = None, spinup_steps: int = 0, n_runs: int = 1,
             target: str = "hires", plots: bool = True, progress: bool = False) -> dict:
    """Score closures against the coarse-grained high-resolution data with the benchmark's similarity metrics.

    Args:
        data_dir: directory written by :func:`generate`.
        closures: ``{name: Process or None}`` (None: the unparameterized model, always added as "low_res").
        out: output directory (``metrics.json``, ``spectra.png``, ``snapshots.png``).
        n_steps, save_every: length and sampling of each free run (default: the dataset's span and spacing).
        spinup_steps: steps discarded at the start of each free run.
        n_runs: free runs per closure (an ensemble), started from coarse-grained high-resolution snapshots
            spread over the dataset; their kept snapshots are pooled (the benchmark averages over runs too).
        target: "hires" (the benchmark's choice): the high-resolution run itself, its spectra and energy budget
            on its own grid (compared over the low-resolution model's resolved wavenumbers; its fluxes include the
            transfer by the scales the coarse model lacks, which the closures' flux contributions stand for) and
            its full-resolution fields' distributions; "coarse": the coarse-grained snapshots of ``operator``
            analysed with the low-resolution model.
    """
    ds, lo = load_dataset(data_dir, operator)
    dt = float(ds.attrs["dt"])
    t = np.asarray(ds["time"].values, dtype=float)
    if save_every is None:
        save_every = int(round((t[1] - t[0]) / dt)) if t.size > 1 else 1
    if n_steps is None:
        n_steps = int(round((t[-1] - t[0]) / dt)) or save_every
    n_steps -= n_steps % save_every
    if spinup_steps >= n_steps:
        raise ConfigError(f"spinup_steps ({spinup_steps}) must be shorter than the runs ({n_steps} steps)")
    if target not in ("hires", "coarse"):
        raise ConfigError(f"target must be 'hires' or 'coarse', got {target!r}")
    out = ensure_writable_dir(out)
    q_hr = ds["q"].values
    if target == "hires":
        q_hi, hi = load_hires(data_dir, float(t[0]))
        high = summarize(hi, q_hi)
        high["kmax"] = resolved_kmax(lo)
        del q_hi
    else:
        high = summarize(lo, q_hr)
    starts = start_indices(q_hr.shape[0], n_runs)
    runs, summ, info = {}, {}, {}
    for name, c in {"low_res": None, **closures}.items():
        t0 = time.perf_counter()
        parts, blowups = [], []
        for i in starts:
            q, blew = run_closure(lo, c, q_hr[i], dt=dt, n_steps=n_steps, save_every=save_every,
                                  spinup_steps=spinup_steps, return_blowup=True)
            parts.append(q)
            if blew:
                blowups.append(blew)
            if progress:
                print(f"  {name}: run from snapshot {i} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        runs[name] = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else parts[0]
        summ[name] = summarize(lo, runs[name], c)
        info[name] = {"wall_s": time.perf_counter() - t0, "blowups": blowups, "snapshots": int(len(runs[name]))}
    metrics = {"operator": operator, "config": ds.attrs.get("config"), "nx_lo": lo.nx, "n_steps": n_steps,
               "save_every": save_every, "spinup_steps": spinup_steps, "n_runs": len(starts), "dt": dt,
               "start_snapshots": starts, "hr_snapshots": int(q_hr.shape[0]), "target": target,
               "resolved_kmax": resolved_kmax(lo), "runs": info,
               "distances_low_res": distances(summ["low_res"], high), "closures": {}}
    for name in closures:
        metrics["closures"][name] = similarity(summ[name], summ["low_res"], high, metrics["distances_low_res"])
    write_json(metrics, out / "metrics.json")
    if plots:
        _plots(out, high, summ, runs, q_hr)
    return metrics


def similarity_table(eval_dirs: Sequence[str | Path]) -> str:
    """Markdown table of the similarity scores (mean / min) of the closures in several :func:`evaluate` outputs.

    One column per configuration and protocol (evaluations that share them, e.g. new closures scored later with the
    same settings, whose deterministic uncorrected runs are identical, are merged), one row per closure.
    """
    from nemic.core.errors import DataError

    cols, rows = [], {}
    for d in eval_dirs:
        path = Path(d) / "metrics.json"
        if not path.exists():
            raise DataError(f"'{path}' does not exist (written by `nemic qg evaluate`)")
        m = json.loads(path.read_text())
        title = f"{m.get('config')} ({m.get('n_runs', 1)} x {m['n_steps'] * m['dt'] / 86400:.0f} d)"
        if title not in cols:  # evaluations of the same configuration and protocol share a column
            cols.append(title)
        for name, c in m["closures"].items():
            rows.setdefault(name, {})[title] = f"{c['mean']:+.2f} / {c['min']:+.2f}"
    lines = ["| closure | " + " | ".join(f"{c}: mean / min" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(vals.get(c, "-") for c in cols) + " |")
    return "\n".join(lines)


def _plots(out: Path, high: dict, summ: dict, runs: dict, q_hr) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, key, title in zip(axes, ("KEspec1", "KEspec2", "Ensspec1", "KEflux"),
                              ("upper-layer KE spectrum", "lower-layer KE spectrum", "upper-layer enstrophy spectrum",
                               "KE flux (+ closure's), m2 s-3 per rad/m")):
        plot = ax.semilogx if key == "KEflux" else ax.loglog
        val = (lambda v: v) if key == "KEflux" else np.abs
        plot(high["kr"], val(high[key]), "k", lw=2, label="high res")
        for name, s in summ.items():
            plot(s["kr"], val(s[key]), label=name)
        ax.axvline(high["kmax"], color="0.6", ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("isotropic wavenumber (rad/m)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "spectra.png", dpi=100)
    plt.close(fig)
    names = ["hr_coarse"] + list(runs)
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3))
    fields = [q_hr[-1, 0]] + [runs[n][-1, 0] for n in runs]
    vmax = float(np.max(np.abs(fields[0])))
    for ax, name, f in zip(np.atleast_1d(axes), names, fields):
        ax.imshow(f, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name}: q1 (last)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "snapshots.png", dpi=100)
    plt.close(fig)

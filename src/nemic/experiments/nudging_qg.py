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
4. climate: the low-resolution model run free ``free_years`` years with and without the correction, compared with
   the coarse-grained high-resolution climate stored in the directory's ``op1.nc`` (the long ``generate`` run):
   time-mean total (layer-weighted) and per-layer kinetic energy, enstrophy, KE spectra, and the benchmark's
   similarity score (:func:`nemic.experiments.qg_subgrid.similarity`, Ross et al. 2023, eq. 9).

Outputs: ``metrics.json``, ``nudged_run.nc``, ``free_runs.nc``, ``ke_spectra.png``, ``energy_series.png``,
``nudging_tendency.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_int_at_least, check_positive
from nemic.core.output import ensure_writable_dir, write_json, write_netcdf
from nemic.core.rollout import Trajectory

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
    slower on CPU).
    """

    days: float = 180.0
    dt: float = 3600.0
    save_hours: float = 6.0
    tau_days: float = 3.0
    spectral_cutoff: int | None = None
    discard_days: float = 5.0
    holdout: float = 0.2
    widths: tuple = (16, 16)
    kernel_sizes: tuple | None = (5, 3, 3)
    train_steps: int = 800
    batch: int = 16
    lr: float = 1e-3
    free_years: float = 2.0
    free_save_days: float = 5.0
    free_spinup_days: float = 180.0
    net_float32: bool = True
    seed: int = 0

    def __post_init__(self):
        for n in ("days", "dt", "save_hours", "tau_days", "lr", "free_years", "free_save_days"):
            check_positive(n, getattr(self, n))
        for n in ("discard_days", "free_spinup_days"):
            check_positive(n, getattr(self, n), allow_zero=True)
        check_int_at_least("train_steps", self.train_steps, 1)
        check_int_at_least("batch", self.batch, 1)
        if self.spectral_cutoff is not None:
            check_int_at_least("spectral_cutoff", self.spectral_cutoff, 0)
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
                   train_steps=3, batch=4, free_years=6 / 360, free_save_days=1.0, free_spinup_days=1.0)


class Float32Net(eqx.Module):
    """Evaluates ``net`` in float32 (weights cast at construction): input cast down, output returned in float32.

    Shapes are those of ``net``; the caller casts the output back (``CNNClosure`` does). Gradients flow through
    the casts.
    """

    net: Any

    def __init__(self, net: Any):
        self.net = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, net)

    def __call__(self, x):
        return self.net(x.astype(jnp.float32))


# ====================================================================== data
def load_generated(data_dir: str | Path) -> dict[str, Any]:
    """Read a ``nemic qg generate`` directory: the restart PV, the models and the coarse-grained climate.

    Returns ``{"q_restart": (2, nx_hi, nx_hi), "t_restart": s, "hi": TwoLayerQG, "lo": TwoLayerQG,
    "climate": (n, 2, nx_lo, nx_lo) op1 PV, "config": name}``. Raises :class:`DataError` for missing files or
    inconsistent resolutions.
    """
    import xarray as xr

    from nemic.experiments.qg_subgrid import load_dataset
    from nemic.models.qg import get_config

    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"'{d}' is not a directory written by `nemic qg generate`")
    for f in ("hires.nc", "op1.nc"):
        if not (d / f).exists():
            raise DataError(f"'{d}' lacks {f}; run `nemic qg generate` with the high-resolution output and op1")
    with xr.open_dataset(d / "hires.nc", engine="h5netcdf") as ds:
        if "q" not in ds or ds["q"].ndim != 4:
            raise DataError(f"'{d / 'hires.nc'}' has no variable q (time, lev, y, x)")
        q_restart = np.asarray(ds["q"].isel(time=-1).values)
        t_restart = float(ds["time"].values[-1])
        config = str(ds.attrs.get("config", "eddy"))
    ds_lo, lo = load_dataset(d, "op1")
    if config != str(ds_lo.attrs.get("config", config)):
        raise DataError(f"hires.nc ({config}) and op1.nc ({ds_lo.attrs.get('config')}) hold different configurations")
    hi = get_config(config, int(q_restart.shape[-1]))
    if q_restart.shape != (2, hi.ny, hi.nx) or hi.nx % lo.nx or hi.nx <= lo.nx:
        raise DataError(f"restart PV has shape {q_restart.shape}; it must be (2, n, n) with n a larger multiple of "
                        f"the op1 resolution {lo.nx}")
    if not np.all(np.isfinite(q_restart)):
        raise DataError(f"the last state of '{d / 'hires.nc'}' is not finite")
    return {"q_restart": q_restart, "t_restart": t_restart, "hi": hi, "lo": lo,
            "climate": np.asarray(ds_lo["q"].values), "config": config}


def reference_run(hi, lo, q0, *, dt: float, n_steps: int, save_every: int, progress: bool | str = False) -> Trajectory:
    """Run ``hi`` from ``q0`` and coarse-grain every saved state with op1 to ``lo``'s grid (times start at 0)."""
    from nemic.data.coarsen import Coarsener
    from nemic.models.qg.model import QGState

    traj = hi.run(QGState(q=jnp.asarray(q0)), dt=dt, n_steps=n_steps, save_every=save_every, progress=progress)
    if int(traj.blowup_step) >= 0:
        raise DataError(f"the high-resolution reference run blew up after {int(traj.blowup_step)} steps")
    coarsen = eqx.filter_jit(lambda c, x: jax.vmap(c.coarsen)(x))
    op = Coarsener(hi, lo, "op1")
    qbar = jnp.concatenate([coarsen(op, c) for c in jnp.array_split(traj.states.q, max(1, len(traj) // 64))])
    return Trajectory(t=traj.t, states=QGState(q=qbar), blowup_step=traj.blowup_step)


def climate_stats(lo, q) -> dict[str, np.ndarray]:
    """Per-snapshot total KE (layer-weighted), KE of each layer and enstrophy of PV ``q`` (n, 2, ny, nx).

    Returns ``{"KE": (n,), "KE1": (n,), "KE2": (n,), "enstrophy": (n,)}`` in m^2 s^-2 and s^-2 (definitions of
    :mod:`nemic.models.qg.diagnostics`; layer KE is the domain mean of ``|u_i|^2 / 2``).
    """
    return {k: np.asarray(v) for k, v in _climate_stats(lo, jnp.asarray(q)).items()}


@eqx.filter_jit
def _climate_stats(lo, q):
    from nemic.models.qg import diagnostics as dg

    def one(x):
        u, v = lo.velocities(lo.invert(lo.fft(x)))
        ke_l = jnp.mean(u**2 + v**2, axis=(-2, -1)) / 2
        return {"KE": dg.kinetic_energy(lo, x), "KE1": ke_l[0], "KE2": ke_l[1], "enstrophy": dg.enstrophy(lo, x)}

    return jax.vmap(one)(q)


# ====================================================================== the recipe
def run(data_dir: str | Path, cfg: NudgingQGConfig = NudgingQGConfig(), out: str | Path = "runs/nudging_qg", *,
        progress: bool = False, log=print) -> dict[str, Any]:
    """Run the recipe on the ``nemic qg generate`` directory ``data_dir``; write results into ``out``.

    Returns the metrics (also written to ``metrics.json``).
    """
    import xarray as xr

    from nemic.experiments.qg_subgrid import make_cnn_closure, run_closure, similarity, summarize, train_offline
    from nemic.models.qg.model import QGState
    from nemic.processes.nudging import Nudging, nudged_run, nudging_dataset

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    data = load_generated(data_dir)
    out = ensure_writable_dir(out)
    hi, lo, dt = data["hi"], data["lo"], cfg.dt
    every = int(round(cfg.save_hours * 3600.0 / dt))
    n_steps = int(round(cfg.days * DAY / dt))
    n_steps -= n_steps % every
    if n_steps < 2 * every:
        raise ConfigError(f"days ({cfg.days}) must span at least two reference snapshots of {cfg.save_hours} h")

    log(f"[1/4] reference: {hi.nx}-point {data['config']} model from the restart, {cfg.days:g} days, "
        f"coarse-grained (op1) to {lo.nx} points")
    t0 = time.perf_counter()
    ref = reference_run(hi, lo, data["q_restart"], dt=dt, n_steps=n_steps, save_every=every,
                        progress=progress and "reference")
    timings["reference_s"] = time.perf_counter() - t0

    log(f"[2/4] {lo.nx}-point model nudged toward it (tau = {cfg.tau_days:g} days"
        + (f", spectral cutoff {cfg.spectral_cutoff})" if cfg.spectral_cutoff is not None else ")"))
    t0 = time.perf_counter()
    nud = Nudging(ref, {"q": cfg.tau_days * DAY}, spectral_cutoff=cfg.spectral_cutoff, spectral_axes=(-2, -1))
    state0 = QGState(q=ref.states.q[0])
    nrun = nudged_run(lo, nud, lo.stepper(), state0, dt=dt, n_steps=n_steps, save_every=every,
                      progress=progress and "nudged")
    if int(nrun.trajectory.blowup_step) >= 0:
        raise DataError(f"the nudged run blew up after {int(nrun.trajectory.blowup_step)} steps")
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

    log("[3/4] CNN fitted offline: nudged PV -> nudging tendency")
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
    predict = eqx.filter_jit(lambda c, x: jax.vmap(lambda y: c.tendency(QGState(q=y), 0.0).q)(x))
    pred = np.asarray(predict(closure, jnp.asarray(q_n[i1:])))
    resid = ((pred - N[i1:]) ** 2).mean(axis=(0, 2, 3))
    r2 = 1 - resid / N[i1:].var(axis=(0, 2, 3))
    timings["training_s"] = time.perf_counter() - t0

    log(f"[4/4] free runs of {cfg.free_years:g} years with and without the correction")
    t0 = time.perf_counter()
    f_every = max(1, int(round(cfg.free_save_days * DAY / dt)))
    f_steps = int(round(cfg.free_years * 360 * DAY / dt))
    f_steps -= f_steps % f_every
    spin = int(round(cfg.free_spinup_days * DAY / dt))
    q0 = q_ref[-1]
    runs = {"low_res": run_closure(lo, None, q0, dt=dt, n_steps=f_steps, save_every=f_every, spinup_steps=spin),
            "nudging_corrected": run_closure(lo, closure, q0, dt=dt, n_steps=f_steps, save_every=f_every,
                                             spinup_steps=spin)}
    timings["free_runs_s"] = time.perf_counter() - t0
    climate = data["climate"]
    stats = {"hr_coarse": climate_stats(lo, climate), **{k: climate_stats(lo, v) for k, v in runs.items()}}
    summ = {"hr_coarse": summarize(lo, climate), **{k: summarize(lo, v) for k, v in runs.items()}}

    metrics: dict[str, Any] = {
        "config": {**dataclasses.asdict(cfg), "data_dir": str(data_dir), "qg_config": data["config"],
                   "nx_hi": hi.nx, "nx_lo": lo.nx},
        "nudged_run": {"snapshots": n, "train_snapshots": i1 - i0, "holdout_snapshots": n - i1,
                       "relative_rms_distance_to_reference": tracking,
                       "nudging_tendency_std": [float(s) for s in out_scale],
                       "holdout_r2": [float(v) for v in r2], "final_train_loss": losses[-1][1]},
        "reference_climate": {k: float(v.mean()) for k, v in stats["hr_coarse"].items()},
        "models": {},
    }
    metrics["reference_climate"]["snapshots"] = int(climate.shape[0])
    for name in runs:
        m: dict[str, Any] = {"snapshots": int(runs[name].shape[0]),
                             "stable": bool(np.all(np.isfinite(runs[name])) and runs[name].shape[0] > 0
                                            and runs[name].shape[0] * f_every * dt
                                            >= f_steps * dt - spin * dt - 1e-6)}
        for k, v in stats[name].items():
            ref_mean = float(stats["hr_coarse"][k].mean())
            m[k] = float(v.mean())
            m[f"{k}_relative_bias"] = float(v.mean()) / ref_mean - 1.0
        for layer in ("1", "2"):
            a, b = np.abs(summ[name][f"KEspec{layer}"]), np.abs(summ["hr_coarse"][f"KEspec{layer}"])
            # resolved scales only: below 2/3 of the low-resolution Nyquist wavenumber (the filter acts above)
            ok = (a > 0) & (b > 0) & (summ["hr_coarse"]["kr"] <= (2 / 3) * np.pi * lo.nx / lo.L)
            m[f"KEspec{layer}_rms_log_error"] = float(np.sqrt(np.mean(np.log(a[ok] / b[ok]) ** 2)))
        metrics["models"][name] = m
    sim = similarity(summ["nudging_corrected"], summ["low_res"], summ["hr_coarse"])
    metrics["models"]["nudging_corrected"]["similarity"] = sim
    metrics["timings_s"] = timings
    _write_free_runs(out, lo, runs, f_every * dt, spin * dt)
    _plot(out, summ, stats, runs, f_every * dt, N, q_n, every * dt)
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(metrics, out / "metrics.json")
    return metrics


def _write_free_runs(out: Path, lo, runs: dict, save_dt: float, start: float) -> None:
    import xarray as xr

    ds = xr.Dataset(coords={"lev": ("lev", np.array([1, 2])),
                            "y": ("y", lo.y, {"units": "m"}), "x": ("x", lo.x, {"units": "m"})})
    for name, q in runs.items():
        t = start + save_dt * np.arange(q.shape[0])
        ds[f"q_{name}"] = xr.DataArray(q, dims=(f"time_{name}", "lev", "y", "x"),
                                       coords={f"time_{name}": (f"time_{name}", t, {"units": "s",
                                                                                     "standard_name": "time"})},
                                       attrs={"units": "s-1", "long_name": f"potential vorticity anomaly, {name}"})
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic", "title": "free runs of the low-resolution QG model"})
    write_netcdf(ds, out / "free_runs.nc")


def _plot(out: Path, summ: dict, stats: dict, runs: dict, save_dt: float, N, q_n, n_dt: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nemic.core.output import save_figure

    styles = {"hr_coarse": ("k-", "high res (op1)"), "low_res": ("C7--", "low res"),
              "nudging_corrected": ("C2-", "low res + nudging correction")}
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for ax, layer in zip(axs, ("1", "2")):
        for name, s in summ.items():
            st, lab = styles[name]
            ax.loglog(s["kr"], np.abs(s[f"KEspec{layer}"]), st, marker=".", label=lab)
        top = float(np.max(np.abs(summ["hr_coarse"][f"KEspec{layer}"])))
        ax.set(xlabel="isotropic wavenumber (rad/m)", ylabel="KE density (m^3 s^-2)", ylim=(1e-4 * top, None),
               title=f"layer {layer}: time-mean KE spectrum")
    axs[0].legend(fontsize=8)
    save_figure(fig, out / "ke_spectra.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in runs:
        st, lab = styles[name]
        ax.plot(np.arange(stats[name]["KE"].size) * save_dt / DAY, stats[name]["KE"], st, label=lab)
    ax.axhline(float(stats["hr_coarse"]["KE"].mean()), color="k", label="high res (op1), mean")
    ax.set(xlabel="days after spin-up", ylabel="KE (m^2 s^-2)", title="Total kinetic energy of the free runs")
    ax.legend(fontsize=8)
    save_figure(fig, out / "energy_series.png")

    fig, axs = plt.subplots(1, 3, figsize=(12, 3.6))
    i = N.shape[0] - 1
    for ax, f, title in zip(axs, (q_n[i, 0], N[i, 0], N[i, 1]),
                            ("nudged q, layer 1", "nudging tendency, layer 1", "nudging tendency, layer 2")):
        v = float(np.max(np.abs(f))) or 1.0
        im = ax.imshow(f, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set(title=title, xticks=[], yticks=[])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"end of the nudged run (t = {i * n_dt / DAY:.1f} days)")
    save_figure(fig, out / "nudging_tendency.png")


def config_from_file(path: str | Path | None, overrides: dict | None = None) -> NudgingQGConfig:
    """Read a TOML/JSON file of :class:`NudgingQGConfig` settings (see :func:`nemic.experiments.config.load_config`)."""
    from nemic.experiments.config import load_config

    return load_config(NudgingQGConfig, path, overrides)


__all__ = ["Float32Net", "NudgingQGConfig", "climate_stats", "config_from_file", "load_generated", "reference_run",
           "run"]

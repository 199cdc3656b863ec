"""Recipe ``nemic atmos run --years N``: long free runs of the global atmosphere, with the shipped hybrid.

The run integrates ``PrimitiveEquations`` (T21 L8, equidistant sigma, ``dt`` = 1800 s by default, dry-mass fixer
on) with one of three physics:

``hybrid``       the core + the column network (:func:`nemic.experiments.atmos_training.hybrid`, daily-mean
                 insolation on the calendar of the truth: time in seconds since 2000-01-01); by default the network
                 shipped in ``nemic/resources/atmosphere`` (trained offline on the SPEEDY aquaplanet truth);
``held-suarez``  Held & Suarez (1994) forcing;
``none``         the bare dynamical core (no physics: it never rains).

The hybrid's column physics is wrapped in :class:`~nemic.experiments.atmos_climate_fixers.GlobalBalance` and its
steps end with the :class:`~nemic.experiments.atmos_climate_fixers.NonNegativeHumidity` and
:class:`~nemic.experiments.atmos_climate_fixers.EnergyFixer` filters (each can be switched off).

It starts from a state of the SPEEDY truth (the shipped ``initial_state.nc``, the truth's equilibrated state of
2000-08-28 06:00, or any truth store / netCDF with T, u, v, q, ps) and runs in chunks of ``mean_days``
(one compiled rollout reused for every chunk), sampling every ``sample_hours``. Output, small even for decades:

* ``atmosphere.nc``: means over each chunk of ``air_temperature``, ``eastward_wind``, ``northward_wind``,
  ``specific_humidity`` on (time, level, lat, lon) and ``surface_air_pressure``, ``precipitation_flux`` on
  (time, lat, lon) (CF standard names, lat/lon in degrees; time = chunk centre in days since 2000-01-01);
* ``daily.nc``: every ``save_hours``, zonal means of T, u, q on (time, level, lat), the instantaneous
  precipitation on (time, lat, lon) and global means (T, column water, surface pressure, dry-air surface pressure,
  precipitation) - what ``nemic atmos evaluate`` reads;
* ``metrics.json`` (steps, wall time, drift of the global means) and ``global_mean.png``.

A blow-up stops the run with a one-line :class:`~nemic.core.errors.BlowUpError` naming the step (counted from the
start of the run) and the variable, after writing what was computed before it.
"""

from __future__ import annotations

import dataclasses
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import BlowUpError, ConfigError, DataError
from nemic.core.process import OncePerStep
from nemic.core.rollout import simulate
from nemic.core.steppers import IMEXSIL3, Filtered
from nemic.experiments.atmos_climate_fixers import EnergyFixer, GlobalBalance, NonNegativeHumidity
from nemic.data.atmosphere.dataset import check_truth, days_since_2000
from nemic.experiments.atmos_training import hybrid
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.output import save_figure, write_netcdf
from nemic.models.atmosphere import (AtmosphereFields, ColumnPhysics, HeldSuarez, PackedColumnFunction,
                                     PrimitiveEquations)
from nemic.train.checkpoint import load_module

__all__ = ["PHYSICS", "ClimateRunConfig", "shipped_dir", "load_initial_fields", "build_physics", "climate_stepper", "run_climate",
           "EPOCH"]

PHYSICS = ("hybrid", "held-suarez", "none")
COUPLINGS = ("stages", "split")
EPOCH = "days since 2000-01-01 00:00:00"
GRAVITY = 9.81


@dataclasses.dataclass(frozen=True)
class ClimateRunConfig:
    """Settings of a long run.

    Attributes:
        physics: ``hybrid``, ``held-suarez`` or ``none``.
        days: length [days] (``--years N`` gives ``365 N``; whole chunks of ``mean_days``).
        dt: time step [s]. mean_days: averaging window of ``atmosphere.nc`` and the compiled chunk [days].
        sample_hours: interval of the samples averaged [h]. save_hours: interval of ``daily.nc`` [h].
        weights: column network (``.eqx``; ``None`` = the shipped one). initial: initial state (truth store or
            netCDF; ``None`` = the shipped one). fix_dry_mass: hold the global dry mass fixed.
        clip_humidity: apply :class:`~nemic.experiments.atmos_climate_fixers.NonNegativeHumidity` after every step.
        global_balance: wrap the hybrid's column physics in
            :class:`~nemic.experiments.atmos_climate_fixers.GlobalBalance` (zero global-mean heating and moistening).
        energy_fixer: apply :class:`~nemic.experiments.atmos_climate_fixers.EnergyFixer` after every step (hybrid
            only).
        flush_chunks: write the files of the chunks done so far every this many chunks (0: only at the end).
        coupling: how the hybrid's column physics meets the dynamics: ``split`` (default; process splitting, as
            jcm couples SPEEDY's physics: applied once per physics step by forward Euler before the dynamics,
            :class:`~nemic.core.process.OncePerStep`; the shipped network was trained and selected for it) or
            ``stages`` (a term of the explicit part, evaluated at each of IMEX-SIL3's three explicit stages).
        physics_every: with ``split``: the physics step in dynamics steps (1: every step).
        snapshot_days: write the instantaneous states (T, u, v, q, ps) every this many days to ``states.nc``
            (0: none); a state of it can start another run (``initial``) or be labelled with SPEEDY's physics
            (``nemic atmos perturb --states``).
    """

    physics: str = "hybrid"
    days: float = 365.0
    dt: float = 1800.0
    mean_days: float = 30.0
    sample_hours: float = 6.0
    save_hours: float = 24.0
    weights: str | None = None
    initial: str | None = None
    fix_dry_mass: bool = True
    clip_humidity: bool = True
    global_balance: bool = True
    energy_fixer: bool = True
    flush_chunks: int = 3
    coupling: str = "split"
    physics_every: int = 1
    snapshot_days: float = 0.0

    def __post_init__(self):
        if self.physics not in PHYSICS:
            raise ConfigError(f"physics must be one of {', '.join(PHYSICS)}, got {self.physics!r}")
        if self.coupling not in COUPLINGS:
            raise ConfigError(f"coupling must be one of {', '.join(COUPLINGS)}, got {self.coupling!r}")
        if not (isinstance(self.physics_every, int) and self.physics_every >= 1):
            raise ConfigError(f"physics_every must be a whole number of steps >= 1, got {self.physics_every!r}")
        if self.physics_every > 1 and self.coupling != "split":
            raise ConfigError("physics_every > 1 needs coupling 'split'")
        if not (np.isfinite(self.snapshot_days) and self.snapshot_days >= 0
                and (self.snapshot_days * 24) % self.sample_hours == 0):
            raise ConfigError(f"snapshot_days must be 0 or a positive multiple of sample_hours "
                              f"({self.sample_hours} h), got {self.snapshot_days!r}")
        for k in ("days", "dt", "mean_days", "sample_hours", "save_hours"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ConfigError(f"{k} must be a positive number, got {v!r}")
        if (self.sample_hours * 3600) % self.dt:
            raise ConfigError(f"sample_hours ({self.sample_hours}) must be a whole number of steps of dt ({self.dt} s)")
        if self.save_hours % self.sample_hours:
            raise ConfigError(f"save_hours ({self.save_hours}) must be a multiple of sample_hours ({self.sample_hours})")
        if (min(self.mean_days, self.days) * 24) % self.save_hours:
            raise ConfigError(f"mean_days ({self.mean_days}) must be a whole number of save_hours ({self.save_hours})")

    @property
    def chunk_days(self) -> float:
        """Days per compiled chunk (``mean_days``, or the whole run when shorter)."""
        return min(self.mean_days, self.days)

    @property
    def n_chunks(self) -> int:
        """Number of chunks (the run is rounded to whole chunks, at least one)."""
        return max(1, int(round(self.days / self.chunk_days)))


def shipped_dir() -> Path:
    """The folder of the shipped hybrid (``nemic/resources/atmosphere``)."""
    return Path(str(resources.files("nemic").joinpath("resources", "atmosphere")))


def _days(ds: xr.Dataset) -> np.ndarray:
    """The dataset's times as days since 2000-01-01 (:func:`nemic.data.atmosphere.dataset.days_since_2000`)."""
    return days_since_2000(ds["time"].values)


def load_initial_fields(path: str | Path | None, model: PrimitiveEquations, index: int = 0
                        ) -> tuple[AtmosphereFields, float]:
    """The initial nodal fields and their time [days since 2000-01-01] from a truth store (``*.zarr`` or a truth
    directory with ``train.zarr``) or a netCDF file with T, u, v, q, ps on (time, level, lat, lon)."""
    p = shipped_dir() / "initial_state.nc" if path is None else Path(path)
    if p.is_dir() and (p / "train.zarr").exists():
        p = p / "train.zarr"
    if not p.exists():
        raise DataError(f"initial state '{p}' does not exist")
    try:
        ds = xr.open_zarr(p, consolidated=False) if p.suffix == ".zarr" or p.is_dir() else xr.open_dataset(p)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"initial state '{p}' cannot be read: {' '.join(str(e).split())[:200]}") from None
    ds = ds[["T", "u", "v", "q", "ps"]].isel(time=[index]).load()
    check_truth(ds, where=f"initial state '{p}'", truncation=model.truncation, variables=("T", "u", "v", "q", "ps"))
    if not np.allclose(ds["level"].values, model.grid.sigma, atol=1e-6):
        raise DataError(f"initial state '{p}' has sigma levels {np.round(ds['level'].values, 3).tolist()} but the "
                        f"model has {np.round(model.grid.sigma, 3).tolist()}")
    f = AtmosphereFields(*(jnp.asarray(ds[k].values[0], float) for k in ("T", "u", "v", "q", "ps")), None)
    return f, float(_days(ds)[0])


def build_physics(cfg: ClimateRunConfig, model: PrimitiveEquations):
    """``(process, observe)`` of the run: ``observe(state, t)`` gives the nodal fields with precipitation."""
    g = model.grid
    if cfg.physics == "hybrid":
        wpath = shipped_dir() / "column_net.eqx" if cfg.weights is None else Path(cfg.weights)
        net = load_module(wpath, kind="ColumnNet")
        process = hybrid(model, net, insolation="daily", day0=0.0)  # checks the network's levels
        phys = ColumnPhysics(g, PackedColumnFunction(net, net.levels), insolation="daily", day0=0.0)
        if cfg.global_balance:
            phys = GlobalBalance(phys)
            process = model + phys
        if cfg.coupling == "split":
            process = model + OncePerStep(phys, cfg.physics_every)
        return process, phys.observe
    process = model + HeldSuarez(g) if cfg.physics == "held-suarez" else model
    nlat, nlon = g.nodal_shape[1:]

    def observe(state, t):
        f = model.observe(state, t)
        return AtmosphereFields(f.air_temperature, f.eastward_wind, f.northward_wind, f.specific_humidity,
                                f.surface_air_pressure, jnp.zeros((nlat, nlon)))

    return process, observe


def _global_series(g, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w, dsig = g.area_weights, g.layer_thickness
    colq = np.einsum("k,tkij->tij", dsig, f["q"])
    return {"global_mean_air_temperature": np.einsum("tkij,ij,k->t", f["T"], w, dsig),
            "global_mean_column_water": np.einsum("tij,ij->t", f["ps"] * colq / GRAVITY, w),
            "global_mean_surface_air_pressure": np.einsum("tij,ij->t", f["ps"], w),
            "global_mean_dry_surface_pressure": np.einsum("tij,ij->t", f["ps"] * (1 - colq), w),
            "global_mean_precipitation_flux": np.einsum("tij,ij->t", f["P"], w)}


SERIES_ATTRS = {
    "global_mean_air_temperature": ("K", "global mean air temperature (mass-weighted over sigma)"),
    "global_mean_column_water": ("kg m-2", "global mean total column water"),
    "global_mean_surface_air_pressure": ("Pa", "global mean surface pressure"),
    "global_mean_dry_surface_pressure": ("Pa", "global mean dry-air surface pressure"),
    "global_mean_precipitation_flux": ("kg m-2 s-1", "global mean precipitation rate"),
}
NODAL = (("T", "air_temperature", "K"), ("u", "eastward_wind", "m s-1"), ("v", "northward_wind", "m s-1"),
         ("q", "specific_humidity", "kg kg-1"))


def _datasets(g, means: list[dict], daily: list[dict], attrs: dict) -> tuple[xr.Dataset, xr.Dataset]:
    lat = ("lat", g.lat, {"units": "degrees_north", "standard_name": "latitude"})
    lon = ("lon", g.lon, {"units": "degrees_east", "standard_name": "longitude"})
    lev = ("level", g.sigma, {"units": "1", "standard_name": "atmosphere_sigma_coordinate", "positive": "down"})
    tattrs = {"units": EPOCH, "calendar": "proleptic_gregorian", "standard_name": "time"}

    def stack(rows, k):
        return np.stack([r[k] for r in rows]).astype(np.float32)

    m = xr.Dataset(coords={"time": ("time", stack(means, "time").astype(float), tattrs), "level": lev,
                           "lat": lat, "lon": lon})
    for k, name, units in NODAL:
        m[name] = (("time", "level", "lat", "lon"), stack(means, k), {"units": units, "standard_name": name,
                                                                        "cell_methods": "time: mean"})
    m["surface_air_pressure"] = (("time", "lat", "lon"), stack(means, "ps"),
                                 {"units": "Pa", "standard_name": "surface_air_pressure", "cell_methods": "time: mean"})
    m["precipitation_flux"] = (("time", "lat", "lon"), stack(means, "P"),
                               {"units": "kg m-2 s-1", "standard_name": "precipitation_flux",
                                "cell_methods": "time: mean"})
    d = xr.Dataset(coords={"time": ("time", np.concatenate([r["time"] for r in daily]), tattrs), "level": lev,
                           "lat": lat, "lon": lon})
    cat = lambda k: np.concatenate([r[k] for r in daily]).astype(np.float32)  # noqa: E731
    for k, name, units in NODAL:
        if k != "v":
            d[f"zonal_mean_{name}"] = (("time", "level", "lat"), cat(f"zm_{k}"),
                                       {"units": units, "standard_name": name, "cell_methods": "lon: mean"})
    d["zonal_mean_surface_air_pressure"] = (("time", "lat"), cat("zm_ps"), {"units": "Pa", "cell_methods": "lon: mean",
                                                                          "standard_name": "surface_air_pressure"})
    d["precipitation_flux"] = (("time", "lat", "lon"), cat("P"), {"units": "kg m-2 s-1",
                                                                 "standard_name": "precipitation_flux"})
    for k, (units, long) in SERIES_ATTRS.items():
        d[k] = ("time", np.concatenate([r[k] for r in daily]), {"units": units, "long_name": long})
    for ds in (m, d):
        ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic atmos run", **attrs})
    return m, d


def _plot_series(d: xr.Dataset, out: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(SERIES_ATTRS)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.8 * len(names)), sharex=True)
    days = d["time"].values
    for ax, k in zip(axes, names):
        y = d[k].values * (86400.0 if k.endswith("precipitation_flux") else 1.0)
        ax.plot(days, y, lw=0.8)
        ax.set_ylabel(k.replace("global_mean_", "").replace("_", " ") + "\n["
                      + ("mm/day" if k.endswith("precipitation_flux") else d[k].attrs["units"]) + "]", fontsize=8)
    axes[-1].set_xlabel(f"time [{EPOCH}]")
    axes[0].set_title(f"global means: {d.attrs.get('physics', '')}")
    save_figure(fig, out / "global_mean.png")


def _snapshots(g, snaps: list[dict], attrs: dict) -> xr.Dataset:
    """The instantaneous states as CF netCDF with the variable names of a truth store (T, u, v, q, ps)."""
    cat = lambda k: np.concatenate([r[k] for r in snaps]).astype(np.float32)  # noqa: E731
    ds = xr.Dataset(coords={
        "time": ("time", cat("time").astype(float), {"units": EPOCH, "calendar": "proleptic_gregorian",
                                                     "standard_name": "time"}),
        "level": ("level", g.sigma, {"units": "1", "standard_name": "atmosphere_sigma_coordinate",
                                     "positive": "down"}),
        "lat": ("lat", g.lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", g.lon, {"units": "degrees_east", "standard_name": "longitude"})})
    for k, name, units in NODAL:
        ds[k] = (("time", "level", "lat", "lon"), cat(k), {"units": units, "standard_name": name})
    ds["ps"] = (("time", "lat", "lon"), cat("ps"), {"units": "Pa", "standard_name": "surface_air_pressure"})
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic atmos run", "title": "instantaneous states",
                     "truncation": g.truncation, "layers": g.layers, **attrs})
    return ds


def _write(stage: Path, g, cfg: ClimateRunConfig, settings: dict, means: list, daily: list, steps_per_chunk: int,
           wall: float, blowup: BlowUpError | None, snaps: list | None = None) -> dict[str, Any]:
    """Write the files of the chunks done so far (also called during the run, so that the staging directory of a
    long run holds its results up to the last flush)."""
    done_steps = len(means) * steps_per_chunk
    attrs = {"physics": cfg.physics, "grid": str(g), "dt": cfg.dt, "start_day": settings["start_day"],
             "fix_dry_mass": int(cfg.fix_dry_mass), "mean_days": cfg.chunk_days}
    metrics = {"config": settings, "grid": str(g), "steps": done_steps, "days": done_steps * cfg.dt / 86400,
               "wall_seconds": wall, "seconds_per_simulated_day":
                   wall / max(done_steps * cfg.dt / 86400, 1e-9),
               "blowup": None if blowup is None else {"step": blowup.step, "time_s": blowup.time,
                                                      "variable": blowup.variable}}
    if means:
        m, d = _datasets(g, means, daily, attrs)
        write_netcdf(m, stage / "atmosphere.nc")
        write_netcdf(d, stage / "daily.nc")
        if snaps:
            write_netcdf(_snapshots(g, snaps, attrs), stage / "states.nc")
        for k in SERIES_ATTRS:
            v = d[k].values
            metrics[k] = {"first": float(v[0]), "last": float(v[-1]), "min": float(v.min()),
                          "max": float(v.max()), "finite": bool(np.all(np.isfinite(v)))}
        _plot_series(d, stage)
    write_json(metrics, stage / "metrics.json")
    return metrics


def climate_stepper(model: PrimitiveEquations, *, clip_humidity: bool = True, energy_fixer: bool = True) -> Filtered:
    """IMEX-SIL3 with the model's filters (exponential filter, hyperdiffusion, dry-mass fixer if the model has it),
    the humidity clipper before the dry-mass fixer (which then sees the clipped humidity) and the energy fixer
    last: the stepper of the long runs."""
    g = model.grid
    filters = model.filters()
    if clip_humidity:
        k = len(filters) - 1 if model.fix_dry_mass else len(filters)
        filters = filters[:k] + (NonNegativeHumidity(g),) + filters[k:]
    if energy_fixer:
        filters = filters + (EnergyFixer(g),)
    return Filtered(IMEXSIL3(), filters)


def run_climate(cfg: ClimateRunConfig, out: str | Path, *, progress: Callable[[int, int], None] | None = None,
                truncation: int = 21, layers: int = 8) -> dict[str, Any]:
    """Run ``cfg`` and write ``atmosphere.nc``, ``daily.nc``, ``metrics.json``, ``global_mean.png`` (and with
    ``snapshot_days``, ``states.nc``) into ``out`` (one transaction). ``progress(steps_done, n_steps)`` is called
    after every chunk."""
    model = PrimitiveEquations(truncation, layers, dt=cfg.dt, fix_dry_mass=cfg.fix_dry_mass)
    g = model.grid
    fields0, day_start = load_initial_fields(cfg.initial, model)
    process, observe = build_physics(cfg, model)
    state = model.from_fields(fields0)
    stepper = climate_stepper(model, clip_humidity=cfg.clip_humidity,
                              energy_fixer=cfg.energy_fixer and cfg.physics == "hybrid")
    steps_per_sample = int(round(cfg.sample_hours * 3600 / cfg.dt))
    samples_per_save = int(round(cfg.save_hours / cfg.sample_hours))
    steps_per_chunk = int(round(cfg.chunk_days * 86400 / cfg.dt / steps_per_sample)) * steps_per_sample
    n_steps = steps_per_chunk * cfg.n_chunks
    settings = {**dataclasses.asdict(cfg), "truncation": truncation, "layers": layers, "start_day": day_start}
    means, daily, snaps, blowup = [], [], [], None
    snap_every = int(round(cfg.snapshot_days * 24 / cfg.sample_hours))
    t0 = time.perf_counter()
    t_sec = day_start * 86400.0

    def obs(s, t):
        return s, observe(s, t)

    with staged_run(out, "atmos run", settings) as stage:
        for c in range(cfg.n_chunks):
            try:
                traj = simulate(process, stepper, state, dt=cfg.dt, n_steps=steps_per_chunk, t0=t_sec,
                                save_every=steps_per_sample, observe=obs, segments=1)
            except BlowUpError as e:
                blowup = BlowUpError(e.step + c * steps_per_chunk, e.time, e.variable)
                break
            states, f = traj.states
            f = jax.device_get(f)
            arr = {"T": np.asarray(f.air_temperature[1:]), "u": np.asarray(f.eastward_wind[1:]),
                   "v": np.asarray(f.northward_wind[1:]), "q": np.asarray(f.specific_humidity[1:]),
                   "ps": np.asarray(f.surface_air_pressure[1:]), "P": np.asarray(f.precipitation_flux[1:])}
            tdays = np.asarray(traj.t[1:]) / 86400.0
            means.append({**{k: v.mean(0) for k, v in arr.items()}, "time": tdays.mean()})
            sel = slice(samples_per_save - 1, None, samples_per_save)
            series = _global_series(g, {k: v[sel] for k, v in arr.items()})
            daily.append({"time": tdays[sel], **{f"zm_{k}": arr[k][sel].mean(-1) for k in ("T", "u", "q", "ps")},
                          "P": arr["P"][sel], **series})
            if snap_every:
                n = len(tdays)
                pick = np.nonzero((c * n + np.arange(n) + 1) % snap_every == 0)[0]
                snaps.append({"time": tdays[pick], **{k: arr[k][pick] for k in ("T", "u", "v", "q", "ps")}})
            state = jax.tree_util.tree_map(lambda x: x[-1], states)
            t_sec = float(traj.t[-1])
            if progress is not None:
                progress((c + 1) * steps_per_chunk, n_steps)
            if cfg.flush_chunks and (c + 1) % cfg.flush_chunks == 0 and c + 1 < cfg.n_chunks:
                _write(stage, g, cfg, settings, means, daily, steps_per_chunk, time.perf_counter() - t0, None,
                       snaps)
        metrics = _write(stage, g, cfg, settings, means, daily, steps_per_chunk, time.perf_counter() - t0, blowup,
                         snaps)
    if blowup is not None:
        raise blowup
    return metrics

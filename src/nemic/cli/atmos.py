"""``nemic atmos``: the global atmosphere (dinosaur's primitive equations on sigma levels).

``nemic atmos run`` integrates the bare dynamical core or the Held-Suarez test case from rest and writes a CF
netCDF file (time, level, lat, lon), ``metrics.json`` (global means, dry-mass drift, wall time) and PNGs (zonal
means, a global-mean time series). With ``--years`` (or ``--physics``) it makes a long run from a state of the
SPEEDY truth instead, by default with the shipped hybrid (:mod:`nemic.experiments.atmos_climate_run`).
``nemic atmos evaluate`` scores such a run against the truth's held-out period
(:mod:`nemic.experiments.atmos_climate`). Files replace ``--out`` whole at the end (a failed run changes nothing).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from nemic.cli.atmos_truth import generate as _generate, guard as _guard, perturb as _perturb, train as _train

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Global atmosphere: dinosaur's primitive equations, Held-Suarez, column physics.")

FORCINGS = ("held-suarez", "none")


def _check(days: float, dt: float, save_hours: float, forcing: str) -> None:
    import math

    from nemic.errors import ConfigError

    for name, v in (("days", days), ("dt", dt), ("save-hours", save_hours)):
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"--{name} must be a positive number, got {v!r}")
    if forcing not in FORCINGS:
        raise ConfigError(f"--forcing must be one of {', '.join(FORCINGS)}, got {forcing!r}")
    if (save_hours * 3600) % dt:
        raise ConfigError(f"--save-hours ({save_hours}) must be a whole number of time steps of --dt ({dt} s)")


def _plots(ds, out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from nemic.io.output import save_figure

    half = ds.isel(time=slice(len(ds.time) // 2, None)).mean(["time", "lon"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, name, cmap in ((axes[0], "eastward_wind", "RdBu_r"), (axes[1], "air_temperature", "inferno")):
        da = half[name]
        lim = float(np.abs(da).max()) or 1.0
        levels = np.linspace(-lim, lim, 17) if name == "eastward_wind" else 16
        cs = ax.contourf(ds.lat, ds.level, da, levels=levels, cmap=cmap)
        fig.colorbar(cs, ax=ax, label=f"{name} [{ds[name].attrs['units']}]")
        ax.set_xlabel("latitude [deg]")
        ax.set_title(f"zonal mean {name.replace('_', ' ')} (second half)")
    axes[0].set_ylabel("sigma")
    axes[0].invert_yaxis()
    save_figure(fig, out / "zonal_mean.png")
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    days = ds.time / 86400.0
    axes[0].plot(days, ds["global_mean_air_temperature"])
    axes[0].set_ylabel("global mean T [K]")
    axes[1].plot(days, ds["global_mean_dry_surface_pressure"] - float(ds["global_mean_dry_surface_pressure"][0]))
    axes[1].set_ylabel("dry surface pressure\nchange [Pa]")
    axes[1].set_xlabel("days")
    save_figure(fig, out / "global_mean.png")


@app.command()
def run(
    out: Path = typer.Option(..., help="output directory"),
    days: float = typer.Option(30.0, help="length of the run, days"),
    forcing: str = typer.Option("held-suarez", help="held-suarez or none (the bare dynamical core)"),
    truncation: int = typer.Option(21, help="spectral truncation: 21, 31, 42 or 85"),
    layers: int = typer.Option(8, help="number of sigma levels"),
    dt: Optional[float] = typer.Option(None, help="time step, s (default 1200; 1800 with --years/--physics)"),
    save_hours: float = typer.Option(24.0, help="save every this many hours"),
    seed: int = typer.Option(0, help="seed of the initial surface-pressure perturbation"),
    fix_dry_mass: bool = typer.Option(True, help="hold the global dry mass fixed"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    years: Optional[float] = typer.Option(None, help="a long run of this many years (365 days each) from a state "
                                          "of the SPEEDY truth, with --physics (default hybrid: the shipped "
                                          "column network); --dt defaults to 1800 s"),
    physics: Optional[str] = typer.Option(None, help="hybrid, held-suarez or none: a run from a truth state "
                                          "(like --years, for --days)"),
    weights: Optional[Path] = typer.Option(None, help="column network (.eqx) of the hybrid instead of the shipped one"),
    initial: Optional[Path] = typer.Option(None, help="initial state: a truth directory or store, or a netCDF file "
                                           "with T, u, v, q, ps (default: the shipped one, 2000-08-28)"),
    mean_days: float = typer.Option(30.0, help="with --years/--physics: averaging window of atmosphere.nc, days"),
    clip_humidity: bool = typer.Option(True, help="with --years/--physics: clip negative humidity after each step "
                                       "(water-conserving rescaling)"),
    global_balance: bool = typer.Option(True, help="with --physics hybrid: remove the global-mean heating and "
                                        "moistening of the learned physics (see docs/atmosphere.md)"),
    energy_fixer: bool = typer.Option(True, help="with --physics hybrid: give back the energy each step loses as a "
                                      "uniform temperature change"),
    float64: bool = typer.Option(False, help="with --years/--physics: compute in float64 (default float32)"),
    coupling: str = typer.Option("split", help="with --physics hybrid: 'split' (column physics once per physics "
                                 "step before the dynamics, as jcm couples SPEEDY's physics) or 'stages' (at every "
                                 "IMEX stage)"),
    physics_every: int = typer.Option(1, help="with --coupling split: physics step in dynamics steps"),
    snapshot_days: float = typer.Option(0.0, help="with --years/--physics: write the instantaneous states every "
                                        "this many days to states.nc (0: none)"),
) -> None:
    """Run the atmosphere. Without --years/--physics: from an isothermal state at rest with a surface-pressure bump
    (--forcing held-suarez or none): atmosphere.nc (CF), metrics.json, zonal_mean.png, global_mean.png. With
    --years N (or --physics): a long run from a state of the SPEEDY truth, by default the shipped hybrid:
    atmosphere.nc (means over --mean-days), daily.nc (zonal means, precipitation, global means every
    --save-hours), metrics.json, global_mean.png."""
    if years is not None or physics is not None:
        _climate_run(out, days, years, physics or "hybrid", dt, save_hours, mean_days, weights, initial,
                     fix_dry_mass, float64, quiet, clip_humidity, global_balance, energy_fixer, coupling,
                     physics_every, snapshot_days)
        return
    dt = 1200.0 if dt is None else dt
    _check(days, dt, save_hours, forcing)
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from nemic.core import simulate
    from nemic.experiments.config import staged_run
    from nemic.io.output import to_xarray, write_json, write_netcdf
    from nemic.io.terminal import progress
    from nemic.models.atmosphere import HeldSuarez, PrimitiveEquations

    model = PrimitiveEquations(truncation, layers, dt=dt, fix_dry_mass=fix_dry_mass)
    g = model.grid
    process = model + HeldSuarez(g) if forcing == "held-suarez" else model
    save_every = round(save_hours * 3600 / dt)
    n_steps = max(save_every, round(days * 86400 / dt / save_every) * save_every)
    state = model.initial_state(jax.random.key(seed), perturbation=5e3)
    settings = {"days": days, "forcing": forcing, "truncation": truncation, "layers": layers, "dt": dt,
                "save_hours": save_hours, "seed": seed, "fix_dry_mass": fix_dry_mass}
    t0 = time.perf_counter()
    with staged_run(out, "atmos run", settings) as stage:
        with progress(f"atmosphere {g} {forcing}", enabled=not quiet) as bar:
            traj = simulate(process, None, state, dt=dt, n_steps=n_steps, save_every=save_every,
                            observe=model.observe, progress=bar)
        wall = time.perf_counter() - t0
        ds = to_xarray(traj, coords=model.coords(), attrs={**model.to_attrs(), "forcing": forcing})
        w = g.area_weights
        t_mean = np.einsum("tkij,ij->t", ds["air_temperature"].values, w) / g.layers
        q_col = np.einsum("k,tkij->tij", g.layer_thickness, ds["specific_humidity"].values)
        p_dry = np.einsum("tij,ij->t", ds["surface_air_pressure"].values * (1 - q_col), w)
        ds["global_mean_air_temperature"] = ("time", t_mean, {"units": "K", "long_name":
                                                               "global, level-mean air temperature"})
        ds["global_mean_dry_surface_pressure"] = ("time", p_dry, {"units": "Pa", "long_name":
                                                                   "global mean dry-air surface pressure"})
        write_netcdf(ds, stage / "atmosphere.nc")
        u_zm = ds["eastward_wind"].isel(time=-1).mean("lon")
        metrics = {"grid": str(g), "forcing": forcing, "days": n_steps * dt / 86400, "steps": n_steps,
                   "wall_s": wall, "s_per_simulated_day": wall / (n_steps * dt / 86400),
                   "final_global_mean_air_temperature_K": float(t_mean[-1]),
                   "final_max_zonal_mean_eastward_wind_m_s": float(u_zm.max()),
                   "relative_dry_mass_drift": float(np.max(np.abs(p_dry - p_dry[0])) / p_dry[0])}
        write_json(metrics, stage / "metrics.json")
        _plots(ds, stage)
    typer.echo(f"{metrics['days']:.1f} days of {g} ({forcing}) in {wall:.0f} s; wrote {out}")


def _climate_run(out, days, years, physics, dt, save_hours, mean_days, weights, initial, fix_dry_mass, float64,
                 quiet, clip_humidity=True, global_balance=True, energy_fixer=True, coupling="split",
                 physics_every=1, snapshot_days=0.0) -> None:
    import math

    from nemic.errors import ConfigError

    if years is not None and (not math.isfinite(years) or years <= 0):
        raise ConfigError(f"--years must be a positive number, got {years!r}")
    from nemic.experiments.atmos_climate_run import ClimateRunConfig, run_climate
    from nemic.io.terminal import progress

    length = 365.0 * years if years is not None else days
    dt = 1800.0 if dt is None else dt
    cfg = ClimateRunConfig(physics=physics, days=length, dt=dt, mean_days=min(mean_days, length),
                           save_hours=save_hours, weights=None if weights is None else str(weights),
                           initial=None if initial is None else str(initial), fix_dry_mass=fix_dry_mass,
                           clip_humidity=clip_humidity, global_balance=global_balance,
                           energy_fixer=energy_fixer, coupling=coupling, physics_every=physics_every,
                           snapshot_days=snapshot_days)
    import jax

    jax.config.update("jax_enable_x64", bool(float64))  # after the checks: a refused run changes nothing
    t0 = time.perf_counter()
    with progress(f"atmosphere T21L8 {physics}, {cfg.n_chunks} x {cfg.chunk_days:g} days", enabled=not quiet) as bar:
        m = run_climate(cfg, out, progress=bar)
    typer.echo(f"{m['days']:.0f} days ({physics}, dt {dt:g} s) in {time.perf_counter() - t0:.0f} s "
               f"({m['seconds_per_simulated_day']:.2f} s per simulated day); wrote {out}")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="directory written by 'nemic atmos run --years/--physics'"),
    truth: Path = typer.Option(..., "--truth", help="directory written by 'nemic atmos generate' (test.zarr, and "
                               "train.zarr for the SPEEDY noise floor)"),
    out: Path = typer.Option(..., "--out", help="directory for metrics.json and the PNGs"),
    baseline: Optional[List[str]] = typer.Option(None, "--baseline", help="NAME=RUN_DIR of another run scored the "
                                                 "same way (e.g. bare_core=runs/bare); repeatable"),
) -> None:
    """Score a long run against the truth's held-out test period on the same calendar days: zonal-mean RMSE and
    bias of T, u, q; precipitation zonal mean, frequency distribution, power spectrum and Minkowski measures; the
    same for the baselines and for SPEEDY against itself (noise floor). Writes metrics.json and PNGs."""
    from nemic.errors import ConfigError

    pairs = {}
    for b in baseline or []:
        name, sep, path = b.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--baseline must be NAME=RUN_DIR, got {b!r}")
        pairs[name] = path
    from nemic.experiments.atmos_climate import evaluate as run_evaluate

    t0 = time.perf_counter()
    m = run_evaluate(run, truth, out, baselines=pairs)
    for name, s in m["scores"].items():
        typer.echo(f"{name:28s} T {s['T']['zonal_mean_rmse']:.2f} K, u {s['u']['zonal_mean_rmse']:.2f} m/s, "
                   f"q {s['q']['zonal_mean_rmse'] * 1e3:.3f} g/kg, P {s['precipitation']['zonal_mean_rmse']:.2f} "
                   f"mm/day (zonal-mean RMSE)")
    typer.echo(f"evaluated in {time.perf_counter() - t0:.0f} s; wrote {out}")


# the SPEEDY truth and the offline column physics (nemic.cli.atmos_truth)
app.command("generate")(_generate)
app.command("train")(_train)
app.command("guard")(_guard)
app.command("perturb")(_perturb)

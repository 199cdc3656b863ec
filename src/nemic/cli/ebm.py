"""``nemic ebm``: the diffusive energy balance model: equilibrium and CO2 doubling, snowball hysteresis, calibration,
and the hybrid (neural heat transport) EBM. Every command writes netCDF/JSON/PNG files into ``--out``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Energy balance model: equilibrium, CO2, hysteresis, calibration.")


def _setup() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _finite(name: str, value: float, *, low: float | None = None, strict: bool = True) -> None:
    """One-line ConfigError unless ``value`` is finite (and > low, or >= low when not ``strict``)."""
    import math

    from nemic.errors import ConfigError

    if not math.isfinite(value):
        raise ConfigError(f"--{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"--{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    from nemic.errors import ConfigError

    if value not in choices:
        raise ConfigError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")


def _names(name: str, text: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated names, each one of ``choices``, at least one, no repeats."""
    from nemic.errors import ConfigError

    items = tuple(v.strip() for v in text.split(",") if v.strip())
    if not items:
        raise ConfigError(f"--{name} needs at least one of {', '.join(choices)}, got {text!r}")
    bad = [v for v in items if v not in choices]
    if bad:
        raise ConfigError(f"--{name}: unknown {', '.join(bad)}; choose from {', '.join(choices)}")
    if len(set(items)) != len(items):
        raise ConfigError(f"--{name} lists a name twice: {text!r}")
    return items


def _num_lat(num_lat: int, minimum: int = 2) -> None:
    from nemic.errors import ConfigError, check_int_at_least

    check_int_at_least("--num-lat", num_lat, minimum)
    if num_lat > 100_000:  # nemic.experiments.ebm.MAX_NUM_LAT (not imported here: help stays fast)
        raise ConfigError(f"--num-lat must be at most 100000, got {num_lat}")


def _model(num_lat: int, grid: str, insolation: str, **params):
    from nemic.models.ebm import DiffusiveEBM

    return DiffusiveEBM(num_lat, grid=grid, insolation_type=insolation, **params)


@app.command()
def run(
    out: Path = typer.Option(..., help="output directory"),
    num_lat: int = typer.Option(90, help="number of latitude cells"),
    grid: str = typer.Option("lat", help="grid: lat (uniform in latitude, as climlab) or sin (equal-area)"),
    insolation: str = typer.Option("p2", help="insolation: p2, annual (exact annual mean) or daily (seasonal)"),
    S0: float = typer.Option(1365.2, "--S0", help="solar constant, W m-2"),
    A: float = typer.Option(210.0, "--A", help="OLR at 0 degC, W m-2"),
    B: float = typer.Option(2.0, "--B", help="OLR slope, W m-2 K-1"),
    D: float = typer.Option(0.555, "--D", help="diffusivity, W m-2 K-1"),
    albedo_width: float = typer.Option(0.0, help="half-width of the ice-albedo transition, K (0 = step)"),
    water_depth: float = typer.Option(10.0, help="mixed-layer depth, m"),
    co2_ratio: float = typer.Option(2.0, help="CO2 multiple for the sensitivity experiment"),
    years: float = typer.Option(0.0, help="also write a trajectory of this many years (saved every 1/12 year)"),
) -> None:
    """Equilibrium climate and its response to CO2 x co2_ratio: equilibrium.nc, co2.nc, summary.json, ebm.png.
    With --insolation daily: the seasonal cycle after a 30-year spin-up (seasonal.nc, monthly and annual means).
    Every setting is checked first; the files replace --out whole at the end (a failed run changes nothing)."""
    _num_lat(num_lat)
    _choice("grid", grid, ("lat", "sin"))
    _choice("insolation", insolation, ("p2", "annual", "daily"))
    for name, v in (("S0", S0), ("A", A), ("B", B), ("D", D), ("albedo-width", albedo_width)):
        _finite(name, v)  # ranges: checked by the model below
    _finite("water-depth", water_depth, low=0.0)
    _finite("co2-ratio", co2_ratio, low=0.0)
    _finite("years", years, low=0.0, strict=False)
    _setup()
    from nemic.experiments import ebm as X
    from nemic.experiments.config import staged_run
    from nemic.io.output import write_json, write_netcdf
    from nemic.models.ebm import SECONDS_PER_YEAR

    m = _model(num_lat, grid, insolation, S0=S0, A=A, B=B, D=D, albedo_width=albedo_width,
               water_depth=water_depth)  # checks the parameters
    dt = SECONDS_PER_YEAR / 360 if insolation == "daily" else m.default_timestep
    X.check_ebm_size(num_lat, years + 31.0, per_year=SECONDS_PER_YEAR / dt, saved_per_year=12)
    settings = {"num_lat": num_lat, "grid": grid, "insolation": insolation, "S0": S0, "A": A, "B": B, "D": D,
                "albedo_width": albedo_width, "water_depth": water_depth, "co2_ratio": co2_ratio, "years": years}
    t0 = time.perf_counter()
    with staged_run(out, "ebm run", settings) as stage:
        if insolation == "daily":
            ds = X.seasonal_climatology(m)  # monthly means of the 31st year, and annual means
            write_netcdf(ds, stage / "seasonal.nc")
            state = None
        else:
            state, _ = X.equilibrium(m)
            ds = X.equilibrium_dataset(m, state)
            write_netcdf(ds, stage / "equilibrium.nc")
        summary = {"model": X.model_attrs(m), "global_mean_Ts": ds.attrs["global_mean_Ts"],
                   "ice_edge": ds.attrs["ice_edge"]}
        ds_forced = None
        if insolation != "daily":
            r = X.co2_doubling(m, state, ratio=co2_ratio)
            ds_forced = X.equilibrium_dataset(r["forced_model"], r["forced"])
            write_netcdf(ds_forced, stage / "co2.nc")
            summary["co2"] = {k: v for k, v in r.items() if isinstance(v, float)}
        if years > 0:
            from nemic.core.rollout import simulate

            if state is None:  # daily insolation: start on 1 January after the 30-year spin-up
                n_spin = 30 * 360
                state = simulate(m, None, m.initial_state(), dt=dt, n_steps=n_spin, save_every=n_spin).final
            n_save = max(1, int(round(SECONDS_PER_YEAR / 12 / dt)))
            steps = int(round(years * SECONDS_PER_YEAR / dt))
            steps = max(steps - steps % n_save, n_save)
            traj = simulate(m, None, state, dt=dt, n_steps=steps, save_every=n_save)
            write_netcdf(X.trajectory_dataset(m, traj), stage / "trajectory.nc")
        summary["wall_s"] = time.perf_counter() - t0
        write_json(summary, stage / "summary.json")
        if insolation == "daily":
            X.plot_seasonal(ds, stage / "ebm.png")
        else:
            X.plot_equilibrium(ds, stage / "ebm.png", ds_forced)
    msg = f"global-mean Ts {summary['global_mean_Ts']:.2f} degC, ice edge {summary['ice_edge']:.2f} deg"
    if "co2" in summary:
        msg += f"; CO2 x{co2_ratio:g}: dT = {summary['co2']['delta_global_mean_Ts']:.2f} K"
    typer.echo(f"{msg}; files in {out}")


@app.command()
def hysteresis(
    out: Path = typer.Option(..., help="output directory"),
    s0_min: float = typer.Option(1200.0, help="smallest S0, W m-2"),
    s0_max: float = typer.Option(1900.0, help="largest S0, W m-2"),
    s0_step: float = typer.Option(5.0, help="S0 increment, W m-2"),
    years_per_value: float = typer.Option(40.0, help="years integrated at each S0"),
    num_lat: int = typer.Option(90, help="number of latitude cells"),
    grid: str = typer.Option("lat", help="grid: lat or sin"),
    albedo_width: float = typer.Option(0.5, help="half-width of the ice-albedo transition, K"),
) -> None:
    """Snowball-Earth hysteresis loop in S0 (both branches): hysteresis.nc, hysteresis.json, hysteresis.png."""
    from nemic.errors import ConfigError

    _num_lat(num_lat)
    _choice("grid", grid, ("lat", "sin"))
    for name, v in (("s0-min", s0_min), ("s0-max", s0_max), ("s0-step", s0_step),
                    ("years-per-value", years_per_value)):
        _finite(name, v, low=0.0)
    _finite("albedo-width", albedo_width, low=0.0, strict=False)
    if not s0_max >= s0_min:
        raise ConfigError(f"need s0_step > 0 and s0_max >= s0_min, got {s0_min}..{s0_max} step {s0_step}")
    n_values = int((s0_max - s0_min) / s0_step) + 1
    if n_values > 100_000:
        raise ConfigError(f"{s0_min}..{s0_max} in steps of {s0_step} gives {n_values} values of S0; at most "
                          "100000 are allowed")
    _setup()
    import numpy as np

    from nemic.experiments import ebm as X
    from nemic.experiments.config import staged_run
    from nemic.io.output import write_json, write_netcdf

    X.check_ebm_size(num_lat, 2 * n_values * years_per_value, what="years per value x number of values",
                     saved_per_year=0)
    values = np.arange(s0_min, s0_max + 0.5 * s0_step, s0_step)
    m = _model(num_lat, grid, "p2", albedo_width=albedo_width)
    settings = {"s0_min": s0_min, "s0_max": s0_max, "s0_step": s0_step, "years_per_value": years_per_value,
                "num_lat": num_lat, "grid": grid, "albedo_width": albedo_width}
    t0 = time.perf_counter()
    with staged_run(out, "ebm hysteresis", settings) as stage:
        ds = X.hysteresis(m, values, years_per_value=years_per_value)
        write_netcdf(ds, stage / "hysteresis.nc")
        summary = {"model": X.model_attrs(m), **X.hysteresis_transitions(ds), "n_values": int(values.size),
                   "wall_s": time.perf_counter() - t0}
        write_json(summary, stage / "hysteresis.json")
        X.plot_hysteresis(ds, stage / "hysteresis.png")
    typer.echo(f"snowball below S0 = {summary['snowball_S0']:g}, deglaciation at S0 = "
               f"{summary['deglaciation_S0']:g} W m-2; files in {out}")


@app.command()
def calibrate(
    out: Path = typer.Option(..., help="output directory"),
    params: str = typer.Option("A,B,D,a0", help="comma-separated parameters to recover"),
    targets: str = typer.Option("Ts,OLR", help="comma-separated targets: Ts, OLR, Ts_seasonal"),
    methods: str = typer.Option("adam,lbfgs,eki", help="comma-separated methods: adam, lbfgs, eki"),
    num_lat: int = typer.Option(30, help="number of latitude cells"),
    albedo_width: float = typer.Option(2.0, help="half-width of the ice-albedo transition, K"),
    years: float = typer.Option(15.0, help="years integrated by each forward run"),
    noise_ts: float = typer.Option(0.3, help="noise std of the Ts targets, K"),
    noise_olr: float = typer.Option(1.0, help="noise std of the OLR targets, W m-2"),
    guess_factor: float = typer.Option(1.15, help="first guess = truth x this factor"),
    seed: int = typer.Option(0, help="random seed (noise, EKI prior and perturbations)"),
) -> None:
    """Recover known parameters from noisy synthetic targets (Adam, L-BFGS, EKI): calibration.json, calibration.png."""
    _num_lat(num_lat)
    for name, v in (("years", years), ("guess-factor", guess_factor)):
        _finite(name, v, low=0.0)
    for name, v in (("albedo-width", albedo_width), ("noise-ts", noise_ts), ("noise-olr", noise_olr)):
        _finite(name, v, low=0.0, strict=False)
    _seed(seed)
    _setup()
    import jax

    from nemic.experiments import ebm as X
    from nemic.experiments.config import staged_run
    from nemic.io.output import write_json

    names = _names("params", params, X.PARAM_NAMES)
    tgts = _names("targets", targets, ("Ts", "OLR", "Ts_seasonal"))
    meths = _names("methods", methods, ("adam", "lbfgs", "eki"))
    X.check_ebm_size(num_lat, years, per_year=360, saved_per_year=12)
    insol = "daily" if "Ts_seasonal" in tgts else "p2"
    truth = _model(num_lat, "sin", insol, albedo_width=albedo_width)
    X.ebm_forward(truth, list(names), targets=tgts, years=1.0)  # validate the names before the long run
    guess = {n: float(getattr(truth, n)) * guess_factor for n in names}
    settings = {"params": list(names), "targets": list(tgts), "methods": list(meths), "num_lat": num_lat,
                "albedo_width": albedo_width, "years": years, "noise_ts": noise_ts, "noise_olr": noise_olr,
                "guess_factor": guess_factor, "seed": seed}
    t0 = time.perf_counter()
    with staged_run(out, "ebm calibrate", settings) as stage:
        report = X.calibrate_ebm(truth, list(names), first_guess=guess, targets=tgts, years=years, methods=meths,
                                 noise={"Ts": noise_ts, "OLR": noise_olr, "Ts_seasonal": noise_ts},
                                 key=jax.random.PRNGKey(seed))
        report["wall_s"] = time.perf_counter() - t0
        write_json(report, stage / "calibration.json")
        X.plot_calibration(report, stage / "calibration.png")
    for m, r in report["methods"].items():
        typer.echo(f"{m:>6}: max relative error {r['max_abs_relative_error']:.3%} with {r['n_forward']} forward "
                   f"runs ({r['n_gradient']} gradients)")
    ident = report.get("identifiability_Ts_only", report["identifiability"])
    typer.echo(f"Ts alone leaves poorly identified: {', '.join(ident['poorly_identified']) or 'none'}; "
               f"files in {out}")


def _seed(seed: int) -> None:
    from nemic.errors import check_int_at_least

    check_int_at_least("--seed", seed, 0)


@app.command()
def hybrid(
    out: Path = typer.Option(..., help="output directory"),
    num_lat: int = typer.Option(30, help="number of latitude cells"),
    steps: int = typer.Option(300, help="Adam steps of online training"),
    learning_rate: float = typer.Option(3e-3, help="Adam learning rate"),
    horizon_days: float = typer.Option(120.0, help="length of each training rollout, days"),
    moist_D: float = typer.Option(0.3, help="diffusivity of the moist reference EBM, W m-2 K-1"),
    seed: int = typer.Option(0, help="random seed of the network initialisation"),
) -> None:
    """Train a neural heat transport through the solver against a moist EBM; compare equilibrium, seasonal cycle
    and CO2 response: hybrid.json, hybrid.png, hybrid_transport.eqx (the one weights format:
    ``nemic.train.checkpoint.load_module`` rebuilds the transport)."""
    _num_lat(num_lat, 4)
    from nemic.errors import check_int_at_least

    check_int_at_least("--steps", steps, 1)
    for name, v in (("learning-rate", learning_rate), ("horizon-days", horizon_days), ("moist-D", moist_D)):
        _finite(name, v, low=0.0)
    if horizon_days > 360.0:
        from nemic.errors import ConfigError

        raise ConfigError(f"--horizon-days must be at most 360 (one year of reference), got {horizon_days:g}")
    _seed(seed)
    _setup()
    import jax

    from nemic.experiments import ebm as E
    from nemic.experiments import ebm_hybrid as X
    from nemic.experiments.config import CHECKPOINTS, settings_hash, staged_run
    from nemic.io.output import write_json
    from nemic.train.checkpoint import save_module

    E.check_ebm_size(num_lat, 32.0, per_year=90)
    settings = {"num_lat": num_lat, "steps": steps, "learning_rate": learning_rate, "horizon_days": horizon_days,
                "moist_D": moist_D, "seed": seed}
    t0 = time.perf_counter()
    with staged_run(out, "ebm hybrid", settings) as stage:
        ckpt = stage / CHECKPOINTS / f"hybrid-{settings_hash(settings)}.ckpt"  # a killed training resumes
        res = X.train_hybrid_ebm(num_lat, moist_D=moist_D, steps=steps, learning_rate=learning_rate,
                                 horizon_days=horizon_days, key=jax.random.PRNGKey(seed), checkpoint=ckpt)
        train_s = time.perf_counter() - t0
        rep = X.evaluate_hybrid_ebm(res)
        rep.update({"loss_history": res["history"].tolist(), "train_s": train_s,
                    "eval_s": time.perf_counter() - t0 - train_s})
        write_json(rep, stage / "hybrid.json")
        save_module(stage / "hybrid_transport.eqx", res["transport"],
                    extra={"recipe": "nemic ebm hybrid", "moist_D": moist_D, "seed": seed})
        X.plot_hybrid(rep, res["history"], stage / "hybrid.png")
    for name, r in rep["models"].items():
        if name != "reference":
            typer.echo(f"{name:>6}: equilibrium RMSE {r['equilibrium_rmse_vs_reference']:.3f} K, CO2 response RMSE "
                       f"{r['co2_response_rmse_vs_reference']:.3f} K, seasonal-cycle RMSE "
                       f"{r['seasonal_cycle_rmse_vs_reference']:.3f} K")
    typer.echo(f"files in {out}")

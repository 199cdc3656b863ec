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
    With --insolation daily: the seasonal cycle after a 30-year spin-up (seasonal.nc, monthly and annual means)."""
    _setup()
    from nemic.io.output import ensure_writable_dir, write_json, write_netcdf
    from nemic.experiments import ebm as X

    out = ensure_writable_dir(out)
    m = _model(num_lat, grid, insolation, S0=S0, A=A, B=B, D=D, albedo_width=albedo_width,
               water_depth=water_depth)
    t0 = time.perf_counter()
    if insolation == "daily":
        ds = X.seasonal_climatology(m)  # monthly means of the 31st year, and annual means
        write_netcdf(ds, out / "seasonal.nc")
        state = None
    else:
        state, _ = X.equilibrium(m)
        ds = X.equilibrium_dataset(m, state)
        write_netcdf(ds, out / "equilibrium.nc")
    summary = {"model": X.model_attrs(m), "global_mean_Ts": ds.attrs["global_mean_Ts"],
               "ice_edge": ds.attrs["ice_edge"]}
    ds_forced = None
    if insolation != "daily":
        r = X.co2_doubling(m, state, ratio=co2_ratio)
        ds_forced = X.equilibrium_dataset(r["forced_model"], r["forced"])
        write_netcdf(ds_forced, out / "co2.nc")
        summary["co2"] = {k: v for k, v in r.items() if isinstance(v, float)}
    if years > 0:
        from nemic.core.rollout import simulate
        from nemic.models.ebm import SECONDS_PER_YEAR

        dt = SECONDS_PER_YEAR / 360 if insolation == "daily" else m.default_timestep
        if state is None:  # daily insolation: start on 1 January after the 30-year spin-up
            n_spin = 30 * 360
            state = simulate(m, None, m.initial_state(), dt=dt, n_steps=n_spin, save_every=n_spin).final
        n_save = max(1, int(round(SECONDS_PER_YEAR / 12 / dt)))
        steps = int(round(years * SECONDS_PER_YEAR / dt))
        steps = max(steps - steps % n_save, n_save)
        traj = simulate(m, None, state, dt=dt, n_steps=steps, save_every=n_save)
        write_netcdf(X.trajectory_dataset(m, traj), out / "trajectory.nc")
    summary["wall_s"] = time.perf_counter() - t0
    write_json(summary, out / "summary.json")
    if insolation == "daily":
        X.plot_seasonal(ds, out / "ebm.png")
    else:
        X.plot_equilibrium(ds, out / "ebm.png", ds_forced)
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
    _setup()
    import numpy as np

    from nemic.errors import ConfigError
    from nemic.io.output import ensure_writable_dir, write_json, write_netcdf
    from nemic.experiments import ebm as X

    if not (s0_step > 0) or not (s0_max >= s0_min):
        raise ConfigError(f"need s0_step > 0 and s0_max >= s0_min, got {s0_min}..{s0_max} step {s0_step}")
    values = np.arange(s0_min, s0_max + 0.5 * s0_step, s0_step)
    out = ensure_writable_dir(out)
    m = _model(num_lat, grid, "p2", albedo_width=albedo_width)
    t0 = time.perf_counter()
    ds = X.hysteresis(m, values, years_per_value=years_per_value)
    write_netcdf(ds, out / "hysteresis.nc")
    summary = {"model": X.model_attrs(m), **X.hysteresis_transitions(ds), "n_values": int(values.size),
               "wall_s": time.perf_counter() - t0}
    write_json(summary, out / "hysteresis.json")
    X.plot_hysteresis(ds, out / "hysteresis.png")
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
    _setup()
    import jax

    from nemic.io.output import ensure_writable_dir, write_json
    from nemic.experiments import ebm as X

    out = ensure_writable_dir(out)
    names = [p.strip() for p in params.split(",") if p.strip()]
    tgts = tuple(t.strip() for t in targets.split(",") if t.strip())
    meths = tuple(m.strip() for m in methods.split(",") if m.strip())
    insol = "daily" if "Ts_seasonal" in tgts else "p2"
    truth = _model(num_lat, "sin", insol, albedo_width=albedo_width)
    X.ebm_forward(truth, names, targets=tgts, years=1.0)  # validate the names before the long run
    guess = {n: float(getattr(truth, n)) * guess_factor for n in names}
    t0 = time.perf_counter()
    report = X.calibrate_ebm(truth, names, first_guess=guess, targets=tgts, years=years, methods=meths,
                             noise={"Ts": noise_ts, "OLR": noise_olr, "Ts_seasonal": noise_ts},
                             key=jax.random.PRNGKey(seed))
    report["wall_s"] = time.perf_counter() - t0
    write_json(report, out / "calibration.json")
    X.plot_calibration(report, out / "calibration.png")
    for m, r in report["methods"].items():
        typer.echo(f"{m:>6}: max relative error {r['max_abs_relative_error']:.3%} with {r['n_forward']} forward "
                   f"runs ({r['n_gradient']} gradients)")
    ident = report.get("identifiability_Ts_only", report["identifiability"])
    typer.echo(f"Ts alone leaves poorly identified: {', '.join(ident['poorly_identified']) or 'none'}; "
               f"files in {out}")


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
    _setup()
    import jax

    from nemic.errors import ConfigError
    from nemic.experiments import ebm_hybrid as X
    from nemic.io.output import ensure_writable_dir, write_json
    from nemic.train.checkpoint import save_module

    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    out = ensure_writable_dir(out)
    t0 = time.perf_counter()
    res = X.train_hybrid_ebm(num_lat, moist_D=moist_D, steps=steps, learning_rate=learning_rate,
                             horizon_days=horizon_days, key=jax.random.PRNGKey(seed))
    train_s = time.perf_counter() - t0
    rep = X.evaluate_hybrid_ebm(res)
    rep.update({"loss_history": res["history"].tolist(), "train_s": train_s,
                "eval_s": time.perf_counter() - t0 - train_s})
    write_json(rep, out / "hybrid.json")
    save_module(out / "hybrid_transport.eqx", res["transport"],
                extra={"recipe": "nemic ebm hybrid", "moist_D": moist_D, "seed": seed})
    X.plot_hybrid(rep, res["history"], out / "hybrid.png")
    for name, r in rep["models"].items():
        if name != "reference":
            typer.echo(f"{name:>6}: equilibrium RMSE {r['equilibrium_rmse_vs_reference']:.3f} K, CO2 response RMSE "
                       f"{r['co2_response_rmse_vs_reference']:.3f} K, seasonal-cycle RMSE "
                       f"{r['seasonal_cycle_rmse_vs_reference']:.3f} K")
    typer.echo(f"files in {out}")

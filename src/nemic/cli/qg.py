"""``nemic qg``: the two-layer QG model and the ocean subgrid benchmark (Ross et al. 2023)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Two-layer QG model and the ocean subgrid benchmark.")


def _x64(enable: bool) -> None:
    import jax

    jax.config.update("jax_enable_x64", enable)


@app.command()
def generate(
    config: str = typer.Option("eddy", help="configuration: eddy or jet"),
    years: float = typer.Option(10.0, help="model years (360 days) to integrate; snapshots after the spin-up"),
    out: Path = typer.Option(..., help="output directory"),
    nx_hi: int = typer.Option(256, help="high resolution"),
    nx_lo: int = typer.Option(64, help="low resolution"),
    dt: float = typer.Option(3600.0, help="timestep, s"),
    spinup_years: float = typer.Option(None, help="years discarded before saving (default: half of --years)"),
    save_every: int = typer.Option(1000, help="steps between snapshots"),
    operators: str = typer.Option("op1,op2,op3", help="comma-separated coarse-graining operators"),
    seed: int = typer.Option(0, help="random seed of the initial condition"),
    float64: bool = typer.Option(True, help="compute in float64"),
) -> None:
    """Spin up the high-resolution model and write coarse-grained PV and subgrid forcing (CF netCDF)."""
    _x64(float64)
    from nemic.experiments.qg_subgrid import generate as run

    from nemic.models.qg.configs import CONFIGS
    from nemic.core.errors import ConfigError

    if config not in CONFIGS:
        raise ConfigError(f"unknown QG configuration {config!r}; choose one of {sorted(CONFIGS)}")
    s = run(config, years, out, nx_hi=nx_hi, nx_lo=nx_lo, dt=dt, spinup_years=spinup_years, save_every=save_every,
            operators=[o.strip() for o in operators.split(",") if o.strip()], seed=seed, progress=True)
    typer.echo(f"{s['steps']} steps at nx={nx_hi} in {s['wall_s']:.1f} s ({s['ms_per_step']:.2f} ms/step); "
               f"{s['snapshots']} snapshots written to {out}")

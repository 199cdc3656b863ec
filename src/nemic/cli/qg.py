"""``nemic qg``: the two-layer QG model and the ocean subgrid benchmark (Ross et al. 2023)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Two-layer QG model and the ocean subgrid benchmark.")


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
    restart: Path = typer.Option(None, help="start from the last snapshot of this hires.nc instead"),
    float64: bool = typer.Option(True, help="compute in float64"),
) -> None:
    """Spin up the high-resolution model and write coarse-grained PV and subgrid forcing (CF netCDF)."""
    _x64(float64)
    from nemic.experiments.qg_subgrid import generate as run

    from nemic.models.qg.configs import CONFIGS
    from nemic.errors import ConfigError

    if config not in CONFIGS:
        raise ConfigError(f"unknown QG configuration {config!r}; choose one of {sorted(CONFIGS)}")
    q0 = None
    if restart is not None:
        from nemic.experiments.qg_subgrid import last_snapshot

        q0 = last_snapshot(restart)
    s = run(config, years, out, nx_hi=nx_hi, nx_lo=nx_lo, dt=dt, spinup_years=spinup_years, save_every=save_every,
            operators=[o.strip() for o in operators.split(",") if o.strip()], seed=seed, progress=True, q0=q0)
    typer.echo(f"{s['steps']} steps at nx={nx_hi} in {s['wall_s']:.1f} s ({s['ms_per_step']:.2f} ms/step); "
               f"{s['snapshots']} snapshots written to {out}")


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


@app.command()
def train(
    data: Path = typer.Option(..., help="directory written by `nemic qg generate`"),
    out: Path = typer.Option(..., help="output directory for the trained closure"),
    mode: str = typer.Option("offline", help="offline (fit forcing targets) or online (through rollouts)"),
    operator: str = typer.Option("op1", help="coarse-graining operator of the training data"),
    steps: int = typer.Option(1000, help="optimiser steps"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    batch: int = typer.Option(16, help="snapshots (offline) or rollouts (online) per step"),
    horizon: int = typer.Option(4, help="online: snapshot intervals per rollout"),
    spectrum_weight: float = typer.Option(0.0, help="online: weight of the log KE-spectrum term of the loss"),
    widths: str = typer.Option("64,64,32,32", help="hidden channels of the CNN"),
    init: Path = typer.Option(None, help="start from a saved closure directory (e.g. online fine-tuning of an offline one)"),
    seed: int = typer.Option(0, help="random seed"),
    float64: bool = typer.Option(False, help="train in float64"),
) -> None:
    """Train a CNN closure offline on q_subgrid_forcing or online through low-resolution rollouts."""
    _x64(float64)
    import time as _time

    import jax

    from nemic.errors import ConfigError
    from nemic.experiments import qg_subgrid as ex

    if mode not in ("offline", "online"):
        raise ConfigError(f"mode must be 'offline' or 'online', got {mode!r}")
    ds, lo = ex.load_dataset(data, operator)
    key = jax.random.key(seed)
    if init is not None:
        closure, _ = ex.load_trained_closure(init)
    else:
        s_q, s_S = ex.scales(ds)
        closure = ex.make_cnn_closure(s_q, s_S, widths=_ints(widths), key=key)
    t0 = _time.perf_counter()
    if mode == "offline":
        closure, losses = ex.train_offline(closure, ds, steps=steps, batch=batch, lr=lr, key=key, progress=True)
    else:
        closure, losses = ex.train_online(closure, lo, ds, steps=steps, horizon=horizon, batch=batch, lr=lr,
                                          key=key, spectrum_weight=spectrum_weight, progress=True)
    info = {"mode": mode, "operator": operator, "steps": steps, "lr": lr, "batch": batch, "losses": losses,
            "horizon": horizon if mode == "online" else None, "spectrum_weight": spectrum_weight,
            "init": None if init is None else str(init), "seed": seed,
            "train_wall_s": _time.perf_counter() - t0, "config": ds.attrs.get("config")}
    ex.save_trained_closure(closure, out, info)
    typer.echo(f"{mode} training: loss {losses[0][1]:.4g} -> {losses[-1][1]:.4g} in {info['train_wall_s']:.1f} s; "
               f"saved to {out}/closure.eqx")


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="directory written by `nemic qg generate`"),
    out: Path = typer.Option(..., help="output directory (metrics.json, spectra.png, snapshots.png)"),
    closures: str = typer.Option("smagorinsky,backscatter",
                                 help="comma-separated: smagorinsky, backscatter, or NAME=DIR of a trained CNN"),
    operator: str = typer.Option("op1", help="coarse-graining operator of the reference data"),
    steps: int = typer.Option(None, help="steps of each free run (default: the dataset's span)"),
    save_every: int = typer.Option(None, help="steps between scored snapshots (default: the dataset's spacing)"),
    spinup_steps: int = typer.Option(0, help="steps discarded at the start of each free run"),
    runs: int = typer.Option(1, help="free runs per closure, started from snapshots spread over the dataset"),
    target: str = typer.Option("hires", help="reference: hires (the high-resolution run, as the benchmark) or "
                                             "coarse (its coarse-grained snapshots)"),
    float64: bool = typer.Option(True, help="run in float64"),
) -> None:
    """Free runs of the low-resolution model with each closure, scored by the benchmark's similarity metrics."""
    _x64(float64)
    from nemic.errors import ConfigError
    from nemic.experiments import qg_subgrid as ex
    from nemic.processes.qg_closures import BackscatterBiharmonic, Smagorinsky

    _, lo = ex.load_dataset(data, operator)
    procs = {}
    for item in [c.strip() for c in closures.split(",") if c.strip()]:
        if item == "smagorinsky":
            procs[item] = Smagorinsky(lo)
        elif item == "backscatter":
            procs[item] = BackscatterBiharmonic(lo)
        elif "=" in item:
            name, path = item.split("=", 1)
            procs[name] = ex.load_trained_closure(path)[0]
        else:
            raise ConfigError(f"unknown closure {item!r}; use smagorinsky, backscatter or NAME=DIR")
    m = ex.evaluate(data, procs, out, operator=operator, n_steps=steps, save_every=save_every,
                    spinup_steps=spinup_steps, n_runs=runs, target=target, progress=True)
    for name, s in m["closures"].items():
        typer.echo(f"{name:>14}: similarity mean {s['mean']:+.3f}  min {s['min']:+.3f}")
    typer.echo(f"wrote {out}/metrics.json")


@app.command()
def table(
    evals: list[Path] = typer.Argument(..., help="directories written by `nemic qg evaluate` (one per configuration)"),
) -> None:
    """Print the similarity table (mean and minimum over the metrics) of several evaluations, as Markdown."""
    from nemic.experiments.qg_subgrid import similarity_table

    typer.echo(similarity_table(evals))

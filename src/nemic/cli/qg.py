"""``nemic qg``: the two-layer QG model and the ocean subgrid benchmark (Ross et al. 2023)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Two-layer QG model and the ocean subgrid benchmark.")


def _x64(enable: bool) -> None:
    import jax

    jax.config.update("jax_enable_x64", enable)


def _ints(name: str, text: str) -> tuple[int, ...]:
    """Comma-separated positive integers (``--widths 64,32``), or a one-line ConfigError naming the option."""
    from nemic.errors import ConfigError

    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        vals = tuple(int(x) for x in items)
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        raise ConfigError(f"--{name} must be comma-separated positive integers (e.g. 64,64,32,32), got {text!r}")
    return vals


def _finite(name: str, value: float, *, low: float | None = None, strict: bool = True) -> None:
    """One-line ConfigError unless ``value`` is finite (and > low, or >= low when not ``strict``)."""
    import math

    from nemic.errors import ConfigError

    if not math.isfinite(value):
        raise ConfigError(f"--{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"--{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")


def _at_least(name: str, value: int | None, low: int) -> None:
    from nemic.errors import ConfigError

    if value is not None and value < low:
        raise ConfigError(f"--{name} must be an integer >= {low}, got {value!r}")


@app.command()
def generate(
    config: str = typer.Option("eddy", help="configuration: eddy or jet"),
    years: float = typer.Option(10.0, help="model years (360 days) to integrate; snapshots after the spin-up"),
    out: Path = typer.Option(..., help="output directory (replaced whole when the run has finished)"),
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
    """Spin up the high-resolution model and write coarse-grained PV and subgrid forcing (CF netCDF).

    Every setting is checked first; the files replace --out whole at the end (a failed run changes nothing)."""
    _finite("years", years, low=0.0)
    _finite("dt", dt, low=0.0)
    if spinup_years is not None:
        _finite("spinup-years", spinup_years, low=0.0, strict=False)
    _at_least("save-every", save_every, 1)
    _at_least("nx-hi", nx_hi, 8)
    _at_least("nx-lo", nx_lo, 8)
    _x64(float64)
    from nemic.experiments import qg_subgrid as ex
    from nemic.experiments.config import check_replaceable

    check_replaceable(out)
    ops = [o.strip() for o in operators.split(",") if o.strip()]
    q0 = None
    if restart is not None:
        ex.check_grid_pair(nx_hi, nx_lo)  # before reading a possibly large restart file
        q0 = ex.last_snapshot(restart)
    kw = dict(nx_hi=nx_hi, nx_lo=nx_lo, dt=dt, spinup_years=spinup_years, save_every=save_every, operators=ops,
              seed=seed, q0=q0)
    ex.check_generate(config, years, **kw)
    s = ex.generate(config, years, out, progress=True, **kw)
    typer.echo(f"{s['steps']} steps at nx={nx_hi} in {s['wall_s']:.1f} s ({s['ms_per_step']:.2f} ms/step); "
               f"{s['snapshots']} snapshots written to {out}")


@app.command()
def train(
    data: Path = typer.Option(..., help="directory written by `nemic qg generate`"),
    out: Path = typer.Option(..., help="output directory for the trained closure (replaced whole at the end)"),
    mode: str = typer.Option("offline", help="offline (fit forcing targets) or online (through rollouts)"),
    operator: str = typer.Option("op1", help="coarse-graining operator of the training data"),
    steps: int = typer.Option(1000, help="optimiser steps"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    batch: int = typer.Option(16, help="snapshots (offline) or rollouts (online) per step"),
    horizon: int = typer.Option(4, help="online: snapshot intervals per rollout"),
    spectrum_weight: float = typer.Option(0.0, help="online: weight of the log KE-spectrum term of the loss"),
    widths: str = typer.Option(None, help="hidden channels of the CNN (default 64,64,32,32; with --init: the saved "
                                          "network's, and a different value is refused)"),
    init: Path = typer.Option(None, help="start from a saved closure directory (e.g. online fine-tuning of an offline one)"),
    seed: int = typer.Option(0, help="random seed"),
    float64: bool = typer.Option(False, help="train in float64"),
) -> None:
    """Train a CNN closure offline on q_subgrid_forcing or online through low-resolution rollouts.

    Every setting, the data (finite) and --init are checked first; the closure replaces --out whole at the end."""
    from nemic.errors import ConfigError

    if mode not in ("offline", "online"):
        raise ConfigError(f"--mode must be 'offline' or 'online', got {mode!r}")
    _at_least("steps", steps, 1)
    _finite("lr", lr, low=0.0)
    _at_least("batch", batch, 1)
    _at_least("horizon", horizon, 1)
    _finite("spectrum-weight", spectrum_weight, low=0.0, strict=False)
    net_widths = None if widths is None else _ints("widths", widths)
    _x64(float64)
    import time as _time

    import jax

    from nemic.core.errors import check_finite
    from nemic.experiments import qg_subgrid as ex
    from nemic.experiments.config import check_replaceable, staged_run

    check_replaceable(out)
    ex.check_distinct_paths(out, data)
    ds, lo = ex.load_dataset(data, operator)  # checked finite, naming file and variable
    n = ds.sizes["time"]
    if mode == "online" and n < horizon + 1:
        raise ConfigError(f"online training with --horizon {horizon} needs at least {horizon + 1} snapshots; "
                          f"'{data}/{operator}.nc' has {n}")
    key = jax.random.key(seed)
    if init is not None:
        saved = ex.saved_closure_widths(init)  # from the file's header: checked before the weights are read
        if net_widths is not None and saved and tuple(net_widths) != saved:
            raise ConfigError(f"--widths {','.join(map(str, net_widths))} does not match the closure in '{init}' "
                              f"(widths {','.join(map(str, saved))}); leave --widths out to fine-tune it")
        closure, _ = ex.load_trained_closure(init)
        check_finite(f"the closure in '{init}'", closure)
    else:
        s_q, s_S = ex.scales(ds)
        closure = ex.make_cnn_closure(s_q, s_S, widths=net_widths or (64, 64, 32, 32), key=key)
    settings = {"data": str(data), "mode": mode, "operator": operator, "steps": steps, "lr": lr, "batch": batch,
                "horizon": horizon, "spectrum_weight": spectrum_weight, "widths": widths,
                "init": None if init is None else str(init), "seed": seed, "float64": float64}
    t0 = _time.perf_counter()
    with staged_run(out, "qg train", settings) as stage:
        if mode == "offline":
            closure, losses = ex.train_offline(closure, ds, steps=steps, batch=batch, lr=lr, key=key, progress=True)
        else:
            closure, losses = ex.train_online(closure, lo, ds, steps=steps, horizon=horizon, batch=batch, lr=lr,
                                              key=key, spectrum_weight=spectrum_weight, progress=True)
        info = {"mode": mode, "operator": operator, "steps": steps, "lr": lr, "batch": batch, "losses": losses,
                "horizon": horizon if mode == "online" else None, "spectrum_weight": spectrum_weight,
                "init": None if init is None else str(init), "seed": seed,
                "train_wall_s": _time.perf_counter() - t0, "config": ds.attrs.get("config")}
        ex.save_trained_closure(closure, stage, info)
    typer.echo(f"{mode} training: loss {losses[0][1]:.4g} -> {losses[-1][1]:.4g} in {info['train_wall_s']:.1f} s; "
               f"saved to {out}/closure.eqx")


def _closure_specs(text: str) -> list[tuple[str, str | None]]:
    """``[(name, dir or None)]`` from ``smagorinsky,backscatter,NAME=DIR``; one-line ConfigError otherwise."""
    from nemic.errors import ConfigError

    specs: list[tuple[str, str | None]] = []
    for item in [c.strip() for c in text.split(",") if c.strip()]:
        if item in ("smagorinsky", "backscatter"):
            specs.append((item, None))
        elif "=" in item:
            name, path = (x.strip() for x in item.split("=", 1))
            if not name or not path:
                raise ConfigError(f"--closures: {item!r} must be NAME=DIR with a name and a directory")
            specs.append((name, path))
        else:
            raise ConfigError(f"unknown closure {item!r} in --closures; use smagorinsky, backscatter or NAME=DIR")
    names = [n for n, _ in specs]
    if "low_res" in names:
        raise ConfigError("--closures: 'low_res' is the name of the uncorrected run; choose another name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--closures names {dup} more than once")
    return specs


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="directory written by `nemic qg generate`"),
    out: Path = typer.Option(..., help="output directory (metrics.json, spectra.png, snapshots.png; replaced whole)"),
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
    """Free runs of the low-resolution model with each closure, scored by the benchmark's similarity metrics.

    Every setting, the data (finite) and the closures are checked first; the results replace --out whole."""
    from nemic.errors import ConfigError

    specs = _closure_specs(closures)
    _at_least("steps", steps, 1)
    _at_least("save-every", save_every, 1)
    _at_least("spinup-steps", spinup_steps, 0)
    _at_least("runs", runs, 1)
    if target not in ("hires", "coarse"):
        raise ConfigError(f"--target must be 'hires' or 'coarse', got {target!r}")
    _x64(float64)
    from nemic.core.errors import check_finite
    from nemic.experiments import qg_subgrid as ex
    from nemic.experiments.config import check_replaceable
    from nemic.processes.qg_closures import BackscatterBiharmonic, Smagorinsky

    check_replaceable(out)
    ex.check_distinct_paths(out, data)
    _, lo = ex.load_dataset(data, operator)
    procs = {}
    for name, path in specs:
        if name == "smagorinsky" and path is None:
            procs[name] = Smagorinsky(lo)
        elif name == "backscatter" and path is None:
            procs[name] = BackscatterBiharmonic(lo)
        else:
            procs[name] = ex.load_trained_closure(path)[0]
            check_finite(f"the closure in '{path}'", procs[name])
    m = ex.evaluate(data, procs, out, operator=operator, n_steps=steps, save_every=save_every,
                    spinup_steps=spinup_steps, n_runs=runs, target=target, progress=True)
    for name, s in m["closures"].items():
        if s["mean"] is None:
            typer.echo(f"{name:>14}: blew up before its first scored snapshot (no score)")
        else:
            typer.echo(f"{name:>14}: similarity mean {s['mean']:+.3f}  min {s['min']:+.3f}")
    typer.echo(f"wrote {out}/metrics.json")


@app.command()
def table(
    evals: list[Path] = typer.Argument(..., help="directories written by `nemic qg evaluate` (one per configuration)"),
) -> None:
    """Print the similarity table (mean and minimum over the metrics) of several evaluations, as Markdown."""
    from nemic.experiments.qg_evaluation import similarity_table

    typer.echo(similarity_table(evals))


@app.command()
def stochastic(
    data: Path = typer.Option(..., help="long `nemic qg generate` directory (snapshots days apart): offline "
                                        "training and the high-resolution climate of the similarity score"),
    forecast_data: Path = typer.Option(..., help="short `nemic qg generate` directory of the same configuration, "
                                                 "snapshots hours apart: CRPS training (first part) and forecasts"),
    out: Path = typer.Option(Path("runs/qg_stochastic"), help="output directory (replaced whole at the end)"),
    init: Path = typer.Option(None, help="a saved deterministic CNN closure (`nemic qg train`) instead of the "
                                         "recipe's offline training"),
    init_stochastic: Path = typer.Option(None, help="a stochastic closure directory of an earlier run "
                                                    "(its closures/stochastic_cnn) instead of the CRPS fitting; "
                                                    "needs --init"),
    config: Path = typer.Option(None, help="TOML/JSON file overriding recipe settings"),
    quick: bool = typer.Option(False, "--quick", help="tiny sizes: a smoke test, not science"),
    seed: int = typer.Option(None, help="random seed (overrides the config)"),
    mode: str = typer.Option(None, help="how the noise enters the closure: multiplicative (SPPT-like, the "
                                        "default), additive or input (overrides the config's closure_mode)"),
    float64: bool = typer.Option(False, help="compute in float64"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """A stochastic CNN closure fitted by the CRPS through rollouts: ensemble forecasts (CRPS, spread/error at
    1-5 days) and the similarity of its free runs beside the deterministic offline CNN's (metrics.json,
    scores.nc, forecast_stochastic_cnn.nc, PNGs, closures/)."""
    _x64(float64)
    import time as _time

    from nemic.experiments import qg_stochastic as qs
    from nemic.experiments.config import load_config, quick_keeping_changes

    t0 = _time.perf_counter()
    overrides = {k: v for k, v in (("seed", seed), ("closure_mode", mode)) if v is not None}
    if mode == "input":
        overrides["crps_train_net"] = True
    cfg = load_config(qs.QGStochasticConfig, config, overrides or None)
    if quick:
        cfg = quick_keeping_changes(cfg, qs.quick_config())
    m = qs.run(cfg, data, forecast_data, out, init=init, init_stochastic=init_stochastic, progress=progress,
               log=typer.echo)
    for name, c in m["closures"].items():
        crps = "  ".join(f"{d}d {v:.3f}" for d, v in c["crps"].items() if v is not None)
        ratio = "" if not c.get("spread_error") else "  spread/error " + " ".join(
            f"{v:.2f}" for v in c["spread_error"].values() if v is not None)
        if c["similarity"] is None:  # an ensemble variant of a closure scored above (no free runs of its own)
            sim_text = ""
        else:
            sim = c["similarity"]["mean"]
            sim_text = f"  similarity {'blew up' if sim is None else f'{sim:+.3f}'}"
        typer.echo(f"{name:>26}: CRPS {crps}{ratio}{sim_text}")
    typer.echo(f"checks: {m['checks']}")
    typer.echo(f"wall time {_time.perf_counter() - t0:.1f} s; results in {out}")

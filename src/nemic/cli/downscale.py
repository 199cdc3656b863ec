"""``nemic downscale``: precipitation downscaling of OPERA radar rain (train, evaluate, sample)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False,
                  help="Precipitation downscaling: U-Nets with MSE / Minkowski losses and a flow-matching ensemble.")

_SCORES = ("mae", "fss_5mm_9px", "rapsd_error", "minkowski_distance", "crps", "spread_error")


def _print_scores(metrics: dict, title: str, t0: float, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from nemic.experiments.downscaling_eval import score_table

    console = Console()
    table = Table(title=title)
    table.add_column("model")
    for k in _SCORES:
        table.add_column(k, justify="right")
    for row in score_table(metrics["models"], _SCORES):
        table.add_row(*row)
    console.print(table)
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s")
    console.print(f"results in: [bold]{Path(out).resolve()}[/bold]")


def _check_file(data: Optional[Path]) -> None:
    if data is not None:
        from nemic.experiments.config import check_readable_file

        check_readable_file(data, "OPERA file")


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="OPERA file (ODIM-HDF5 or netCDF); default: the "
                                        "shipped sample (6 frames of 256 x 256, a smoke test only)"),
    out: Path = typer.Option(Path("runs/downscale"), "--out", help="Results directory (replaced whole at the end)."),
    factor: int = typer.Option(10, "--factor", help="Coarsening factor: 10 (120-point patches), 8 or 16 (128)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding recipe settings."),
    quick: bool = typer.Option(False, "--quick", help="Tiny networks and a few steps: a smoke test, not science."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train the five downscaling models on the earlier frames, evaluate them on the later frames.

    Writes weights/<model>.eqx with weights/training_report.json, metrics.json (models.<name>.<score>),
    predictions.nc and PNGs (cases, RAPSD, FSS against scale, Minkowski curves, training losses) into --out.
    """
    import dataclasses

    from rich.console import Console

    from nemic.experiments.config import load_config, read_config_file
    from nemic.experiments.downscaling import DownscalingConfig, quick_config, run_train

    _check_file(data)
    t0 = time.perf_counter()
    overrides = {"factor": factor}
    if seed is not None:
        overrides["seed"] = seed
    cfg = load_config(DownscalingConfig, config, overrides)
    if quick:
        given = set(read_config_file(config)) if config is not None else set()
        keep = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in given | set(overrides)}
        cfg = quick_config(**keep)
    console = Console()
    metrics = run_train(cfg, out, data, progress=progress, log=lambda m: console.print(f"[bold cyan]{m}"))
    _print_scores(metrics, f"downscaling x{cfg.factor}, test block ({metrics['test']['patches']} patches)", t0, out)


@app.command()
def evaluate(
    data: Optional[Path] = typer.Option(None, "--data", help="OPERA file (ODIM-HDF5 or netCDF); default: the "
                                        "shipped sample"),
    out: Path = typer.Option(Path("runs/downscale_eval"), "--out", help="Results directory."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Folder of <model>.eqx files (e.g. the "
                                           "weights/ of a train run); default: the weights shipped with nemic"),
    all_frames: bool = typer.Option(False, "--all-frames", help="Score every frame, not only the later block "
                                    "(for files the weights were not trained on)."),
    members: Optional[int] = typer.Option(None, "--members", help="Ensemble members of the generative models."),
    max_patches: Optional[int] = typer.Option(None, "--max-patches", help="At most this many test patches."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score saved downscaling models on an OPERA file: metrics.json, predictions.nc and PNGs in --out."""
    from rich.console import Console

    from nemic.errors import ConfigError
    from nemic.experiments.downscaling import run_evaluate

    _check_file(data)
    overrides = {}
    for name, v, lo in (("members", members, 2), ("max_test_patches", max_patches, 1)):
        if v is not None:
            if v < lo:
                raise ConfigError(f"--{name.replace('_test_', '-').replace('_', '-')} must be an integer >= {lo}, "
                                  f"got {v}")
            overrides[name] = v
    t0 = time.perf_counter()
    console = Console()
    metrics = run_evaluate(out, data, weights, all_frames=all_frames, overrides=overrides, progress=progress,
                           log=lambda m: console.print(f"[bold cyan]{m}"))
    _print_scores(metrics, f"downscaling, {metrics['test']['patches']} test patches", t0, out)


@app.command()
def sample(
    data: Optional[Path] = typer.Option(None, "--data", help="OPERA file; default: the shipped sample"),
    out: Path = typer.Option(Path("runs/downscale_sample"), "--out", help="Results directory."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Folder of <model>.eqx files; default: shipped"),
    frame: int = typer.Option(-1, "--frame", help="Time index (negative counts from the end)."),
    window: str = typer.Option("", "--window", help="y0,x0 of the patch (pixel indices); default: the wettest"),
    members: int = typer.Option(8, "--members", help="Ensemble members of the generative models."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the ensembles."),
) -> None:
    """Downscale one block-averaged patch with every model: sample.nc (truth, coarse, predictions, members) and
    sample.png side by side."""
    from rich.console import Console

    from nemic.errors import ConfigError
    from nemic.experiments.downscaling import run_sample

    _check_file(data)
    win = None
    if window:
        try:
            y0, x0 = (int(v) for v in window.split(","))
        except ValueError:
            raise ConfigError(f"--window must look like y0,x0 (two integers), got {window!r}") from None
        win = (y0, x0)
    if members < 2:
        raise ConfigError(f"--members must be an integer >= 2, got {members}")
    info = run_sample(out, data, weights, frame=frame, window=win, members=members, seed=seed,
                      log=lambda m: Console().print(f"[bold cyan]{m}"))
    Console().print(f"downscaled the patch at ({info['y0']}, {info['x0']}) of frame {info['frame']} with "
                    f"{', '.join(info['models'])}; results in [bold]{Path(out).resolve()}[/bold]")

"""``nemic quickstart``: the main job, the Lorenz-96 closure recipe with the default settings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from nemic.cli import app


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Directory for results (created if needed)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding recipe settings."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train and compare closures of the two-scale Lorenz-96 model (none, polynomial, NN offline, NN online)."""
    from rich.console import Console
    from rich.table import Table

    from nemic.experiments.config import load_config
    from nemic.experiments.l96_closure import L96ClosureConfig, run

    console = Console()
    t0 = time.perf_counter()
    cfg = load_config(L96ClosureConfig, config, {"seed": seed} if seed is not None else None)
    metrics = run(cfg, out, progress=progress, log=lambda m: console.print(f"[bold cyan]{m}"))
    table = Table(title="Lorenz-96 closures (coarse model dt = %g)" % cfg.coarse_dt)
    for col in ("closure", "rmse@0.5", "rmse@1", "rmse@2", "skill lost", "hellinger", "stable"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in metrics["closures"].items():
        f = m["forecast_rmse"]
        table.add_row(name, *(f"{f.get(k):.3f}" if f.get(k) is not None else "-" for k in ("0.5", "1.0", "2.0")),
                      f"{lost:.2f}" if (lost := m["skill_lost_lead_time"]) is not None else f"> {cfg.max_lead:g}",
                      f"{m['hellinger_x']:.3f}", "yes" if m["stable"] else "NO")
    console.print(table)
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s")
    console.print(f"results in: [bold]{Path(out).resolve()}[/bold] (metrics.json, *.nc, *.png)")

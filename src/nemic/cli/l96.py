"""``nemic l96``: Lorenz-96 recipes. ``nemic l96 stochastic`` compares stochastic closures as ensembles."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Lorenz-96 recipes: stochastic closures and ensembles.")


@app.command()
def stochastic(
    out: Path = typer.Option(Path("runs/l96_stochastic"), "--out", help="Directory for results (replaced whole "
                             "when the run finishes)."),
    c: Optional[List[float]] = typer.Option(None, "--c", help="Time-scale ratio(s) c of the truth; repeat for "
                                            "several (default: 10 and 4, or the --config preset's)."),
    config: Optional[str] = typer.Option(None, "--config", help="A named truth configuration (wilks: K=8, J=32, "
                                         "h=1, b=10, F=20, c=10 and 4; terrax: J=4, F=18, c=5, b=3) or a TOML/JSON "
                                         "file overriding recipe settings."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (about a minute): a smoke test, not science."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Deterministic NN, polynomial + AR(1) and a CRPS-trained stochastic NN closure of two-scale Lorenz-96, as
    ensembles: CRPS, RMSE, spread/error and rank histograms against lead time, Hellinger distance of the climate
    (metrics.json, scores.nc, ensemble_*.nc, PNGs in --out/c<c>/)."""

    from rich.console import Console
    from rich.table import Table

    from nemic.experiments.config import load_config, quick_keeping_changes
    from nemic.experiments.l96_stochastic import PRESETS, L96StochasticConfig, preset, quick_config, run_all

    console = Console()
    t0 = time.perf_counter()
    overrides = {"seed": seed} if seed is not None else {}
    c_values = (10.0, 4.0)
    if config is not None and config in PRESETS and not Path(config).exists():
        truth, c_values = preset(config)
        overrides = {**truth, **overrides}
        config = None
    c_values = tuple(c) if c else c_values
    cfg = load_config(L96StochasticConfig, config, overrides)
    if quick:
        cfg = quick_keeping_changes(cfg, quick_config())
    metrics = run_all(cfg, out, c_values, progress=progress, log=lambda m: console.print(f"[bold cyan]{m}"))
    for cv, m in metrics["by_c"].items():
        table = Table(title=f"Lorenz-96 stochastic closures, c = {cv}")
        for col in ("closure", "CRPS@0.2", "CRPS@1", "CRPS@2", "spread/err@0.2", "spread/err@1", "spread/err@2",
                    "hellinger"):
            table.add_column(col, justify="right", no_wrap=True)
        for name, s in m["closures"].items():
            f = lambda d, k: f"{d[k]:.3f}" if d.get(k) is not None else "-"  # noqa: E731
            table.add_row(name, f(s["crps"], "0.2"), f(s["crps"], "1.0"), f(s["crps"], "2.0"),
                          f(s["spread_error"], "0.2"), f(s["spread_error"], "1.0"), f(s["spread_error"], "2.0"),
                          f"{s['hellinger_x']:.3f}")
        console.print(table)
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s")
    console.print(f"results in: [bold]{Path(out).resolve()}[/bold]")

"""``nemic atmos generate`` and ``nemic atmos train --offline``: the SPEEDY truth and the offline column physics.

The command functions are registered on the ``nemic atmos`` group by :mod:`nemic.cli.atmos`; this module also
defines its own ``app`` with the same two commands (used in tests).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Truth from jcm's SPEEDY physics and the offline-trained column physics.")


def generate(
    out: Path = typer.Option(Path("runs/atmos_truth"), "--out", help="Directory for train.zarr, test.zarr and "
                             "metrics.json (replaced whole when the run finishes)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding the truth settings "
                                          "(truncation, target_truncation, layers, spinup_days, days, test_days, "
                                          "save_hours, chunk_days)."),
    quick: bool = typer.Option(False, "--quick", help="A few days (minutes, mostly compilation): a smoke test."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run jcm's SPEEDY aquaplanet (offline: analytic SSTs and ozone, nothing downloaded), discard the spin-up and
    write 6-hourly T, u, v, q, surface pressure, precipitation, evaporation, insolation and the physics-only
    tendencies as CF zarr (train.zarr, and test.zarr for the held-out last days)."""
    import dataclasses

    from rich.console import Console

    from nemic.experiments.atmos_truth import TruthConfig, generate as run_generate, quick_truth_config
    from nemic.experiments.config import load_config

    console = Console()
    t0 = time.perf_counter()
    cfg = load_config(TruthConfig, config)
    if quick:
        defaults, q = TruthConfig(), quick_truth_config()
        changed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                   if getattr(cfg, f.name) != getattr(defaults, f.name)}
        cfg = dataclasses.replace(q, **changed)
    m = run_generate(cfg, out, progress=progress, log=lambda s: console.print(f"[bold cyan]{s}"))
    spp = m["jcm_seconds_per_step"]
    console.print(f"jcm SPEEDY T{cfg.truncation}L{cfg.layers}: "
                  + (f"{spp * 1e3:.1f} ms per step" if spp else "time per step needs two chunks")
                  + f"; mean precipitation {m['water_budget_residual_kg_m2_s']['mean_precipitation'] * 86400:.2f} "
                  f"mm/day; water-budget residual (rms) {m['water_budget_residual_kg_m2_s']['rms']:.2e} kg m-2 s-1")
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in: [bold]{Path(out).resolve()}[/bold]")


def train(
    truth: Path = typer.Option(..., "--truth", help="Directory written by 'nemic atmos generate'."),
    out: Path = typer.Option(Path("runs/atmos_offline"), "--out", help="Directory for column_net.eqx, "
                             "scores.nc, offline.png and metrics.json (replaced whole when the run finishes)."),
    offline: bool = typer.Option(False, "--offline", help="Fit the column network to the truth's physics "
                                 "tendencies (the only training this command does so far)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding training settings."),
    quick: bool = typer.Option(False, "--quick", help="Tiny network and few iterations: a smoke test."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train the column physics: with --offline, regression on the truth's physics tendencies, precipitation and
    evaporation, scored on the held-out period (R2 per output and level)."""
    import dataclasses

    from rich.console import Console

    from nemic.errors import ConfigError
    from nemic.experiments.atmos_offline import OfflineConfig, quick_offline_config, train_offline
    from nemic.experiments.config import load_config

    if not offline:
        raise ConfigError("only offline training is available: pass --offline (online training through rollouts "
                          "of the hybrid is not in this command yet)")
    console = Console()
    t0 = time.perf_counter()
    cfg = load_config(OfflineConfig, config, {"seed": seed} if seed is not None else None)
    if quick:
        defaults, q = OfflineConfig(), quick_offline_config()
        changed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                   if getattr(cfg, f.name) != getattr(defaults, f.name)}
        cfg = dataclasses.replace(q, **changed)
    m = train_offline(cfg, truth, out, progress=progress, log=lambda s: console.print(f"[bold cyan]{s}"))
    console.print(f"test loss {m['test_loss']:.4f} (zero network {m['test_loss_zero_network']:.4f}); "
                  f"precipitation RMSE {m['rmse_precipitation_mm_day']:.3f} mm/day")
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in: [bold]{Path(out).resolve()}[/bold]")


app.command("generate")(generate)
app.command("train")(train)

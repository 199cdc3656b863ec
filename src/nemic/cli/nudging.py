"""``nemic nudging``: nudged runs, and model corrections learned from their nudging tendencies.

``nemic nudging l96|ebm|qg --out DIR`` run the recipes of :mod:`nemic.experiments` (``nudging_l96``,
``nudging_ebm``, ``nudging_qg``); ``l96`` writes metrics.json, the nudged run
with its nudging tendencies (``nudged_run.nc``), free runs, guard diagnostics and PNG plots into ``DIR``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Nudged runs and corrections learned from nudging tendencies.")


@app.command()
def l96(
    out: Path = typer.Option(Path("runs/nudging_l96"), "--out", help="Directory for results (created if needed)."),
    tau: float = typer.Option(0.05, "--tau", help="Nudging time scale (model time units, > 0)."),
    small: bool = typer.Option(False, "--small", help="A tiny configuration that runs in about a minute."),
    online: bool = typer.Option(True, "--online/--no-online", help="Also train the online closure to compare."),
    config: Optional[Path] = typer.Option(None, "--config",
                                          help="TOML/JSON file with L96ClosureConfig settings (truth, evaluation)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Lorenz-96: nudge the one-scale model toward the two-scale truth, learn a correction from the nudging
    tendencies and compare it run free with the uncorrected model and the offline/online closures."""
    import dataclasses

    import jax
    from rich.console import Console
    from rich.table import Table

    jax.config.update("jax_enable_x64", True)
    from nemic.experiments.config import load_config
    from nemic.experiments.l96_closure import L96ClosureConfig
    from nemic.experiments.nudging_l96 import NudgingL96Config, run

    console = Console()
    t0 = time.perf_counter()
    base = NudgingL96Config.tiny() if small else NudgingL96Config()
    closure = base.closure
    if config is not None:
        closure = load_config(L96ClosureConfig, config)
    if seed is not None:
        closure = dataclasses.replace(closure, seed=seed)
    cfg = NudgingL96Config(closure=closure, tau=tau, online=online)
    metrics = run(cfg, out, progress=progress, log=lambda m: console.print(f"[bold cyan]{m}"))
    table = Table(title=f"Lorenz-96, coarse models run free (nudging tau = {tau:g})")
    for col in ("model", "mean bias", "std bias", "hellinger", "rmse@0.5", "rmse@1", "stable"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in metrics["models"].items():
        f = m["forecast_rmse"]
        table.add_row(name, f"{m['mean_bias']:+.3f}", f"{m['std_bias']:+.3f}", f"{m['hellinger_x']:.3f}",
                      *(f"{f.get(k):.3f}" if f.get(k) is not None else "-" for k in ("0.5", "1.0")),
                      "yes" if m["stable"] else "NO")
    console.print(table)
    g = metrics["guard"]["corrected_free_run"]
    console.print(f"guard: {g['n_flagged']} of {g['n_states']} states of the corrected free run flagged as novel "
                  f"(false-alarm rate on the truth's test period {metrics['guard']['false_alarm_rate_truth_test']:.4f})")
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in [bold]{Path(out).resolve()}[/bold]")


@app.command()
def ebm(
    out: Path = typer.Option(Path("runs/nudging_ebm"), "--out", help="Directory for results (created if needed)."),
    tau_days: float = typer.Option(5.0, "--tau-days", help="Nudging time scale in days (> 0)."),
    num_lat: int = typer.Option(90, "--num-lat", help="Number of latitude cells."),
    years: float = typer.Option(20.0, "--years", help="Length of the nudged run in years."),
    free_years: float = typer.Option(30.0, "--free-years", help="Length of the free runs in years."),
) -> None:
    """EBM: nudge the dry EBM toward the moist EBM, take the mean nudging tendency as a flux correction and compare
    the equilibria (metrics.json, nudged_run.nc, equilibria.nc, ebm_flux_correction.png)."""
    import jax
    from rich.console import Console

    jax.config.update("jax_enable_x64", True)
    from nemic.experiments.nudging_ebm import NudgingEBMConfig, run

    console = Console()
    cfg = NudgingEBMConfig(num_lat=num_lat, tau_days=tau_days, years=years, free_years=free_years)
    m = run(cfg, out, log=lambda s: console.print(f"[bold cyan]{s}"))
    for name, v in m["models"].items():
        console.print(f"{name:>15}: Ts RMSE {v['rmse_Ts']:.3f} K, global-mean bias {v['global_mean_bias']:+.3f} K, "
                      f"ice edge {v['ice_edge']:.1f} deg (truth {m['truth']['ice_edge']:.1f})")
    console.print(f"results in [bold]{Path(out).resolve()}[/bold]")


@app.command()
def qg(
    data: Path = typer.Option(Path("runs/qg/eddy"), "--data",
                              help="Directory written by `nemic qg generate` (hires.nc for the restart, op1.nc)."),
    out: Path = typer.Option(Path("runs/nudging_qg"), "--out",
                             help="Directory for results (created if needed; replaced whole when the run finishes)."),
    days: Optional[float] = typer.Option(None, "--days", help="Length of the reference and nudged runs (days)."),
    tau_days: Optional[float] = typer.Option(None, "--tau-days", help="Nudging time scale in days (> 0)."),
    spectral_cutoff: Optional[int] = typer.Option(None, "--spectral-cutoff",
                                                  help="Nudge only wavenumbers |k| <= this (spectral nudging)."),
    free_years: Optional[float] = typer.Option(None, "--free-years", help="Length of the free runs (360-day years)."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help="Adam steps of the CNN fit."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file with NudgingQGConfig settings."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (network initialisation, batches)."),
    compare: Optional[list[str]] = typer.Option(None, "--compare", help="Closure to compare on the test starts: "
                                                "'backscatter' or a directory saved by `nemic qg train` "
                                                "(repeatable; default: backscatter)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Two-layer QG: nudge the low-resolution model toward the coarse-grained high-resolution model restarted from
    DATA, learn a CNN correction from the nudging tendencies, choose its output scale on validation free runs and
    compare free runs from several test starts (uncorrected, corrected, scaled, subgrid closures) against
    DATA/op1.nc (metrics.json, nudged_run.nc, free_runs.nc, correction/, PNG plots). Every setting, the data
    (finite) and the closures to compare are checked first; the files replace --out whole at the end (a failed run
    changes nothing)."""
    import jax
    from rich.console import Console
    from rich.table import Table

    jax.config.update("jax_enable_x64", True)
    from nemic.experiments.nudging_qg import config_from_file, run

    overrides = {k: v for k, v in (("days", days), ("tau_days", tau_days), ("spectral_cutoff", spectral_cutoff),
                                   ("free_years", free_years), ("train_steps", train_steps), ("seed", seed),
                                   ("compare", tuple(compare) if compare else None))
                 if v is not None}
    cfg = config_from_file(config, overrides)
    console = Console()
    t0 = time.perf_counter()
    m = run(data, cfg, out, progress=progress, log=lambda s: console.print(f"[bold cyan]{s}"))
    ref = m["reference_climate"]
    console.print(f"high res (op1): KE {ref['KE']:.3e}, KE1 {ref['KE1']:.3e}, KE2 {ref['KE2']:.3e} m2 s-2, "
                  f"enstrophy {ref['enstrophy']:.3e} s-2")
    nr = m["nudged_run"]
    console.print(f"holdout R2 of the correction (layers 1, 2): {', '.join(f'{r:.3f}' for r in nr['holdout_r2'])}; "
                  f"scale chosen on validation starts {m['validation']['starts']}: "
                  f"{m['validation']['chosen_scale']:g}")
    table = Table(title=f"free-run relative biases (%) over test starts {m['test_starts']}: mean +- std")
    for col in ("model", "KE", "KE1", "KE2", "enstrophy", "similarity", "flags (nudged / climate guard)",
                "stable"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, v in m["models"].items():
        b = v["biases"]
        cells = [f"{100 * b[k]['mean']:+.1f} +- {100 * b[k]['std']:.1f}"
                 + ("*" if b[k].get("reduction_exceeds_spread") else "") for k in ("KE", "KE1", "KE2", "enstrophy")]
        sim = v.get("similarity")
        g = m["guard"]["free_runs"][name]["flagged_fraction"]
        gc = (m["guard_climate"] or {}).get("free_runs", {}).get(name, {}).get("flagged_fraction")
        table.add_row(name, *cells, "-" if sim is None else f"{sim['mean']:+.2f} +- {sim['std']:.2f}",
                      " / ".join("-" if x is None else f"{100 * x:.0f} %" for x in (g, gc)),
                      "yes" if v["all_stable"] else "NO")
    console.print(table)
    console.print("* bias reduction against low_res larger than the spread (max of the two standard deviations)")
    console.print(f"guard false alarms: nudged-run guard on its holdout "
                  f"{100 * m['guard']['false_alarm_rate_nudged_holdout']:.0f} %"
                  + ("" if m["guard_climate"] is None else f", climate guard on the rest of the climate "
                     f"{100 * m['guard_climate']['false_alarm_rate_climate_rest']:.0f} %"))
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in [bold]{Path(out).resolve()}[/bold]")

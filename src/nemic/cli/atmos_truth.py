"""``nemic atmos generate`` and ``nemic atmos train --offline|--online``: the SPEEDY truth and the column physics.

The command functions (and ``nemic atmos guard``, the novelty guard of the column physics) are registered on the
``nemic atmos`` group by :mod:`nemic.cli.atmos`; this module also defines its own ``app`` with the same commands
(used in tests).
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
                                          "save_hours, chunk_days, sst_offset [K] added to the control SSTs)."),
    quick: bool = typer.Option(False, "--quick", help="A few days (minutes, mostly compilation): a smoke test."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run jcm's SPEEDY aquaplanet (offline: analytic SSTs and ozone, nothing downloaded), discard the spin-up and
    write 6-hourly T, u, v, q, surface pressure, precipitation, evaporation, insolation and the physics-only
    tendencies as CF zarr (train.zarr, and test.zarr for the held-out last days)."""

    from rich.console import Console

    from nemic.experiments.atmos_truth import TruthConfig, generate as run_generate, quick_truth_config
    from nemic.experiments.config import load_config, quick_keeping_changes

    console = Console()
    t0 = time.perf_counter()
    cfg = load_config(TruthConfig, config)
    if quick:
        cfg = quick_keeping_changes(cfg, quick_truth_config())
    m = run_generate(cfg, out, progress=progress, log=lambda s: console.print(f"[bold cyan]{s}"))
    spp = m["jcm_seconds_per_step"]
    console.print(f"jcm SPEEDY T{cfg.truncation}L{cfg.layers}: "
                  + (f"{spp * 1e3:.1f} ms per step" if spp else "time per step needs two chunks")
                  + f"; mean precipitation {m['water_budget_residual_kg_m2_s']['mean_precipitation'] * 86400:.2f} "
                  f"mm/day; water-budget residual (rms) {m['water_budget_residual_kg_m2_s']['rms']:.2e} kg m-2 s-1")
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in: [bold]{Path(out).resolve()}[/bold]")


def perturb(
    truth: Path = typer.Option(..., "--truth", help="Directory written by 'nemic atmos generate' (its train.zarr "
                               "is perturbed; its test.zarr is not touched)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for perturbed.zarr and metrics.json "
                                       "(default TRUTH/perturbed; replaced whole when the run finishes)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding the perturbation "
                                          "(copies, t_amplitude [K], q_amplitude [of log q], wind_amplitude "
                                          "[m/s], seed)."),
    states: Optional[Path] = typer.Option(None, "--states", help="Perturb these states (netCDF or zarr with T, "
                                          "u, v, q, ps, e.g. a run's states.nc from --snapshot-days) instead of "
                                          "the truth's; with zero amplitudes: SPEEDY's physics on the states a "
                                          "hybrid visits (DAgger)."),
    quick: bool = typer.Option(False, "--quick", help="Only the first 4 saved states: a smoke test."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Evaluate SPEEDY's physics (jcm) on randomly perturbed copies of the truth's training states (smooth random
    profiles of temperature, humidity and winds, column by column) and write them as a truth-like store, so that
    'nemic atmos train --offline' (settings perturbed = DIR, perturbed_columns = N) also learns how the physics
    pulls a column back towards the attractor."""

    from rich.console import Console

    from nemic.data.atmosphere.perturbed import PerturbationConfig
    from nemic.experiments.atmos_perturbed import generate_perturbed
    from nemic.experiments.config import load_config

    console = Console()
    t0 = time.perf_counter()
    cfg = load_config(PerturbationConfig, config)
    out = out if out is not None else Path(truth) / "perturbed"
    m = generate_perturbed(cfg, truth, out, max_times=4 if quick else None, states=states, progress=progress,
                           log=lambda s: console.print(f"[bold cyan]{s}"))
    console.print(f"{m['columns']} perturbed columns; water-budget residual (rms) "
                  f"{m['water_budget_residual_kg_m2_s']['rms']:.2e} kg m-2 s-1")
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in: [bold]{Path(out).resolve()}[/bold]")


def train(
    truth: Path = typer.Option(..., "--truth", help="Directory written by 'nemic atmos generate'."),
    out: Path = typer.Option(Path("runs/atmos_offline"), "--out", help="Directory for column_net.eqx, "
                             "metrics.json and PNGs (replaced whole when the run finishes)."),
    offline: bool = typer.Option(False, "--offline", help="Fit the column network to the truth's physics "
                                 "tendencies (scores.nc, offline.png)."),
    online: bool = typer.Option(False, "--online", help="Train the network of --init through rollouts of the "
                                "hybrid against the truth (curriculum of window lengths; online.png)."),
    stochastic: bool = typer.Option(False, "--stochastic", help="Fit the SPPT amplitude of the hybrid with the "
                                    "network of --init by the CRPS of ensemble forecasts (stochastic.png, "
                                    "sppt.json)."),
    dagger: bool = typer.Option(False, "--dagger", help="Rounds of: a free run of the hybrid with the network of "
                                "--init (then of the last round), SPEEDY's physics on its states, offline "
                                "retraining on the truth plus every store so far (DAgger; round<k>/ folders)."),
    init: Optional[Path] = typer.Option(None, "--init", help="With --online / --stochastic / --dagger: the network "
                                        "(.eqx, e.g. the offline one)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding training settings."),
    quick: bool = typer.Option(False, "--quick", help="Tiny network and few iterations: a smoke test."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train the column physics: with --offline, regression on the truth's physics tendencies, precipitation and
    evaporation, scored on the held-out period (R2 per output and level); with --online, rollouts of the hybrid
    from truth states (6 h -> 1 day windows), scored by 1-5 day forecast RMSE against the initial network."""

    from rich.console import Console

    from nemic.errors import ConfigError
    from nemic.experiments.config import load_config, quick_keeping_changes

    if offline + online + stochastic + dagger != 1:
        raise ConfigError("pass --offline (regression on the physics tendencies), --online --init NET (rollouts "
                          "of the hybrid), --stochastic --init NET (SPPT fitted by CRPS) or --dagger --init NET "
                          "(retraining on the hybrid's own states), exactly one of them")
    console = Console()
    t0 = time.perf_counter()
    log = lambda s: console.print(f"[bold cyan]{s}")  # noqa: E731
    if (online or stochastic or dagger) and init is None:
        mode = "online" if online else "stochastic" if stochastic else "dagger"
        raise ConfigError(f"--{mode} needs --init NET (a column network, e.g. from "
                          "'nemic atmos train --offline')")
    if online:
        from nemic.experiments.atmos_online import UNITS, run_online
        from nemic.experiments.atmos_training import OnlineConfig, quick_online_config

        cls, quick_cfg = OnlineConfig, quick_online_config
    elif stochastic:
        from nemic.experiments.atmos_stochastic_run import StochasticConfig, quick_stochastic_config, run_stochastic

        cls, quick_cfg = StochasticConfig, quick_stochastic_config
    elif dagger:
        from nemic.experiments.atmos_dagger import DaggerConfig, quick_dagger_config, run_dagger

        cls, quick_cfg = DaggerConfig, quick_dagger_config
    else:
        from nemic.experiments.atmos_offline import OfflineConfig, quick_offline_config, train_offline

        cls, quick_cfg = OfflineConfig, quick_offline_config
    cfg = load_config(cls, config, {"seed": seed} if seed is not None else None)
    if quick:
        cfg = quick_keeping_changes(cfg, quick_cfg())
    if online:
        m = run_online(cfg, truth, init, out, progress=progress, log=log)
        s = m["forecast_rmse"]
        console.print("forecast RMSE at 1 day, initial / online: " + ", ".join(
            f"{k} {s['initial network'][k][0] * f:.3g} / {s['online network'][k][0] * f:.3g} {u}"
            for k, (u, f) in UNITS.items()))
    elif dagger:
        m = run_dagger(cfg, truth, init, out, progress=progress, log=log)
        console.print("test loss by round: " + ", ".join(f"{r['test_loss']:.4f}" for r in m["rounds"]))
    elif stochastic:
        m = run_stochastic(cfg, truth, init, out, log=log)
        console.print("test, day 1 / day 5: CRPS / deterministic MAE " + ", ".join(
            f"{k} {v['crps_over_mae'][0]:.2f} / {v['crps_over_mae'][-1]:.2f}" for k, v in m["test"].items())
            + "; spread/error " + ", ".join(f"{k} {v['spread_error'][0]:.2f} / {v['spread_error'][-1]:.2f}"
                                            for k, v in m["test"].items()))
    else:
        m = train_offline(cfg, truth, out, progress=progress, log=log)
        console.print(f"test loss {m['test_loss']:.4f} (zero network {m['test_loss_zero_network']:.4f}); "
                      f"precipitation RMSE {m['rmse_precipitation_mm_day']:.3f} mm/day")
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in: [bold]{Path(out).resolve()}[/bold]")


def guard(
    truth: Path = typer.Option(..., "--truth", help="Control truth directory (train.zarr: the detector's training "
                               "columns; test.zarr: held-out columns)."),
    shifted: Path = typer.Option(..., "--shifted", help="Truth of a climate the network never saw, e.g. "
                                 "'nemic atmos generate' with sst_offset = 4 in --config."),
    net: Path = typer.Option(..., "--net", help="The column network (.eqx)."),
    out: Path = typer.Option(Path("runs/atmos_guard"), "--out", help="Directory for metrics.json, guard.png and "
                             "guard_runs.png (replaced whole when the run finishes)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file overriding the guard settings "
                                          "(quantile, features, fallbacks, days, n_starts, dt)."),
    quick: bool = typer.Option(False, "--quick", help="Flag rates and 1-day runs at dt = 1 h: a smoke test."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Novelty guard of the column physics: flag rates on held-out and shifted-climate columns, and the hybrid in
    the shifted climate with and without the guard's fallback (biases of T, q and precipitation)."""

    from rich.console import Console

    from nemic.experiments.atmos_guard_run import GuardConfig, quick_guard_config, run_guard
    from nemic.experiments.config import load_config, quick_keeping_changes

    console = Console()
    t0 = time.perf_counter()
    cfg = load_config(GuardConfig, config)
    if quick:
        cfg = quick_keeping_changes(cfg, quick_guard_config())
    run_guard(cfg, truth, shifted, net, out, progress=progress, log=lambda s: console.print(f"[bold cyan]{s}"))
    console.print(f"wall time: {time.perf_counter() - t0:.1f} s; results in: [bold]{Path(out).resolve()}[/bold]")


app.command("generate")(generate)
app.command("train")(train)
app.command("guard")(guard)
app.command("perturb")(perturb)

"""``nemic minkowski``: exact Minkowski measures of rain-rate files, and training of the learned surrogate."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from nemic.errors import ConfigError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False,
                  help="Minkowski measures (area, perimeter, Euler characteristic) of precipitation fields.")


def _parse_thresholds(text: str) -> np.ndarray:
    """Comma-separated thresholds: finite, strictly increasing, at least one (checked before any import)."""
    try:
        thr = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ConfigError(f"thresholds must be comma-separated numbers, got {text!r}") from None
    if thr.size == 0:
        raise ConfigError(f"thresholds must be a non-empty list, got {text!r}")
    if not np.all(np.isfinite(thr)):
        raise ConfigError(f"thresholds must be finite (no NaN/inf), got {thr.tolist()}")
    if np.any(np.diff(thr) <= 0):
        raise ConfigError(f"thresholds must be strictly increasing, got {thr.tolist()}")
    return thr


def _open(data: Optional[Path]):
    from nemic.data.opera import load_sample, open_opera

    return (load_sample(), "shipped OPERA sample") if data is None else (open_opera(data), str(data))


def _parse_window(window: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``"y0:y1,x0:x1"`` as two (start, stop) pairs of non-negative integers with start < stop."""
    msg = f"window must look like y0:y1,x0:x1 (pixel indices, start < stop), got {window!r}"
    parts = window.split(",")
    if len(parts) != 2:
        raise ConfigError(msg)
    try:
        pairs = [tuple(int(v) for v in part.split(":")) for part in parts]
    except ValueError:
        raise ConfigError(msg) from None
    if any(len(pq) != 2 or pq[0] < 0 or pq[1] <= pq[0] for pq in pairs):
        raise ConfigError(msg)
    return pairs[0], pairs[1]


def _int_at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"--{name} must be an integer >= {minimum}, got {value}")


@app.command()
def measures(
    data: Optional[Path] = typer.Argument(None, help="OPERA file (ODIM-HDF5 or netCDF); default: shipped sample"),
    thresholds: str = typer.Option("0.1,0.5,1,2,5,10", help="comma-separated thresholds in mm/h"),
    frame: int = typer.Option(0, help="time index"),
    window: str = typer.Option("", help="y0:y1,x0:x1 (pixel indices); default: whole frame"),
    connectivity: int = typer.Option(8, help="4 or 8"),
) -> None:
    """Print area, perimeter, Euler characteristic and components of one frame (NaN = no coverage = background)."""
    thr = _parse_thresholds(thresholds)
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if frame < 0:
        raise ConfigError(f"frame must be >= 0, got {frame}")
    win = _parse_window(window) if window else None
    from rich.console import Console
    from rich.table import Table

    from nemic.data.opera import check_rain_frame
    from nemic.metrics.minkowski import minkowski_functionals

    ds, name = _open(data)
    rr = ds.rain_rate
    if not 0 <= frame < rr.sizes["time"]:
        raise ConfigError(f"frame must be in [0, {rr.sizes['time']}), got {frame}")
    sel = {"time": frame}
    if win is not None:
        (y0, y1), (x0, x1) = win
        if y1 > rr.sizes["y"] or x1 > rr.sizes["x"]:
            raise ConfigError(f"window {window!r} reaches past the frame of {rr.sizes['y']} x {rr.sizes['x']} pixels")
        sel.update(y=slice(y0, y1), x=slice(x0, x1))
    field = rr.isel(**sel).values
    check_rain_frame(field, f"{name}, frame {frame}")
    m = minkowski_functionals(field, thr, connectivity=connectivity, nan_policy="background", components=True)
    table = Table(title=f"{name}, frame {frame} ({str(rr.time.values[frame])[:16]}), {field.shape[0]} x "
                  f"{field.shape[1]} pixels, {connectivity}-connectivity")
    for col in ("threshold (mm/h)", "area (px)", "perimeter (edges)", "Euler", "components"):
        table.add_column(col, justify="right")
    for k, u in enumerate(thr):
        table.add_row(f"{u:g}", *(str(int(np.asarray(v)[k])) for v in (m.area, m.perimeter, m.euler, m.components)))
    Console().print(table)


@app.command("train-surrogate")
def train_surrogate_cmd(
    data: Optional[Path] = typer.Option(None, help="OPERA file; default: the sample shipped with nemic"),
    out: Path = typer.Option(Path("runs/minkowski_surrogate"), help="output directory"),
    n_thresholds: int = typer.Option(8, help="number of thresholds (wet-pixel quantiles of the training block)"),
    patch: int = typer.Option(128, help="patch size in pixels"),
    stride: int = typer.Option(128, help="stride between candidate patches"),
    min_wet: float = typer.Option(0.1, help="minimum wet fraction of a patch"),
    frame_step: int = typer.Option(1, help="use every n-th frame"),
    max_patches: int = typer.Option(2000, help="at most this many patches (evenly over time)"),
    train_fraction: float = typer.Option(0.75, help="share of the frames (earliest) used for training"),
    gap: int = typer.Option(1, help="frames left out between the training and test blocks"),
    steps: int = typer.Option(400, help="optimisation steps per model"),
    batch: int = typer.Option(16, help="batch size"),
    lr: float = typer.Option(3e-3, help="peak learning rate (cosine decay)"),
    channels: int = typer.Option(16, help="trunk width"),
    blocks: int = typer.Option(2, help="residual blocks"),
    factor: int = typer.Option(4, help="space-to-depth factor"),
    seed: int = typer.Option(0, help="random seed"),
    v2_steps: int = typer.Option(300, help="optimisation steps of surrogate v2 (bit-quad)"),
    v2_batch: int = typer.Option(8, help="batch size of surrogate v2"),
    v2_lr: float = typer.Option(3e-2, help="peak learning rate of surrogate v2 (its slopes and shifts)"),
) -> None:
    """Train surrogate v2 (bit-quad), the constrained Lipschitz surrogate and the unconstrained CNN baseline.

    Writes surrogate_v2.eqx, surrogate.eqx and surrogate_unconstrained.eqx (one weights file each, load with
    nemic.train.checkpoint.load_module),
    a readable surrogate*.json beside each (its header, recipe and test scores) and report.json (R^2 per measure and
    threshold on the later time block; share of (sample, threshold) pairs breaking a geometric constraint).
    """
    import jax
    import jax.numpy as jnp
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from nemic.experiments.config import CHECKPOINTS, settings_hash, staged_run
    from nemic.io.output import write_json
    from nemic.data.opera import extract_patches, time_block_split, wet_quantile_thresholds
    from nemic.metrics.minkowski import minkowski_functionals
    from nemic.metrics.minkowski.surrogate import MEASURE_NAMES, constraint_violations, r2_scores, stack_measures
    from nemic.nn.minkowski_quad import BitQuadSurrogate
    from nemic.nn.minkowski_surrogate import MinkowskiSurrogate
    from nemic.train.checkpoint import read_header, save_module
    from nemic.train.surrogate import train_surrogate

    console = Console()
    for name, v, lo in (("n-thresholds", n_thresholds, 1), ("patch", patch, 2), ("stride", stride, 1),
                        ("frame-step", frame_step, 1), ("max-patches", max_patches, 2), ("gap", gap, 0),
                        ("steps", steps, 1), ("batch", batch, 1), ("v2-steps", v2_steps, 1),
                        ("v2-batch", v2_batch, 1), ("channels", channels, 1), ("blocks", blocks, 0),
                        ("factor", factor, 1), ("seed", seed, 0)):
        _int_at_least(name, v, lo)
    for name, v in (("--lr", lr), ("--v2-lr", v2_lr)):
        if not np.isfinite(v) or v <= 0:
            raise ConfigError(f"{name} must be a finite number > 0, got {v}")
    if not 0 <= min_wet <= 1:
        raise ConfigError(f"--min-wet must be in [0, 1], got {min_wet}")
    if not 0 < train_fraction < 1:
        raise ConfigError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    if patch % factor:
        raise ConfigError(f"--patch ({patch}) must be a multiple of --factor ({factor})")
    settings = {"data": str(data) if data else None, "n_thresholds": n_thresholds, "patch": patch, "stride": stride,
                "min_wet": min_wet, "frame_step": frame_step, "max_patches": max_patches,
                "train_fraction": train_fraction, "gap": gap, "steps": steps, "batch": batch, "lr": lr,
                "channels": channels, "blocks": blocks, "factor": factor, "seed": seed,
                "v2_steps": v2_steps, "v2_batch": v2_batch, "v2_lr": v2_lr}
    t_start = time.perf_counter()
    ds, name = _open(data)
    rr = ds.rain_rate.isel(time=slice(None, None, frame_step))
    with console.status(f"extracting {patch} x {patch} patches from {name} ({rr.sizes['time']} frames)"):
        patches = extract_patches(rr, size=patch, stride=stride, min_wet_fraction=min_wet)
    n = patches.sizes["patch"]
    if n < 4:
        raise ConfigError(f"only {n} patches with wet fraction >= {min_wet}: lower --min-wet or --stride")
    if n > max_patches:
        keep = np.linspace(0, n - 1, max_patches).round().astype(int)
        patches = patches.isel(patch=keep)
        n = max_patches
    tr, te = time_block_split(patches.time.values, train_fraction=train_fraction, gap=gap)
    x = patches.values
    thr = wet_quantile_thresholds(x[tr], n_thresholds)
    console.print(f"{n} patches: {tr.size} for training (until {str(patches.time.values[tr].max())[:16]}), "
                  f"{te.size} for testing (from {str(patches.time.values[te].min())[:16]}); thresholds (mm/h): "
                  + ", ".join(f"{u:.2f}" for u in thr))

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console)
    with staged_run(out, "minkowski train-surrogate", settings) as stage:
        with progress:
            task = progress.add_task("exact measures", total=n, info="")
            ys = []
            for i in range(0, n, 64):
                ys.append(np.asarray(stack_measures(minkowski_functionals(x[i : i + 64], thr, components=True))))
                progress.update(task, advance=min(64, n - i))
            y = np.concatenate(ys)
            models, histories, times = {}, {}, {}
            key = jax.random.PRNGKey(seed)
            builds = {  # label: (initial model, steps, learning rate)
                "surrogate_v2": (BitQuadSurrogate(thr, key=key), v2_steps, v2_lr),
                "surrogate": (MinkowskiSurrogate(thr, channels=channels, blocks=blocks, factor=factor,
                                                 constrained=True, key=key), steps, lr),
                "surrogate_unconstrained": (MinkowskiSurrogate(thr, channels=channels, blocks=blocks, factor=factor,
                                                               constrained=False, key=key), steps, lr),
            }
            for label, (init, n_steps, rate) in builds.items():
                task = progress.add_task(f"training {label}", total=n_steps, info="")
                t0 = time.perf_counter()

                def cb(i, loss, task=task):
                    progress.update(task, advance=1, info=f"loss {loss:.4f}")

                ckpt = stage / CHECKPOINTS / f"{label}-{settings_hash(settings)}.ckpt"  # a killed run resumes
                models[label], histories[label] = train_surrogate(
                    init, x[tr], y[tr], steps=n_steps, batch_size=batch if label != "surrogate_v2" else v2_batch,
                    learning_rate=rate, key=jax.random.fold_in(key, 1), callback=cb, checkpoint=ckpt)
                times[label] = time.perf_counter() - t0

        domain = patch * patch
        report = {"data": name, "thresholds": thr.tolist(), "measures": list(MEASURE_NAMES),
                  "n_train": int(tr.size), "n_test": int(te.size), "models": {}}
        table = Table(title=f"test block ({te.size} patches from later frames): R^2 (mean over thresholds) and "
                      "share of (sample, threshold) pairs breaking a constraint")
        for col in ("model", *MEASURE_NAMES, "violations", "train time (s)"):
            table.add_column(col, justify="right")
        for label, model in models.items():
            pred = np.concatenate([np.asarray(stack_measures(model(jnp.asarray(x[te][i : i + 64]))))
                                   for i in range(0, te.size, 64)])
            r2 = r2_scores(pred, y[te])
            viol = constraint_violations(pred, domain)
            rec = {
                "r2": {m: r2[k].tolist() for k, m in enumerate(MEASURE_NAMES)},
                "violation_share": float(viol["any"].mean()),
                "violation_share_by_constraint": {c: float(v.mean()) for c, v in viol.items() if c != "any"},
                "final_training_loss": float(np.mean(histories[label][-20:])),
                "train_seconds": times[label],
            }
            report["models"][label] = rec
            table.add_row(label, *(f"{np.nanmean(r2[k]):.3f}" for k in range(4)),
                          f"{100 * rec['violation_share']:.2f}%", f"{times[label]:.0f}")
            recipe = {
                "command": "nemic minkowski " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "train-surrogate",
                "data": name, "patch": patch, "stride": stride, "min_wet_fraction": min_wet,
                "frame_step": frame_step, "max_patches": max_patches, "train_fraction": train_fraction, "gap": gap,
                "steps": builds[label][1], "batch": batch if label != "surrogate_v2" else v2_batch,
                "learning_rate": builds[label][2], "seed": seed, "n_train": int(tr.size),
                "train_until": str(patches.time.values[tr].max())[:19],
            }
            extra = {"recipe": recipe, "test_report": rec,
                     "attribution": "trained on EUMETNET OPERA radar data (CC BY 4.0)"}
            path = save_module(stage / label, model, extra=extra)
            header = read_header(path)
            write_json({"weights": path.name, "kind": header["kind"], "hyperparameters": header["config"], **extra,
                        "load_with": "nemic.train.checkpoint.load_module"}, stage / f"{label}.json")
        report["seconds_total"] = time.perf_counter() - t_start
        write_json(report, stage / "report.json")
    console.print(table)
    console.print(f"wrote {out}/surrogate_v2.eqx, surrogate.eqx, surrogate_unconstrained.eqx (+ readable .json), "
                  "report.json")

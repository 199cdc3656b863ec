"""Recipe: precipitation downscaling of OPERA radar rain, deterministic and generative, with Minkowski losses.

The experiment of Quarenghi, Cotsakis & Beucler (2026, arXiv:2604.11422) on nemic's pieces: 2 km OPERA rain-rate
patches (:func:`nemic.data.patches.downscaling_patches`: NaN-free, wet fraction >= 0.1, drizzle floor 0.1 mm/h,
clipped at 100 mm/h), coarse inputs by ``factor x factor`` block averaging (10: 20 km, on 120-point patches
because 10 does not divide 128; 8 and 16 on 128-point patches), a chronological split (earlier frames train,
later frames test), and five models trained with :func:`nemic.train.loop.fit`:

``mse``                      U-Net, MSE in log-rain space;
``mse_minkowski_relaxed``    U-Net, MSE + weight x relaxed Minkowski loss (area, perimeter, Euler characteristic
                             of soft excursion sets at ``thresholds``, log1p transform);
``mse_minkowski_surrogate``  U-Net, MSE + weight x learned surrogate Minkowski loss behind the trust gate
                             (:class:`nemic.train.downscaling_losses.TrustGatedMinkowski`, shipped surrogate);
``generative``               conditional flow matching (:class:`nemic.nn.flow.ConditionalFlow`), ensembles;
``generative_minkowski``     the same with a relaxed Minkowski term on the one-step denoised estimate.

Evaluation (:mod:`nemic.experiments.downscaling_eval`) scores every model on the later time block; plots are in
:mod:`nemic.experiments.downscaling_plots`. Shipped weights: ``nemic/resources/downscaling``.
"""

from __future__ import annotations

import dataclasses
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.opera import load_sample, open_opera
from nemic.data.patches import block_average, chronological_split, downscaling_patches
from nemic.experiments.downscaling_config import (FACTORS, GENERATIVE, KINDS, MODELS, DownscalingConfig, build_model,
                                                  evenly, latent_scale_of, quick_config, relaxed_loss)
from nemic.experiments.downscaling_train import train_models
from nemic.io.files import write_json
from nemic.train.checkpoint import CheckpointError, load_module, read_header, save_module

__all__ = ["FACTORS", "GENERATIVE", "KINDS", "MODELS", "DownscalingConfig", "build_model", "default_weights_dir",
           "evaluate_into", "evenly", "latent_scale_of", "load_models", "make_patches", "open_rain", "quick_config",
           "relaxed_loss", "run_evaluate", "run_sample", "run_train", "save_models", "split_patches", "train_models"]


# ------------------------------------------------------------------------------------------------ data
def open_rain(data: str | Path | None) -> tuple[xr.DataArray, str]:
    """The ``rain_rate`` (time, y, x) of an OPERA file (ODIM-HDF5 or netCDF), or of the shipped sample."""
    ds, name = (load_sample(), "shipped OPERA sample") if data is None else (open_opera(data), str(data))
    rain = ds["rain_rate"]
    if rain.ndim == 2:
        rain = rain.expand_dims("time")
    return rain, name


def make_patches(rain: xr.DataArray, cfg: DownscalingConfig) -> xr.DataArray:
    """Patches of every ``frame_step``-th frame (:func:`nemic.data.patches.downscaling_patches`)."""
    if cfg.frame_step > 1:
        rain = rain.isel(time=slice(None, None, cfg.frame_step))
    return downscaling_patches(rain, cfg.patch_size, factor=cfg.factor, stride=cfg.stride_size,
                               min_wet_fraction=cfg.min_wet_fraction,
                               max_patches_per_frame=cfg.max_patches_per_frame)


def split_patches(patches: xr.DataArray, cfg: DownscalingConfig) -> tuple[xr.DataArray, xr.DataArray]:
    """Chronological split: (earlier training patches, later test patches)."""
    return chronological_split(patches, cfg.train_fraction, cfg.gap)


# ------------------------------------------------------------------------------------------------ weights
def default_weights_dir() -> Path:
    """The folder of the weights shipped with nemic (``nemic/resources/downscaling``)."""
    return Path(str(resources.files("nemic").joinpath("resources", "downscaling")))


def save_models(models: dict[str, Any], out: Path, cfg: DownscalingConfig, record: dict[str, Any]) -> None:
    """``out/<name>.eqx`` per model (kind, config and recipe in the header) and ``out/training_report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    for name, m in models.items():
        save_module(out / f"{name}.eqx", m, extra={"downscaling_model": name, "factor": cfg.factor,
                                                   "patch": cfg.patch_size, "recipe": recipe})
    report = {"config": recipe, "training": {k: ({kk: vv for kk, vv in v.items() if kk != "history"}
                                                 if isinstance(v, dict) else v) for k, v in record.items()}}
    write_json(report, out / "training_report.json")


def load_models(weights: Path, names: tuple[str, ...] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``<weights>/<name>.eqx`` for each model found (or each of ``names``, all required); returns
    (models, {name: recipe}). Weights of another kind under a model's name are a one-line error."""
    weights = Path(weights)
    if not weights.is_dir():
        raise ConfigError(f"weights folder '{weights}' does not exist or is not a directory")
    wanted = names if names is not None else tuple(n for n in MODELS if (weights / f"{n}.eqx").is_file())
    if not wanted:
        raise DataError(f"no downscaling weights ({', '.join(n + '.eqx' for n in MODELS)}) in '{weights}'")
    models, recipes = {}, {}
    for name in wanted:
        p = weights / f"{name}.eqx"
        if not p.is_file():
            raise DataError(f"weights '{p}' are missing")
        header = read_header(p)
        if header.get("kind") != KINDS[name]:
            raise CheckpointError(f"'{p}' holds weights of a {header.get('kind')!r}, not of the {KINDS[name]} "
                                  f"of downscaling model {name!r}")
        m = load_module(p, kind=KINDS[name])
        models[name] = m
        recipes[name] = dict(header.get("extra", {}).get("recipe", {}))
    factors = {int(m.factor) for m in models.values()}
    if len(factors) != 1:
        raise DataError(f"the weights in '{weights}' mix coarsening factors {sorted(factors)}")
    return models, recipes


# ------------------------------------------------------------------------------------------------ runs
def evaluate_into(stage: Path, models: dict[str, Any], test: xr.DataArray, cfg: DownscalingConfig, *,
                  progress: bool = False, log: Callable = print) -> dict[str, Any]:
    """Score ``models`` on (at most ``max_test_patches``, evenly spread) test patches; write predictions.nc and
    PNGs into ``stage`` and return the ``models`` / ``checks`` part of metrics.json."""
    from nemic.experiments import downscaling_eval as ev
    from nemic.experiments import downscaling_plots as pl
    from nemic.io.output import write_netcdf

    test = test.isel(patch=evenly(test.sizes["patch"], cfg.max_test_patches))
    truth = np.asarray(test.values, dtype=np.float32)
    coarse = np.asarray(block_average(truth, cfg.factor))
    log(f"evaluating {len(models)} model(s) on {truth.shape[0]} test patches of {truth.shape[1]} x {truth.shape[2]}")
    preds = ev.predict(models, coarse, cfg.members, jax.random.PRNGKey(cfg.seed + 1), progress=progress)
    scores = ev.score(preds, truth, tuple(cfg.thresholds))
    ds = ev.predictions_dataset(preds, truth, coarse, test, attrs={"factor": cfg.factor})
    write_netcdf(ds, stage / "predictions.nc")
    pl.plot_cases(stage, preds, truth, coarse)
    pl.plot_curves(stage, ev.curves(preds, truth, tuple(cfg.thresholds), cfg.fss_threshold), tuple(cfg.thresholds),
                   cfg.fss_threshold)
    times = np.asarray(test["time"].values) if "time" in test.coords else np.array([])
    return {"models": scores, "checks": ev.checks(scores),
            "test": {"patches": int(truth.shape[0]), "patch_size": int(truth.shape[1]),
                     "first_time": str(times.min())[:19] if times.size else None,
                     "last_time": str(times.max())[:19] if times.size else None}}


def _settings(cfg: DownscalingConfig, **extra: Any) -> dict[str, Any]:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    d.update({k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()})
    return d


def run_train(cfg: DownscalingConfig, out: str | Path, data: str | Path | None = None, *, progress: bool = False,
              log: Callable = print) -> dict[str, Any]:
    """Train every model on the earlier frames of ``data``, save the weights in ``out/weights/`` with a training
    report, evaluate on the later frames; writes metrics.json, predictions.nc and PNGs into ``out``."""
    from nemic.experiments.config import CHECKPOINTS, staged_run
    from nemic.experiments.downscaling_plots import plot_training

    t0 = time.perf_counter()
    rain, name = open_rain(data)
    with staged_run(out, "downscale train", _settings(cfg, data=data)) as stage:
        log(f"cutting {cfg.patch_size} x {cfg.patch_size} patches from {name}")
        patches = make_patches(rain, cfg)
        train, test = split_patches(patches, cfg)
        log(f"{train.sizes['patch']} training patches (earlier frames), {test.sizes['patch']} test patches")
        fit_part, val = (chronological_split(train, 1.0 - cfg.val_fraction, cfg.gap) if cfg.val_fraction > 0
                         else (train, None))
        if val is not None:
            log(f"validation: the latest {val.sizes['patch']} of the training patches "
                f"({fit_part.sizes['patch']} left to train on)")
            val = np.asarray(val.isel(patch=evenly(val.sizes["patch"], cfg.max_test_patches)).values, np.float32)
        ckpt = stage / CHECKPOINTS
        ckpt.mkdir(exist_ok=True)
        t1 = time.perf_counter()
        models, record = train_models(cfg, np.asarray(fit_part.values, np.float32), val, progress=progress, log=log,
                                      ckpt_dir=ckpt)
        record["training_seconds"] = time.perf_counter() - t1
        record["data"] = {"file": name, "train_patches": int(train.sizes["patch"]),
                          "test_patches": int(test.sizes["patch"]),
                          "train_last_time": str(np.asarray(train["time"].values).max())[:19],
                          "test_first_time": str(np.asarray(test["time"].values).min())[:19]}
        save_models(models, stage / "weights", cfg, record)
        plot_training(stage, record)
        metrics = evaluate_into(stage, models, test, cfg, progress=progress, log=log)
        metrics["training"] = {k: ({kk: vv for kk, vv in v.items() if kk != "history"} if isinstance(v, dict) else v)
                               for k, v in record.items()}
        metrics["config"] = _settings(cfg)
        metrics["wall_seconds"] = time.perf_counter() - t0
        write_json(metrics, stage / "metrics.json")
    return metrics


def run_evaluate(out: str | Path, data: str | Path | None = None, weights: str | Path | None = None, *,
                 all_frames: bool = False, overrides: dict[str, Any] | None = None, progress: bool = False,
                 log: Callable = print) -> dict[str, Any]:
    """Evaluate saved weights (default: those shipped with nemic) on the later frames of ``data`` (every frame
    with ``all_frames``); writes metrics.json, predictions.nc and PNGs into ``out``."""
    from nemic.experiments.config import from_dict, staged_run

    t0 = time.perf_counter()
    wdir = Path(weights) if weights is not None else default_weights_dir()
    models, recipes = load_models(wdir)
    recipe = dict(next(iter(recipes.values())))
    # the weights fix the data and network settings; the evaluation's own sizes keep their defaults
    recipe = {k: v for k, v in recipe.items() if k in {f.name for f in dataclasses.fields(DownscalingConfig)}
              and k not in ("members", "max_test_patches")}
    recipe.update(overrides or {})
    recipe["models"] = tuple(models)
    cfg = from_dict(DownscalingConfig, recipe)
    rain, name = open_rain(data)
    with staged_run(out, "downscale evaluate", _settings(cfg, data=data, weights=wdir, all_frames=all_frames)) as stage:
        log(f"cutting {cfg.patch_size} x {cfg.patch_size} patches from {name}")
        patches = make_patches(rain, cfg)
        test = patches if all_frames else split_patches(patches, cfg)[1]
        metrics = evaluate_into(stage, models, test, cfg, progress=progress, log=log)
        metrics.update({"data": name, "weights": str(wdir), "all_frames": all_frames, "config": _settings(cfg),
                        "wall_seconds": time.perf_counter() - t0})
        write_json(metrics, stage / "metrics.json")
    return metrics


def run_sample(out: str | Path, data: str | Path | None = None, weights: str | Path | None = None, *,
               frame: int = -1, window: tuple[int, int] | None = None, members: int = 8, seed: int = 0,
               log: Callable = print) -> dict[str, Any]:
    """Downscale one block-averaged window of one frame with every model (ensembles for the generative ones);
    writes sample.nc and sample.png into ``out``. ``window`` = (y0, x0) of the patch (default: the wettest
    NaN-free patch of the frame)."""
    from nemic.experiments import downscaling_eval as ev
    from nemic.experiments import downscaling_plots as pl
    from nemic.experiments.config import staged_run
    from nemic.io.output import write_netcdf

    if not isinstance(members, int) or members < 2:
        raise ConfigError(f"members must be an integer >= 2, got {members!r}")
    wdir = Path(weights) if weights is not None else default_weights_dir()
    models, recipes = load_models(wdir)
    factor = next(iter(models.values())).factor
    size = int(next(iter(recipes.values())).get("patch") or 0) or (120 if factor == 10 else 128)
    rain, name = open_rain(data)
    nt = rain.sizes["time"]
    if not -nt <= frame < nt:
        raise ConfigError(f"frame must be in [{-nt}, {nt}), got {frame}")
    one = rain.isel(time=frame)
    if window is None:
        patches = downscaling_patches(one, size, factor=factor, max_patches_per_frame=1, min_wet_fraction=0.0)
    else:
        y0, x0 = window
        if y0 < 0 or x0 < 0 or y0 + size > one.sizes["y"] or x0 + size > one.sizes["x"]:
            raise ConfigError(f"a {size} x {size} window at ({y0}, {x0}) does not fit in the frame of "
                              f"{one.sizes['y']} x {one.sizes['x']}")
        sub = one.isel(y=slice(y0, y0 + size), x=slice(x0, x0 + size))
        patches = downscaling_patches(sub, size, factor=factor, min_wet_fraction=0.0)
        patches = patches.assign_coords(y0=("patch", [y0]), x0=("patch", [x0]))
    truth = np.asarray(patches.values[:1], np.float32)
    coarse = np.asarray(block_average(truth, factor))
    with staged_run(out, "downscale sample", {"data": str(data), "weights": str(wdir), "frame": frame,
                                              "window": list(window) if window else None, "members": members,
                                              "seed": seed}) as stage:
        preds = ev.predict(models, coarse, members, jax.random.PRNGKey(seed))
        ds = ev.predictions_dataset(preds, truth, coarse, patches.isel(patch=[0]), n_cases=1,
                                    attrs={"factor": factor, "data": name})
        write_netcdf(ds, stage / "sample.nc")
        pl.plot_cases(stage, preds, truth, coarse, n_cases=1, n_members=min(members, 4), name="sample.png")
        info = {"data": name, "frame": frame, "y0": int(patches["y0"].values[0]), "x0": int(patches["x0"].values[0]),
                "models": list(models), "members": members}
        write_json(info, stage / "sample.json")
    return info

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
from nemic.data.patches import PatchSampler, block_average, check_factor, chronological_split, downscaling_patches
from nemic.io.files import write_json
from nemic.metrics.minkowski import MinkowskiLoss
from nemic.nn.flow import ConditionalFlow
from nemic.nn.unet import SuperResolutionUNet
from nemic.train.checkpoint import CheckpointError, load_module, read_header, save_module
from nemic.train.downscaling_losses import (TrustGatedMinkowski, calibrate_trust, flow_matching_loss, mse_loss,
                                            mse_minkowski_loss)
from nemic.train.loop import default_optimizer, fit
from nemic.train.surrogate import load_default_surrogate

MODELS = ("mse", "mse_minkowski_relaxed", "mse_minkowski_surrogate", "generative", "generative_minkowski")
GENERATIVE = ("generative", "generative_minkowski")
FACTORS = (8, 10, 16)
KINDS = {name: ("ConditionalFlow" if name in GENERATIVE else "SuperResolutionUNet") for name in MODELS}


@dataclasses.dataclass(frozen=True)
class DownscalingConfig:
    """Settings of the downscaling recipe (rain rates in mm/h, sizes in 2 km pixels)."""

    factor: int = 10
    patch: int = 0  # 0: 120 for factor 10, 128 otherwise
    stride: int = 0  # 0: the patch size (non-overlapping tiles)
    min_wet_fraction: float = 0.1
    max_patches_per_frame: int = 24
    frame_step: int = 1
    train_fraction: float = 0.75
    gap: int = 1
    width: int = 12
    depth: int = 3
    flow_width: int = 16
    batch: int = 6
    steps: int = 250
    flow_steps: int = 400
    lr: float = 2e-3
    minkowski_weight: float = 10.0
    temperature: float = 0.1
    thresholds: tuple = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
    trust_weight_at_p90: float = 0.1
    ode_steps: int = 8
    solver: str = "euler"
    members: int = 8
    max_test_patches: int = 48
    fss_threshold: float = 5.0
    fss_window: int = 9
    models: tuple = MODELS
    seed: int = 0

    def __post_init__(self):
        if self.factor not in FACTORS:
            raise ConfigError(f"factor must be one of {FACTORS}, got {self.factor!r}")
        for name, lo in (("patch", 0), ("stride", 0), ("max_patches_per_frame", 1), ("frame_step", 1), ("gap", 0),
                         ("width", 1), ("depth", 1), ("flow_width", 1), ("batch", 1), ("steps", 0),
                         ("flow_steps", 0), ("ode_steps", 1), ("members", 2), ("max_test_patches", 1),
                         ("fss_window", 1), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        check_factor(self.patch_size, self.factor)
        if self.patch_size % 2**self.depth:
            raise ConfigError(f"patch size {self.patch_size} must be a multiple of 2**depth = {2**self.depth}")
        for name in ("lr", "temperature", "fss_threshold"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.min_wet_fraction <= 1:
            raise ConfigError(f"min_wet_fraction must be in [0, 1], got {self.min_wet_fraction!r}")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction!r}")
        if not self.minkowski_weight >= 0:
            raise ConfigError(f"minkowski_weight must be >= 0, got {self.minkowski_weight!r}")
        if not 0 < self.trust_weight_at_p90 < 1:
            raise ConfigError(f"trust_weight_at_p90 must be in (0, 1), got {self.trust_weight_at_p90!r}")
        thr = np.asarray(self.thresholds, dtype=float)
        if thr.ndim != 1 or thr.size < 1 or not np.all(np.isfinite(thr)) or np.any(np.diff(thr) <= 0):
            raise ConfigError(f"thresholds must be finite and strictly increasing, got {self.thresholds!r}")
        if self.solver not in ("euler", "heun"):
            raise ConfigError(f"solver must be 'euler' or 'heun', got {self.solver!r}")
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models:
            raise ConfigError(f"models must be a non-empty subset of {MODELS}, got {list(self.models)}")

    @property
    def patch_size(self) -> int:
        return self.patch or (120 if self.factor == 10 else 128)

    @property
    def stride_size(self) -> int:
        return self.stride or self.patch_size


def quick_config(**overrides: Any) -> DownscalingConfig:
    """Tiny sizes (a smoke test, not science): narrow networks, a few steps, small ensembles."""
    base = dict(width=4, depth=3, flow_width=4, batch=2, steps=3, flow_steps=3, ode_steps=2, members=2,
                max_test_patches=3, max_patches_per_frame=4, stride=68)
    base.update(overrides)
    return DownscalingConfig(**base)


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


def evenly(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices spread evenly over ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


# ------------------------------------------------------------------------------------------------ models
def build_model(name: str, cfg: DownscalingConfig, key: jax.Array, latent_scale: float = 0.5) -> Any:
    """An untrained network for model ``name``."""
    if name in GENERATIVE:
        return ConditionalFlow(cfg.factor, cfg.flow_width, cfg.depth, latent_scale=latent_scale,
                               n_steps=cfg.ode_steps, solver=cfg.solver, key=key)
    return SuperResolutionUNet(1, 1, factor=cfg.factor, width=cfg.width, depth=cfg.depth, key=key)


def relaxed_loss(cfg: DownscalingConfig) -> MinkowskiLoss:
    """The relaxed Minkowski loss of the recipe: ``cfg.thresholds``, ``cfg.temperature``, log1p transform."""
    return MinkowskiLoss(cfg.thresholds, method="relaxed", temperature=cfg.temperature, transform="log1p")


def latent_scale_of(fine: np.ndarray, factor: int) -> float:
    """Standard deviation of ``log(1 + R) - log(1 + upsampled block mean)`` over training patches, rounded to 2
    significant digits (the flow's ``latent_scale``)."""
    coarse = np.asarray(block_average(fine, factor))
    up = np.repeat(np.repeat(coarse, factor, -2), factor, -1)
    s = float(np.std(np.log1p(fine) - np.log1p(up)))
    return float(f"{max(s, 1e-3):.2g}")


def train_models(cfg: DownscalingConfig, train: np.ndarray, *, progress: bool = False, log: Callable = print,
                 ckpt_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train every model of ``cfg.models`` on training patches (N, H, H); returns (models, training record)."""
    key = jax.random.PRNGKey(cfg.seed)
    sampler = PatchSampler(train, cfg.factor, batch_size=cfg.batch, augment=True)
    record: dict[str, Any] = {"n_train_patches": int(train.shape[0])}
    scale = latent_scale_of(train, cfg.factor)
    record["latent_scale"] = scale
    trust = None
    if "mse_minkowski_surrogate" in cfg.models:
        surrogate = load_default_surrogate()
        calib = train[evenly(train.shape[0], 64)]
        tau, stats = calibrate_trust(surrogate, calib, cfg.trust_weight_at_p90)
        trust = TrustGatedMinkowski(surrogate, tau)
        record["trust_gate"] = {"tau": tau, **stats, "surrogate_thresholds": np.asarray(surrogate.thresholds).tolist(),
                                "calibration_patches": int(calib.shape[0])}
    losses = {"mse": mse_loss,
              "mse_minkowski_relaxed": mse_minkowski_loss(relaxed_loss(cfg), cfg.minkowski_weight),
              "mse_minkowski_surrogate": (mse_minkowski_loss(trust, cfg.minkowski_weight) if trust is not None
                                          else None),
              "generative": flow_matching_loss(),
              "generative_minkowski": flow_matching_loss(relaxed_loss(cfg), cfg.minkowski_weight)}
    models = {}
    for i, name in enumerate(cfg.models):
        k_init, k_fit = jax.random.split(jax.random.fold_in(key, i))
        # every U-Net starts from the same weights (and every flow from the same), so losses alone differ
        k_init = jax.random.fold_in(key, 1000 + (name in GENERATIVE))
        model = build_model(name, cfg, k_init, latent_scale=scale)
        n = cfg.flow_steps if name in GENERATIVE else cfg.steps
        log(f"training {name} ({n} steps, batch {cfg.batch})")
        t0, c0 = time.perf_counter(), time.process_time()
        ckpt = str(ckpt_dir / f"{name}.ckpt") if ckpt_dir is not None else None
        res = fit(model, losses[name], sampler, optimizer=default_optimizer(cfg.lr, n), n_iters=n, key=k_fit,
                  checkpoint=ckpt, checkpoint_every=50, progress=progress, description=name)
        models[name] = res.model
        hist = np.asarray(res.history, dtype=float)
        tail = max(1, min(20, hist.size // 5)) if hist.size else 1
        record[name] = {"steps": n, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                        "loss_first": float(hist[:tail].mean()) if hist.size else None,
                        "loss_last": float(hist[-tail:].mean()) if hist.size else None,
                        "aux_last": {k: float(np.mean(v[-tail:])) for k, v in res.aux_history.items() if v},
                        "history": hist.tolist()}
    return models, record


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
        ckpt = stage / CHECKPOINTS
        ckpt.mkdir(exist_ok=True)
        t1 = time.perf_counter()
        models, record = train_models(cfg, np.asarray(train.values, np.float32), progress=progress, log=log,
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

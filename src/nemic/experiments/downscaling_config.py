"""Settings of the downscaling recipe (:mod:`nemic.experiments.downscaling`) and the pieces that depend only on
them: the model names, :class:`DownscalingConfig`, the untrained networks and the relaxed Minkowski loss."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from nemic.core.errors import ConfigError
from nemic.data.patches import block_average, check_factor
from nemic.metrics.minkowski import MinkowskiLoss
from nemic.nn.flow import ConditionalFlow
from nemic.nn.unet import SuperResolutionUNet

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
    pretrain_steps: int = 0
    flow_pretrain_steps: int = 0
    lr: float = 2e-3
    minkowski_weight: float = 10.0
    minkowski_weights: tuple = ()
    val_fraction: float = 0.0
    surrogate_version: int = 2
    noise_scales: tuple = (1.0,)
    sde_noises: tuple = (0.0,)
    sampler_steps: tuple = ()
    spread_band: tuple = (0.8, 1.2)
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
                         ("flow_steps", 0), ("pretrain_steps", 0), ("flow_pretrain_steps", 0), ("ode_steps", 1), ("members", 2), ("max_test_patches", 1),
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
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.surrogate_version not in (1, 2):
            raise ConfigError(f"surrogate_version must be 1 or 2, got {self.surrogate_version!r}")
        for name in ("minkowski_weights", "noise_scales"):
            v = np.asarray(getattr(self, name), dtype=float)
            if v.ndim != 1 or not np.all(np.isfinite(v)) or np.any(v < 0) or (name == "noise_scales" and
                                                                               (v.size < 1 or np.any(v <= 0))):
                raise ConfigError(f"{name} must be a list of finite numbers "
                                  f"{'> 0 (at least one)' if name == 'noise_scales' else '>= 0'}, "
                                  f"got {getattr(self, name)!r}")
        eps = np.asarray(self.sde_noises, dtype=float)
        if eps.ndim != 1 or eps.size < 1 or not np.all(np.isfinite(eps)) or np.any(eps < 0):
            raise ConfigError(f"sde_noises must be a list of finite numbers >= 0 (at least one), "
                              f"got {self.sde_noises!r}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.sampler_steps):
            raise ConfigError(f"sampler_steps must be a list of integers >= 1, got {self.sampler_steps!r}")
        band = np.asarray(self.spread_band, dtype=float)
        if band.shape != (2,) or not np.all(np.isfinite(band)) or not 0 < band[0] <= 1 <= band[1]:
            raise ConfigError(f"spread_band must be [low, high] with 0 < low <= 1 <= high, got {self.spread_band!r}")
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
                max_test_patches=3, max_patches_per_frame=4, stride=68, pretrain_steps=2, flow_pretrain_steps=2,
                minkowski_weights=(5.0, 25.0), val_fraction=0.3, noise_scales=(1.0, 1.5), sde_noises=(0.0, 1.0))
    base.update(overrides)
    return DownscalingConfig(**base)



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

"""Fitting the learned Minkowski surrogate (:class:`~nemic.nn.minkowski_surrogate.MinkowskiSurrogate`).

:func:`train_surrogate` is :func:`~nemic.train.loop.fit` with a sampler of augmented minibatches (random
patches, each under one of the symmetries of the square, which leave every Minkowski measure unchanged) and the
loss ``mean(((M_hat - M) / std)^2)`` over the four measures and all thresholds (std: per measure and threshold
over the training targets, + 1). The output scales and read-out biases are first set from the data
(:func:`init_readout`). Quarenghi, Cotsakis & Beucler (2026), arXiv:2604.11422.

Saving and loading use the one weights format (:func:`nemic.train.checkpoint.save_module`); the shipped weights
load with :func:`load_default_surrogate`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski.surrogate import polyomino_min_perimeter, stack_measures
from nemic.nn.minkowski_quad import BitQuadSurrogate  # noqa: F401  (registers the kind for load_module)
from nemic.nn.minkowski_surrogate import MinkowskiSurrogate
from nemic.train.checkpoint import CheckpointError, load_module, save_module
from nemic.train.loop import fit

__all__ = ["PatchSampler", "init_readout", "load_default_surrogate", "load_surrogate", "save_surrogate",
           "train_surrogate"]


def _dihedral(x: jax.Array, k: jax.Array) -> jax.Array:
    """One of the 8 symmetries of the square (the measures are invariant under all of them)."""
    x = jax.lax.switch(k % 4, [lambda a: a, lambda a: jnp.rot90(a, 1, (-2, -1)),
                               lambda a: jnp.rot90(a, 2, (-2, -1)), lambda a: jnp.rot90(a, 3, (-2, -1))], x)
    return jnp.where(k >= 4, jnp.flip(x, -1), x)


class PatchSampler(eqx.Module):
    """Minibatches of patches (B, H, W) and their measures (B, 4, T), each patch under a random symmetry.

    Square patches use all 8 symmetries of the square, others the 4 that keep the shape (identity, 180-degree
    rotation, and the flips of both). Patches are drawn with replacement only if there are fewer than B.
    """

    patches: jax.Array
    targets: jax.Array
    batch_size: int = eqx.field(static=True)

    def __call__(self, key: jax.Array, iteration: Any = None) -> tuple[jax.Array, jax.Array]:
        n = self.patches.shape[0]
        square = self.patches.shape[-1] == self.patches.shape[-2]
        k1, k2 = jax.random.split(key)
        idx = jax.random.choice(k1, n, (self.batch_size,), replace=n < self.batch_size)
        sym = jax.random.randint(k2, (self.batch_size,), 0, 8 if square else 4) * (1 if square else 2)
        return jax.vmap(_dihedral)(self.patches[idx], sym), self.targets[idx]


def init_readout(model: MinkowskiSurrogate, patches: Any, targets: Any) -> MinkowskiSurrogate:
    """Set a surrogate's output scales and read-out biases from training data (done by :func:`train_surrogate`).

    Constrained model: scales (s_P, s_N, s_H) = standard deviations (+1) of perimeter, components and holes per
    threshold; read-out biases so that an all-zero trunk predicts the training means (area ratios
    A_k / A_{k-1} through a logit, the other measures through an inverse softplus of their mean excess over the
    constraint). Baseline: ``offsets`` = means and ``scales`` = standard deviations (+1). (N, H, W), (N, 4, T).
    """
    x = jnp.asarray(patches, dtype=float)
    y = jnp.asarray(targets, dtype=float)
    std = jnp.std(y, axis=0) + 1.0
    mean = jnp.mean(y, axis=0)
    if not model.constrained:
        return eqx.tree_at(lambda m: (m.scales, m.offsets), model, (std, mean))
    holes = y[:, 3] - y[:, 2]
    scales = jnp.stack([std[0], std[1], std[3], jnp.std(holes, axis=0) + 1.0])
    domain = x.shape[-1] * x.shape[-2]
    frac = jnp.clip(jnp.mean(y[:, 0], axis=0) / domain, 1e-4, 1 - 1e-4)
    ratio = jnp.clip(frac / jnp.concatenate([jnp.ones(1), frac[:-1]]), 1e-4, 1 - 1e-4)
    excess = jnp.stack([
        jnp.mean(y[:, 1] - polyomino_min_perimeter(y[:, 0]), axis=0) / scales[1],
        jnp.mean(y[:, 3], axis=0) / scales[2],
        jnp.mean(holes, axis=0) / scales[3],
    ])
    inv_softplus = jnp.log(jnp.expm1(jnp.clip(excess, 1e-3, 30.0)))
    bias = jnp.concatenate([jnp.log(ratio / (1 - ratio))[None], inv_softplus])
    return eqx.tree_at(lambda m: (m.scales, m.offsets, m.out_bias), model, (scales, jnp.zeros_like(scales), bias))


def _measure_loss(model: MinkowskiSurrogate, batch: tuple[jax.Array, jax.Array, jax.Array], key: Any) -> jax.Array:
    xb, yb, std = batch
    return jnp.mean(((stack_measures(model(xb)) - yb) / std) ** 2)


class _WithStd(eqx.Module):
    sampler: PatchSampler
    std: jax.Array

    def __call__(self, key, iteration=None):
        xb, yb = self.sampler(key, iteration)
        return xb, yb, self.std


def train_surrogate(
    model: MinkowskiSurrogate,
    patches: Any,
    targets: Any,
    *,
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    key: jax.Array,
    callback: Callable[[int, float], None] | None = None,
    progress: bool = False,
    description: str = "training surrogate",
    checkpoint: Any = None,
) -> tuple[MinkowskiSurrogate, list[float]]:
    """Fit a surrogate to exact measures with Adam; returns the trained model and the loss history.

    Args:
        model: initial :class:`MinkowskiSurrogate` (its scales, offsets and read-out biases are first set from
            ``targets`` by :func:`init_readout`) or :class:`~nemic.nn.minkowski_quad.BitQuadSurrogate` (set by
            its ``init_from_data``).
        patches: (N, H, W) rain rate in mm/h.
        targets: (N, 4, T) exact (area, perimeter, euler, components) of the patches at ``model.thresholds``.
        steps, batch_size, learning_rate: optimisation settings (cosine-decayed Adam, Kingma & Ba 2015,
            arXiv:1412.6980).
        key: PRNG key for minibatches and random dihedral augmentation.
        callback: called as ``callback(step, loss)`` after every step.
        progress: show the loop's Rich progress bar. checkpoint: a checkpoint file to save to / resume from.

    Raises:
        TrainingDivergedError: on a NaN/inf loss, gradient or weight (nothing is returned or saved then).
    """
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ConfigError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    x = jnp.asarray(patches, dtype=float)
    y = jnp.asarray(targets, dtype=float)
    if x.ndim != 3 or y.ndim != 3 or y.shape[0] != x.shape[0] or y.shape[1:] != (4, model.thresholds.shape[0]):
        raise DataError(f"patches (N, H, W) and targets (N, 4, T) do not match: {x.shape}, {y.shape}")
    if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))):
        raise DataError("surrogate training patches or targets contain NaN/inf values")
    std = jnp.std(y, axis=0) + 1.0
    model = model.init_from_data(x, y) if hasattr(model, "init_from_data") else init_readout(model, x, y)
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    sampler = _WithStd(PatchSampler(x, y, batch_size), std)
    res = fit(model, _measure_loss, sampler, optimizer=opt, n_iters=steps, key=key, callback=callback,
              progress=progress, description=description, checkpoint=checkpoint)
    return res.model, res.history


def save_surrogate(model: MinkowskiSurrogate, path: str | os.PathLike,
                   extra: dict[str, Any] | None = None) -> Path:
    """Save a surrogate in the one weights format (``path`` + ``.eqx``); see :func:`~nemic.train.checkpoint.save_module`."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".eqx", ".json") else base
    return save_module(base, model, extra=extra)


def load_surrogate(path: str | os.PathLike) -> MinkowskiSurrogate:
    """Load surrogate weights (the one weights format, or the two-file format of earlier nemic versions)."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".eqx", ".json") else base
    if not base.with_name(base.name + ".eqx").exists():
        raise CheckpointError(f"surrogate weights '{base}.eqx' do not exist")
    return load_module(base.with_name(base.name + ".eqx"), kind="MinkowskiSurrogate")


def load_default_surrogate(constrained: bool = True, version: int = 1) -> Any:
    """The surrogate weights shipped with nemic (``nemic/resources/opera/surrogate*``; recipe in their JSON).

    ``version=2``: the bit-quad surrogate (:class:`~nemic.nn.minkowski_quad.BitQuadSurrogate`, always
    constrained); ``version=1``: :class:`MinkowskiSurrogate`, constrained or its unconstrained baseline.
    """
    if version not in (1, 2):
        raise ConfigError(f"version must be 1 or 2, got {version!r}")
    if version == 2:
        name, kind = "surrogate_v2", "BitQuadSurrogate"
    else:
        name, kind = ("surrogate" if constrained else "surrogate_unconstrained"), "MinkowskiSurrogate"
    ref = resources.files("nemic").joinpath("resources", "opera", f"{name}.eqx")
    if not ref.is_file():
        raise DataError(f"no shipped surrogate weights '{name}' in this installation")
    with resources.as_file(ref) as p:
        return load_module(Path(p), kind=kind)

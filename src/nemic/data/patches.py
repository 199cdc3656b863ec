"""Training patches for precipitation downscaling: fine patches, coarse inputs, splits, augmentation, batches.

The pipeline follows the super-resolution experiment of the Minkowski image loss (Quarenghi, Cotsakis & Beucler
2026, arXiv:2604.11422) on the EUMETNET OPERA 2 km composite:

1. :func:`downscaling_patches`: NaN-free square patches (default 128 x 128 = 256 km) with at least a minimum
   fraction of wet pixels, cut by :func:`nemic.data.opera.extract_patches`; rates below the **drizzle floor**
   (0.1 mm/h) are set to 0, windows holding a rate above the **clutter** limit (150 mm/h) are rejected, and the
   remaining rates are **clipped** at 100 mm/h (``clip_rate``; convective rain rarely exceeds it on a 2 km grid
   and single bright pixels would otherwise dominate an MSE loss).
2. :func:`block_average`: the coarse input, the mean over ``factor x factor`` blocks. The paper goes from 25 km to
   2 km (12.5x) by 10 x 10 pooling; 10 does not divide 128, so that factor needs patches of 120, 130 or 160
   points, while 8 (16 km) and 16 (32 km) divide the 128-point patches. The factor must divide the patch size
   (else a one-line :class:`~nemic.core.errors.ConfigError`). :func:`upsample_nearest` repeats each coarse value
   over its block (the U-Net's input grid).
3. :func:`chronological_split`: earlier frames train, later frames test (:func:`nemic.data.opera.time_block_split`).
4. :func:`dihedral_augment`: random flips and 90-degree rotations (the 8 symmetries of the square), the same for a
   fine patch and its coarse input, driven by a ``jax.random`` key.
5. :class:`PatchSampler`: ``sample(key, iteration) -> {"coarse", "fine"}``, the sampler of
   :func:`nemic.train.loop.fit` (an ``eqx.Module``, so its patches are passed to the compiled code as arguments).

Every step refuses bad input with a one-line :class:`~nemic.core.errors.DataError` or
:class:`~nemic.core.errors.ConfigError`: frames smaller than a patch, NaN-only frames, all-dry data, a factor that
does not divide the patch size.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.opera import extract_patches, time_block_split

__all__ = [
    "CLIP_RATE",
    "CLUTTER_RATE",
    "DRIZZLE_FLOOR",
    "PatchSampler",
    "block_average",
    "check_factor",
    "chronological_split",
    "dihedral_augment",
    "downscaling_patches",
    "upsample_nearest",
]

#: rates below this are dry (mm/h), as in arXiv:2604.11422 and the OPERA literature
DRIZZLE_FLOOR = 0.1
#: rates above this are clipped (mm/h)
CLIP_RATE = 100.0
#: a window holding a rate above this (radar clutter, mm/h) is not used as a patch
CLUTTER_RATE = 150.0


def check_factor(size: int, factor: int) -> int:
    """Raise a one-line :class:`ConfigError` unless ``factor`` is an integer >= 1 dividing the patch ``size``."""
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ConfigError(f"coarsening factor must be an integer >= 1, got {factor!r}")
    if size % factor:
        raise ConfigError(f"coarsening factor {factor} does not divide the patch size {size}; "
                          f"choose a divisor (e.g. 8 or 16 for 128, 10 for 120 or 130)")
    return int(factor)


def downscaling_patches(
    rain: Any,
    size: int = 128,
    *,
    factor: int | None = None,
    stride: int | None = None,
    min_wet_fraction: float = 0.1,
    drizzle_floor: float = DRIZZLE_FLOOR,
    clip_rate: float | None = CLIP_RATE,
    clutter_rate: float = CLUTTER_RATE,
    max_patches_per_frame: int | None = None,
) -> xr.DataArray:
    """NaN-free ``size x size`` fine patches (mm/h) for downscaling, from OPERA rain-rate frames.

    Args:
        rain: rain rate (time, y, x) or (y, x) in mm/h, NaN outside radar coverage (a lazy DataArray is fine:
            frames are loaded one at a time).
        size: patch side in pixels (128 = 256 km on the 2 km grid).
        factor: if given, checked to divide ``size`` here, before any data is read.
        stride: step between candidate windows (default ``size``: non-overlapping tiles).
        min_wet_fraction: minimum share of pixels at or above ``drizzle_floor``.
        drizzle_floor: rates below it are set to 0 (mm/h).
        clip_rate: rates above it are set to it (mm/h); ``None`` keeps them.
        clutter_rate: windows holding a rate above it are rejected (mm/h).
        max_patches_per_frame: keep at most this many (the wettest) per frame.

    Returns:
        DataArray ``rain_rate`` (patch, y, x) with coordinates ``time``, ``y0``, ``x0`` along ``patch``
        (see :func:`nemic.data.opera.extract_patches`), float64.

    Raises:
        DataError: frames smaller than a patch, a frame that is NaN everywhere, no wet pixel anywhere, or no
            window passing the NaN / wet-fraction / clutter tests.
        ConfigError: a factor that does not divide ``size``, a bad clip rate.
    """
    if factor is not None:
        check_factor(size, factor)
    if clip_rate is not None and not clip_rate > drizzle_floor:
        raise ConfigError(f"clip_rate must exceed the drizzle floor {drizzle_floor}, got {clip_rate!r}")
    if not isinstance(rain, xr.DataArray):
        arr = np.asarray(rain, dtype=np.float64)
        rain = xr.DataArray(arr, dims=("time", "y", "x")[-arr.ndim:]) if arr.ndim in (2, 3) else arr
    if not isinstance(rain, xr.DataArray) or rain.ndim not in (2, 3):
        raise DataError(f"rain must be (time, y, x) or (y, x), got shape {np.shape(rain)}")
    if rain.ndim == 2:
        rain = rain.expand_dims("time")
    ny, nx = rain.shape[-2:]
    if ny < size or nx < size:
        raise DataError(f"frames of {ny} x {nx} are smaller than the patch size {size} x {size}")
    any_wet = False
    for k in range(rain.shape[0]):
        frame = np.asarray(rain[k].values, dtype=np.float64)
        finite = np.isfinite(frame)
        if not finite.any():
            raise DataError(f"frame {k} of {rain.shape[0]} is NaN everywhere (no radar coverage); drop it first")
        any_wet = any_wet or bool(np.any(frame[finite] >= drizzle_floor))
    if not any_wet:
        raise DataError(f"the data are all dry: no rain rate >= {drizzle_floor} mm/h in {rain.shape[0]} frame(s)")
    patches = extract_patches(rain, size=size, stride=stride, min_wet_fraction=min_wet_fraction,
                              wet_threshold=drizzle_floor, max_rate=clutter_rate,
                              max_patches_per_frame=max_patches_per_frame)
    if patches.sizes["patch"] == 0:
        raise DataError(f"no NaN-free {size} x {size} patch with wet fraction >= {min_wet_fraction} and no rate "
                        f"above {clutter_rate} mm/h in {rain.shape[0]} frame(s)")
    if clip_rate is not None:
        patches = patches.clip(max=clip_rate)
    patches.attrs.update(drizzle_floor=drizzle_floor, clip_rate=clip_rate if clip_rate is not None else "none",
                         clutter_rate=clutter_rate, min_wet_fraction=min_wet_fraction)
    return patches


def block_average(fine: Any, factor: int) -> jax.Array:
    """Mean over non-overlapping ``factor x factor`` blocks: (..., H, W) -> (..., H / factor, W / factor).

    Jittable (``factor`` static). A one-line :class:`ConfigError` if ``factor`` divides neither side exactly.
    """
    fine = jnp.asarray(fine)
    if fine.ndim < 2:
        raise DataError(f"block_average needs (..., H, W), got shape {fine.shape}")
    h, w = fine.shape[-2:]
    check_factor(h, factor)
    check_factor(w, factor)
    blocks = fine.reshape(fine.shape[:-2] + (h // factor, factor, w // factor, factor))
    return blocks.mean(axis=(-3, -1))


def upsample_nearest(coarse: Any, factor: int) -> jax.Array:
    """Repeat each value over a ``factor x factor`` block: (..., h, w) -> (..., h factor, w factor).

    The inverse of :func:`block_average` on block-constant fields (``block_average(upsample_nearest(c, f), f)
    == c``).
    """
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ConfigError(f"upsampling factor must be an integer >= 1, got {factor!r}")
    coarse = jnp.asarray(coarse)
    return jnp.repeat(jnp.repeat(coarse, factor, axis=-2), factor, axis=-1)


def chronological_split(patches: xr.DataArray, train_fraction: float = 0.75,
                        gap: int = 1) -> tuple[xr.DataArray, xr.DataArray]:
    """Split patches by their ``time`` coordinate: the earlier frames train, the later frames test.

    ``gap`` distinct times between the blocks are dropped so that strongly autocorrelated neighbouring frames do
    not fall on opposite sides (Roberts et al. 2017, Ecography 40, 913, doi:10.1111/ecog.02881). Every training
    patch precedes every test patch in time.
    """
    if "time" not in patches.coords:
        raise DataError("patches need a 'time' coordinate along 'patch' to be split in time")
    train_idx, test_idx = time_block_split(patches["time"].values, train_fraction, gap)
    return patches.isel(patch=train_idx), patches.isel(patch=test_idx)


def _dihedral(x: jax.Array, k: jax.Array) -> jax.Array:
    """Symmetry ``k`` in 0..7 of the square applied to the last two axes: rotate by ``k % 4`` quarter turns, then
    flip left-right if ``k >= 4``."""
    variants = [jnp.rot90(x, r, axes=(-2, -1)) for r in range(4)]
    variants += [jnp.flip(v, axis=-1) for v in variants]
    return jax.lax.switch(k, [lambda v=v: v for v in variants])


def dihedral_augment(key: jax.Array, *fields: jax.Array) -> tuple[jax.Array, ...]:
    """Apply one random flip/rotation per sample to each of ``fields`` (the same one to all of them).

    Args:
        key: ``jax.random`` key.
        fields: arrays (B, ..., H, W) with square last axes (H == W) and a common leading sample axis, e.g. the
            fine patches (B, 128, 128) and their coarse inputs (B, 16, 16).

    Returns:
        the transformed fields, same shapes. Each sample draws one of the 8 symmetries of the square uniformly.
        Block averaging commutes with these symmetries, so transforming coarse and fine alike keeps them paired.
    """
    if not fields:
        return ()
    n = fields[0].shape[0]
    for f in fields:
        if f.ndim < 3 or f.shape[0] != n or f.shape[-1] != f.shape[-2]:
            raise DataError(f"dihedral_augment needs (B, ..., H, H) fields with one B, got shapes "
                            f"{[tuple(g.shape) for g in fields]}")
    ks = jax.random.randint(key, (n,), 0, 8)
    return tuple(jax.vmap(_dihedral)(f, ks) for f in fields)


class PatchSampler(eqx.Module):
    """Random batches of (coarse, fine) pairs: the ``sample(key, iteration)`` of :func:`nemic.train.loop.fit`.

    Args:
        patches: fine patches (N, H, H) in mm/h (e.g. from :func:`downscaling_patches`; NaN refused).
        factor: block-averaging factor (divides H).
        batch_size: patches per batch (drawn without replacement within a batch when ``batch_size <= N``).
        augment: apply :func:`dihedral_augment`.

    Calling it returns ``{"coarse": (B, H/factor, H/factor), "fine": (B, H, H)}``. The same key gives the same
    batch; :func:`fit` folds the iteration into the key, so ``iteration`` itself is not used.
    """

    patches: jax.Array
    factor: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    augment: bool = eqx.field(static=True)

    def __init__(self, patches: Any, factor: int, batch_size: int = 8, augment: bool = True):
        arr = np.asarray(patches.values if isinstance(patches, xr.DataArray) else patches)
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] < 1:
            raise DataError(f"patches must be (N, H, H) with N >= 1, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"patches hold {int(np.sum(~np.isfinite(arr)))} NaN/inf value(s); use NaN-free patches")
        check_factor(arr.shape[1], factor)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.patches = jnp.asarray(arr)
        self.factor = int(factor)
        self.batch_size = int(batch_size)
        self.augment = bool(augment)

    def __call__(self, key: jax.Array, iteration: Any = None) -> dict[str, jax.Array]:
        k_idx, k_aug = jax.random.split(key)
        n = self.patches.shape[0]
        if self.batch_size <= n:
            idx = jax.random.choice(k_idx, n, (self.batch_size,), replace=False)
        else:
            idx = jax.random.randint(k_idx, (self.batch_size,), 0, n)
        fine = self.patches[idx]
        if self.augment:
            (fine,) = dihedral_augment(k_aug, fine)
        return {"coarse": block_average(fine, self.factor), "fine": fine}

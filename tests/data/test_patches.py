"""Downscaling patches: drizzle floor, clipping, NaN-free wet patches, block averages, chronological split,
dihedral augmentation, the sampler used by fit, and the one-line errors."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.patches import (
    PatchSampler,
    block_average,
    check_factor,
    chronological_split,
    dihedral_augment,
    downscaling_patches,
    upsample_nearest,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opera" / "opera_rain_2023-08-01_0000-1600.nc"


def frames(n=6, size=160, seed=0):
    """Synthetic rain frames (time, y, x): smooth cells, a NaN corner (no radar), drizzle, one clutter-like spike."""
    rng = np.random.default_rng(seed)
    y, x = np.indices((size, size))
    out = np.zeros((n, size, size))
    for k in range(n):
        for _ in range(5):
            cy, cx = rng.uniform(0, size, 2)
            out[k] += rng.uniform(1, 40) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(5, 15) ** 2))
    out[:, :20, :20] = np.nan
    out[:, 100, 100] = 120.0  # above the clip rate, below the clutter limit
    times = np.datetime64("2023-08-01T00:00") + np.arange(n) * np.timedelta64(15, "m")
    return xr.DataArray(out, dims=("time", "y", "x"), coords={"time": times})


def test_patches_are_nan_free_floored_clipped_and_wet():
    rain = frames()
    p = downscaling_patches(rain, 64, min_wet_fraction=0.05)
    v = p.values
    assert v.shape[1:] == (64, 64) and v.shape[0] >= 6
    assert np.all(np.isfinite(v))
    assert np.all((v == 0) | (v >= 0.1))
    assert v.max() <= 100.0 and np.any(v == 100.0)
    assert np.all((v >= 0.1).mean(axis=(1, 2)) >= 0.05)
    assert set(p.time.values) <= set(rain.time.values)
    # the patch is the frame's window after floor and clip
    k = int(np.nonzero(rain.time.values == p.time.values[0])[0][0])
    win = rain.values[k, p.y0.values[0]:p.y0.values[0] + 64, p.x0.values[0]:p.x0.values[0] + 64]
    np.testing.assert_array_equal(v[0], np.clip(np.where(win < 0.1, 0, win), None, 100.0))


def test_patch_errors_are_one_line():
    rain = frames(2)
    cases = [
        (lambda: downscaling_patches(rain, 256), DataError, "smaller than the patch size"),
        (lambda: downscaling_patches(rain * 0.0, 64), DataError, "all dry"),
        (lambda: downscaling_patches(rain.where(rain.time != rain.time[1]), 64), DataError, "NaN everywhere"),
        (lambda: downscaling_patches(rain, 128, factor=10), ConfigError, "does not divide the patch size 128"),
        (lambda: downscaling_patches(rain, 64, min_wet_fraction=1.0), DataError, "no NaN-free"),
    ]
    for fn, err, msg in cases:
        with pytest.raises(err, match=msg) as e:
            fn()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("factor", [8, 10, 16])
def test_block_average_and_upsample(factor):
    size = 160  # divisible by 8, 10 and 16
    f = jnp.asarray(np.random.default_rng(1).gamma(0.5, 2.0, (3, size, size)))
    c = jax.jit(block_average, static_argnums=1)(f, factor)
    assert c.shape == (3, size // factor, size // factor)
    np.testing.assert_allclose(c[1, 2, 3], f[1, 2 * factor:3 * factor, 3 * factor:4 * factor].mean(), rtol=1e-12)
    np.testing.assert_allclose(c.mean(), f.mean(), rtol=1e-12)  # block means conserve the domain mean
    np.testing.assert_allclose(block_average(upsample_nearest(c, factor), factor), c, rtol=1e-12)
    assert check_factor(128, 16) == 16
    with pytest.raises(ConfigError, match="does not divide"):
        block_average(f[:, :128, :128], 10)


def test_chronological_split():
    p = downscaling_patches(frames(8), 64, min_wet_fraction=0.02)
    train, test = chronological_split(p, train_fraction=0.5, gap=1)
    assert train.sizes["patch"] > 0 and test.sizes["patch"] > 0
    assert train.time.values.max() < test.time.values.min()
    n_gap = len(set(p.time.values)) - len(set(train.time.values)) - len(set(test.time.values))
    assert n_gap == 1


def test_dihedral_augment_pairs_fine_and_coarse():
    key = jax.random.key(3)
    fine = jnp.asarray(np.random.default_rng(2).normal(size=(64, 32, 32)))
    coarse = block_average(fine, 8)
    f2, c2 = jax.jit(dihedral_augment)(key, fine, coarse)
    np.testing.assert_allclose(block_average(f2, 8), c2, rtol=1e-12)  # still paired
    # each sample is one of the 8 symmetries of its original, and several different ones occur
    seen = set()
    for a, b in zip(np.asarray(fine), np.asarray(f2)):
        variants = [np.rot90(a, r) for r in range(4)]
        variants += [np.fliplr(v) for v in variants]
        hits = [i for i, v in enumerate(variants) if np.array_equal(v, b)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == 8
    same = dihedral_augment(key, fine)[0]
    np.testing.assert_array_equal(same, f2)  # same key, same transforms


def test_sampler_feeds_fit():
    p = downscaling_patches(frames(4), 64, min_wet_fraction=0.02)
    s = PatchSampler(p, factor=8, batch_size=4)
    b = s(jax.random.key(0), 0)
    assert b["fine"].shape == (4, 64, 64) and b["coarse"].shape == (4, 8, 8)
    np.testing.assert_allclose(block_average(b["fine"], 8), b["coarse"], rtol=1e-12)
    b2 = eqx_jit_call(s, jax.random.key(0))
    np.testing.assert_array_equal(b["fine"], b2["fine"])
    assert not np.array_equal(s(jax.random.key(1), 0)["fine"], b["fine"])
    with pytest.raises(ConfigError, match="does not divide"):
        PatchSampler(p, factor=10)
    with pytest.raises(DataError, match="NaN"):
        PatchSampler(np.full((2, 16, 16), np.nan), factor=4)


def eqx_jit_call(sampler, key):
    import equinox as eqx

    return eqx.filter_jit(lambda s, k, i: s(k, i))(sampler, key, jnp.asarray(0))


@pytest.mark.skipif(not SHARED.is_file(), reason="the shared OPERA day is not on this machine")
def test_real_opera_day():
    from nemic.data.opera import open_netcdf

    rain = open_netcdf(SHARED).rain_rate.isel(time=[0, 30, 60])
    p = downscaling_patches(rain, 128, factor=16, max_patches_per_frame=4)
    assert p.sizes["patch"] >= 3 and np.all(np.isfinite(p.values))
    assert p.values.max() <= 100.0
    train, test = chronological_split(p, train_fraction=0.5, gap=0)
    assert train.time.values.max() < test.time.values.min()

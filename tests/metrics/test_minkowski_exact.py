"""Exact Minkowski measures against independent references (scikit-image, numpy edge counts)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number, label

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski import connected_components, minkowski_functionals

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opera" / "opera_rain_2023-08-01_0000-1600.nc"


def ref_measures(field, thresholds, connectivity):
    """Independent reference: numpy area, numpy edge count, scikit-image Euler number and labelling."""
    sk_conn = 2 if connectivity == 8 else 1
    out = []
    for u in thresholds:
        m = np.asarray(field) >= u  # NaN compares False: background
        p = np.pad(m, 1)
        perim = np.count_nonzero(p[:, 1:] != p[:, :-1]) + np.count_nonzero(p[1:, :] != p[:-1, :])
        _, ncomp = label(m, connectivity=sk_conn, return_num=True)
        out.append((m.sum(), perim, euler_number(m, connectivity=sk_conn), ncomp))
    return np.array(out).T  # (4, T)


def smooth_field(seed, shape=(48, 40), sigma=2.0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma)


@pytest.mark.parametrize(
    "mask, chi8, chi4",
    [
        # ring: one component, one hole under both conventions
        ([[1, 1, 1], [1, 0, 1], [1, 1, 1]], 0, 0),
        # diagonal pair: one 8-component, two 4-components
        ([[1, 0], [0, 1]], 1, 2),
        # diamond: 8-connected ring around a 4-connected hole; four separate 4-components whose hole leaks
        ([[0, 1, 0], [1, 0, 1], [0, 1, 0]], 0, 4),
    ],
)
def test_hand_made_conventions(mask, chi8, chi4):
    m = np.array(mask, dtype=float)
    assert int(minkowski_functionals(m, [0.5], connectivity=8).euler[0]) == chi8
    assert int(minkowski_functionals(m, [0.5], connectivity=4).euler[0]) == chi4
    # and scikit-image's connectivity=2 is the 8-convention, connectivity=1 the 4-convention
    assert euler_number(m.astype(bool), connectivity=2) == chi8
    assert euler_number(m.astype(bool), connectivity=1) == chi4


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", range(3))
def test_random_fields_match_references(seed, connectivity):
    f = smooth_field(seed)
    thr = np.linspace(-0.3, 0.3, 7)
    r = minkowski_functionals(f, thr, connectivity=connectivity, components=True)
    ref = ref_measures(f, thr, connectivity)
    np.testing.assert_array_equal(np.asarray(r.area), ref[0])
    np.testing.assert_array_equal(np.asarray(r.perimeter), ref[1])
    np.testing.assert_array_equal(np.asarray(r.euler), ref[2])
    np.testing.assert_array_equal(np.asarray(r.components), ref[3])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_white_noise_many_components(connectivity):
    # salt-and-pepper fields: many tiny components and holes, diagonal contacts everywhere
    rng = np.random.default_rng(7)
    f = rng.uniform(size=(2, 31, 29))
    thr = np.array([0.2, 0.5, 0.8])
    r = minkowski_functionals(f, thr, connectivity=connectivity, components=True)
    for b in range(2):
        ref = ref_measures(f[b], thr, connectivity)
        np.testing.assert_array_equal(np.asarray(r.euler[b]), ref[2])
        np.testing.assert_array_equal(np.asarray(r.components[b]), ref[3])
        np.testing.assert_array_equal(np.asarray(r.perimeter[b]), ref[1])


def test_degenerate_shapes():
    for shape in [(1, 1), (1, 9), (9, 2)]:
        f = np.ones(shape)
        for c in (4, 8):
            r = minkowski_functionals(f, [0.5, 2.0], connectivity=c, components=True)
            assert r.area.tolist() == [f.size, 0]
            assert r.perimeter.tolist() == [2 * (shape[0] + shape[1]), 0]
            assert r.euler.tolist() == [1, 0]
            assert r.components.tolist() == [1, 0]


def test_opera_sample_matches_references(opera_sample):
    frames = opera_sample.rain_rate.values[:3, :96, :128]
    thr = np.array([0.1, 0.5, 1.0, 2.0, 5.0])
    for c in (4, 8):
        r = minkowski_functionals(frames, thr, connectivity=c, components=True)
        for k in range(frames.shape[0]):
            ref = ref_measures(frames[k], thr, c)
            np.testing.assert_array_equal(np.stack([np.asarray(x[k]) for x in r]), ref)


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared OPERA day not available at {SHARED} (development data)")
def test_shared_opera_frames_with_missing_values():
    import xarray as xr

    with xr.open_dataset(SHARED) as ds:
        # two windows that straddle the edge of radar coverage (NaN = no coverage)
        frames = ds.rain_rate.isel(time=[10, 40], y=slice(650, 850), x=slice(250, 450)).values
    assert np.isnan(frames).any() and (frames > 1).any()
    thr = np.array([0.1, 0.3, 1.0, 3.0, 10.0])
    with pytest.raises(DataError, match="NaN"):
        minkowski_functionals(frames, thr)
    for c in (4, 8):
        r = minkowski_functionals(frames, thr, connectivity=c, nan_policy="background", components=True)
        for k in range(2):
            ref = ref_measures(frames[k], thr, c)
            np.testing.assert_array_equal(np.stack([np.asarray(x[k]) for x in r]), ref)


def test_batched_jit_vmap_and_pixel_size():
    f = np.stack([[smooth_field(s, (20, 24)) for s in range(3)] for _ in range(2)])  # (2, 3, 20, 24)
    thr = jnp.array([-0.1, 0.0, 0.2])
    full = minkowski_functionals(f, thr)
    assert full.area.shape == (2, 3, 3)
    jitted = jax.jit(lambda x, u: minkowski_functionals(x, u))(f, thr)
    vmapped = jax.vmap(lambda x: minkowski_functionals(x, thr))(f)
    for a, b, c in zip(full[:3], jitted[:3], vmapped[:3]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # components: batched, jitted and vmapped (small fields: the union-find loop is the slow part)
    g = f[:, :2, :10, :12]
    cb = connected_components(g, thr)
    cj = jax.jit(lambda x: connected_components(x, thr))(g)
    cv = jax.vmap(lambda x: connected_components(x, thr))(g)
    np.testing.assert_array_equal(cb, cj)
    np.testing.assert_array_equal(cb, cv)
    np.testing.assert_array_equal(cb[1, 0], ref_measures(g[1, 0], np.asarray(thr), 8)[3])
    # physical units: 2 km x 3 km pixels
    r = minkowski_functionals(f[0, 0], thr, pixel_size=(2000.0, 3000.0))
    m = f[0, 0][None] >= np.asarray(thr)[:, None, None]
    p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    vertical_edges = np.count_nonzero(p[:, :, 1:] != p[:, :, :-1], axis=(1, 2))  # length dy each
    horizontal_edges = np.count_nonzero(p[:, 1:, :] != p[:, :-1, :], axis=(1, 2))  # length dx each
    np.testing.assert_allclose(r.area, m.sum(axis=(1, 2)) * 6e6)
    np.testing.assert_allclose(r.perimeter, vertical_edges * 2000.0 + horizontal_edges * 3000.0)
    # gradient of the exact measures exists (zero): they are piecewise constant
    g = jax.grad(lambda x: jnp.sum(minkowski_functionals(x, thr, pixel_size=1.0).area))(jnp.asarray(f[0, 0]))
    assert np.all(np.asarray(g) == 0)


def test_connected_components_function():
    f = smooth_field(11, (30, 30))
    thr = [0.0, 0.1]
    for c in (4, 8):
        ref = ref_measures(f, thr, c)[3]
        np.testing.assert_array_equal(connected_components(f, thr, connectivity=c), ref)
    # spiral-like snake: a long path needs many propagation steps
    s = np.zeros((21, 21))
    s[::4, :] = 1
    for i, k in enumerate(range(0, 20, 4)):
        s[k + 1 : k + 4, -1 if i % 2 == 0 else 0] = 1
    assert label(s, connectivity=1, return_num=True)[1] == 1
    assert int(connected_components(s, [0.5], connectivity=4)[0]) == 1


def test_bad_input():
    with pytest.raises(DataError, match="at least 2 dimensions"):
        minkowski_functionals(np.ones(5), [0.5])
    with pytest.raises(ConfigError, match="strictly increasing"):
        minkowski_functionals(np.ones((4, 4)), [0.5, 0.2])
    with pytest.raises(ConfigError, match="finite"):
        minkowski_functionals(np.ones((4, 4)), [0.5, np.nan])
    with pytest.raises(DataError, match="NaN"):
        minkowski_functionals(np.full((4, 4), np.nan), [0.5])
    with pytest.raises(ConfigError, match="connectivity"):
        minkowski_functionals(np.ones((4, 4)), [0.5], connectivity=6)
    with pytest.raises(ConfigError, match="nan_policy"):
        minkowski_functionals(np.ones((4, 4)), [0.5], nan_policy="zero")
    with pytest.raises(ConfigError, match="pixel_size"):
        minkowski_functionals(np.ones((4, 4)), [0.5], pixel_size=-1.0)

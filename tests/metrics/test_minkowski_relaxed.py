"""Relaxed Minkowski measures: convergence to the exact ones as the temperature falls, and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski import minkowski_functionals
from nemic.metrics.minkowski.relaxed import (
    annealing_schedule,
    relaxed_area,
    relaxed_euler_characteristic,
    relaxed_minkowski_functionals,
    relaxed_perimeter,
)


def quantised_field(seed, shape=(32, 36)):
    """Smooth random 'rain' on a 0.01 grid; thresholds half-way between grid values stay 0.005 away."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * 3.0
    return np.round(f, 2)


THR = np.array([-0.305, -0.105, 0.005, 0.195, 0.405])
DELTA = 0.005


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("tnorm", ["product", "min"])
def test_converges_to_exact(connectivity, tnorm):
    f = quantised_field(0)
    assert np.min(np.abs(f[..., None] - THR)) >= DELTA - 1e-12
    exact = minkowski_functionals(f, THR, connectivity=connectivity)
    taus = np.array([0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002])
    errs = []
    for tau in taus:
        r = relaxed_minkowski_functionals(f, THR, tau, connectivity=connectivity, tnorm=tnorm)
        errs.append([float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(r[:3], exact[:3])])
    errs = np.array(errs)  # (n_tau, 3)
    # each pixel mask is within exp(-delta/tau) of its indicator and enters at most 9 terms with unit slope:
    # |relaxed - exact| <= 9 N exp(-delta / tau)
    bound = 9 * f.size * np.exp(-DELTA / taus)
    assert np.all(errs <= bound[:, None] + 1e-9)
    # once tau <= delta the error curve falls strictly (above, signed errors of different pixels can cancel)
    # and it ends below 1e-6
    assert np.all(np.diff(errs[taus <= DELTA], axis=0) < 0)
    assert errs[-1].max() < 1e-6 and np.all(errs[-1] < 1e-6 * errs[0])
    # large temperature is far from exact: the relaxation is not trivially exact
    assert errs[0].max() > 1.0


def test_area_error_rate_is_exp_minus_delta_over_tau():
    f = quantised_field(1)
    exact = np.asarray(minkowski_functionals(f, THR).area, float)
    taus = np.array([0.0015, 0.001, 0.0008, 0.0006, 0.0005])
    err = np.array([np.sum(np.abs(np.asarray(relaxed_area(f, THR, t)) - exact)) for t in taus])
    slope = np.polyfit(1 / taus, np.log(err), 1)[0]
    # pixels at distance delta dominate: log(err) ~ const - delta / tau
    assert slope == pytest.approx(-DELTA, rel=0.05)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_check_grads_moderate_temperature(connectivity):
    rng = np.random.default_rng(3)
    f = jnp.asarray(rng.uniform(0, 2, size=(5, 6)))
    thr = jnp.array([0.5, 1.2])
    w = jnp.asarray(rng.standard_normal((3, 2)))

    def scalar(tnorm):
        def fn(x, u):
            r = relaxed_minkowski_functionals(x, u, 0.3, connectivity=connectivity, tnorm=tnorm)
            return jnp.sum(w[0] * r.area + w[1] * r.perimeter + w[2] * r.euler)

        return jax.jit(fn)

    check_grads(scalar("product"), (f, thr), order=2, modes=("rev",), atol=1e-5, rtol=1e-5)
    # the min t-norm is piecewise smooth: first order away from ties
    check_grads(scalar("min"), (f, thr), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
    g = jax.grad(scalar("product"))(f, thr)
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_jit_vmap_grad_and_helpers():
    f = jnp.asarray(np.stack([quantised_field(s, (16, 18)) for s in range(3)]))
    thr = jnp.asarray(THR)
    full = relaxed_minkowski_functionals(f, thr, 0.05, tnorm="min")
    jitted = jax.jit(lambda x, t: relaxed_minkowski_functionals(x, thr, t, tnorm="min"))(f, 0.05)
    vm = jax.vmap(lambda x: relaxed_minkowski_functionals(x, thr, 0.05, tnorm="min"))(f)
    for a, b, c in zip(full[:3], jitted[:3], vm[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-12)
    np.testing.assert_allclose(relaxed_area(f, thr, 0.05), full.area, rtol=1e-12)
    np.testing.assert_allclose(relaxed_perimeter(f, thr, 0.05, tnorm="min"), full.perimeter, rtol=1e-12)
    np.testing.assert_allclose(relaxed_euler_characteristic(f, thr, 0.05, tnorm="min"), full.euler, rtol=1e-12)
    # pixel size: physical units agree with the exact measures in the cold limit
    ex = minkowski_functionals(f, thr, pixel_size=(2.0, 3.0))
    r = relaxed_minkowski_functionals(f, thr, 1e-4, pixel_size=(2.0, 3.0))
    np.testing.assert_allclose(r.area, ex.area, atol=1e-6)
    np.testing.assert_allclose(r.perimeter, ex.perimeter, atol=1e-6)
    # per-threshold temperature and gradient with respect to the temperature
    r2 = relaxed_minkowski_functionals(f, thr, jnp.full(5, 0.05))
    np.testing.assert_allclose(r2.euler, relaxed_minkowski_functionals(f, thr, 0.05).euler, rtol=1e-12)
    gt = jax.grad(lambda t: jnp.sum(relaxed_minkowski_functionals(f, thr, t).perimeter))(0.05)
    assert np.isfinite(gt)


def test_nan_background():
    f = quantised_field(2, (12, 12))
    g = f.copy()
    g[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        relaxed_area(g, THR, 0.1)
    h = f.copy()
    h[3, 4] = -100.0  # background at every threshold
    a = relaxed_minkowski_functionals(g, THR, 1e-4, nan_policy="background")
    b = relaxed_minkowski_functionals(h, THR, 1e-4)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_allclose(x, y, atol=1e-9)
    gr = jax.grad(lambda x: jnp.sum(relaxed_area(x, THR, 0.1, nan_policy="background")))(jnp.asarray(g))
    assert np.all(np.isfinite(gr)) and gr[3, 4] == 0


def test_annealing_schedule():
    s = annealing_schedule(1.0, 0.01, 100)
    vals = np.array([float(s(k)) for k in (0, 25, 50, 100, 200)])
    np.testing.assert_allclose(vals, [1.0, 10 ** -0.5, 0.1, 0.01, 0.01], rtol=1e-12)
    lin = annealing_schedule(1.0, 0.5, 10, kind="linear")
    assert float(jax.jit(lin)(5)) == pytest.approx(0.75)
    with pytest.raises(ConfigError):
        annealing_schedule(0.0, 0.1, 10)
    with pytest.raises(ConfigError):
        annealing_schedule(1.0, 0.1, 0)


def test_bad_input():
    f = np.ones((4, 4))
    with pytest.raises(ConfigError, match="temperature"):
        relaxed_area(f, [0.5], 0.0)
    with pytest.raises(ConfigError, match="temperature"):
        relaxed_area(f, [0.5], -1.0)
    with pytest.raises(ConfigError, match="tnorm"):
        relaxed_perimeter(f, [0.5], 0.1, tnorm="lukasiewicz")
    with pytest.raises(DataError, match="2 dimensions"):
        relaxed_area(np.ones(4), [0.5], 0.1)
    with pytest.raises(ConfigError, match="increasing"):
        relaxed_area(f, [0.5, 0.5], 0.1)


def test_converges_on_opera_sample(opera_sample):
    # real rain on its 0.01 mm/h grid, thresholds half-way between grid values: delta = 0.005 mm/h
    x = opera_sample.rain_rate.values[3, 64:128, 64:128]
    thr = np.array([0.105, 0.505, 1.005, 3.005])
    assert np.min(np.abs(x[..., None] - thr)) >= DELTA - 1e-9
    for c in (4, 8):
        exact = minkowski_functionals(x, thr, connectivity=c)
        errs = []
        for tau in (0.002, 0.001, 0.0005, 0.0003):
            r = relaxed_minkowski_functionals(x, thr, tau, connectivity=c)
            errs.append(max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(r[:3], exact[:3])))
            assert errs[-1] <= 9 * x.size * np.exp(-DELTA / tau)
        assert np.all(np.diff(errs) < 0) and errs[-1] < 1e-4

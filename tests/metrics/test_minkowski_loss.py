"""MinkowskiLoss: value against exact measures in the cold limit, gradients, jit/vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage
from skimage.measure import euler_number

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski.loss import MinkowskiLoss


def rain(seed, shape=(2, 20, 22)):
    rng = np.random.default_rng(seed)
    sigma = (0,) * (len(shape) - 2) + (2, 2)
    g = ndimage.gaussian_filter(rng.standard_normal(shape), sigma) * 4
    return np.round(np.where(g > 0, np.exp(g) - 1, 0.0), 2)  # mm/h on a 0.01 grid, many dry pixels


THR = np.array([0.105, 0.505, 2.005])


def numpy_measures(x, thr):
    """Area, pixel-edge perimeter and 8-connectivity Euler number from numpy and scikit-image."""
    out = np.zeros((3,) + x.shape[:-2] + (thr.size,))
    for idx in np.ndindex(x.shape[:-2]):
        for k, u in enumerate(thr):
            m = x[idx] >= u
            p = np.pad(m, 1)
            per = np.count_nonzero(p[:, 1:] != p[:, :-1]) + np.count_nonzero(p[1:] != p[:-1])
            out[(slice(None),) + idx + (k,)] = (m.sum(), per, euler_number(m, connectivity=2))
    return out


@pytest.mark.parametrize("transform", ["identity", "log1p"])
def test_cold_limit_equals_exact_loss(transform):
    pred, targ = rain(0), rain(1)
    w = {"area": 1.0, "perimeter": 0.5, "euler": 2.0}
    loss = MinkowskiLoss(THR, weights=w, temperature=1e-5, transform=transform)
    mp, mt = numpy_measures(pred, THR), numpy_measures(targ, THR)
    n = pred.shape[-1] * pred.shape[-2]
    expected = sum(wk * np.mean(((mp[k] - mt[k]) / n) ** 2) for k, wk in enumerate(w.values()))
    assert expected > 0
    np.testing.assert_allclose(float(loss(pred, targ)), expected, rtol=1e-6)
    assert float(loss(targ, targ)) == 0.0


def test_gradients_jit_vmap():
    pred, targ = jnp.asarray(rain(2, (6, 7))), jnp.asarray(rain(3, (6, 7)))
    loss = MinkowskiLoss(THR, temperature=0.5, transform="log1p")
    check_grads(lambda p: loss(p, targ), (pred + 0.3,), order=1, modes=("rev",), atol=1e-6, rtol=1e-5)
    g = jax.grad(loss)(pred, targ)
    assert g.shape == pred.shape and np.all(np.isfinite(g))
    # the target is a constant of the loss
    assert np.all(jax.grad(loss, argnums=1)(pred, targ) == 0)
    # jit of the module call, and vmap over pairs = per-pair losses
    P, T = jnp.asarray(rain(4)), jnp.asarray(rain(5))
    np.testing.assert_allclose(jax.jit(lambda l, a, b: l(a, b))(loss, P, T), loss(P, T), rtol=1e-12)
    per = jax.vmap(loss)(P, T)
    np.testing.assert_allclose(jnp.mean(per), loss(P, T), rtol=1e-12)
    # the loss is a pytree: gradient with respect to its temperature
    gl = eqx_grad_temperature(loss, P, T)
    assert np.isfinite(gl)


def eqx_grad_temperature(loss, p, t):
    import equinox as eqx

    return eqx.filter_grad(lambda l: l(p, t))(loss).temperature


def test_gradient_descent_recovers_structure():
    # start from a smoothed target: descending the loss brings its measures closer to the target's
    targ = jnp.asarray(rain(6, (24, 24)))
    pred0 = jnp.asarray(ndimage.uniform_filter(np.asarray(targ), 5))
    loss = MinkowskiLoss(THR, temperature=0.2, transform="log1p", weights={"area": 1.0, "perimeter": 1.0})
    step = jax.jit(lambda p: p - 200.0 * jax.grad(loss)(p, targ))
    p = pred0
    l0 = float(loss(p, targ))
    for _ in range(30):
        p = step(p)
    assert float(loss(p, targ)) < 0.5 * l0


def test_bad_input():
    with pytest.raises(ConfigError, match="method"):
        MinkowskiLoss(THR, method="exact")
    with pytest.raises(ConfigError, match="unknown measure"):
        MinkowskiLoss(THR, weights={"volume": 1.0})
    with pytest.raises(ConfigError, match="component"):
        MinkowskiLoss(THR, weights={"components": 1.0})
    with pytest.raises(ConfigError, match="surrogate"):
        MinkowskiLoss(THR, method="surrogate")
    with pytest.raises(ConfigError, match="temperature"):
        MinkowskiLoss(THR, temperature=0.0)
    with pytest.raises(ConfigError, match="increasing"):
        MinkowskiLoss(THR[::-1])
    with pytest.raises(ConfigError, match="transform"):
        MinkowskiLoss(THR, transform="sqrt")
    loss = MinkowskiLoss(THR)
    with pytest.raises(DataError, match="shape"):
        loss(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(DataError, match="2 dimensions"):
        loss(np.zeros(4), np.zeros(4))

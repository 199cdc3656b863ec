"""The super-resolution U-Net: shapes, the nearest-neighbour start, jit/vmap/grad, the one weights format, and a
tiny end-to-end training through fit that lowers the MSE on held-out synthetic patches."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.data.patches import PatchSampler, block_average, upsample_nearest
from nemic.nn.registry import module_spec, registered_kinds
from nemic.nn.unet import SuperResolutionUNet
from nemic.train.checkpoint import load_module, save_module
from nemic.train.loop import fit


@eqx.filter_jit
def call(model, x):
    return model(x)


def small(key=0, **kw):
    cfg = dict(factor=2, width=8, depth=2)  # one configuration: its init compiles once
    cfg.update(kw)
    return SuperResolutionUNet(**cfg, key=jax.random.key(key))


def rain_patches(n, size=32, seed=0):
    """Smooth synthetic rain cells (mm/h) with the drizzle floor applied."""
    rng = np.random.default_rng(seed)
    y, x = np.indices((size, size))
    out = np.zeros((n, size, size))
    for k in range(n):
        for _ in range(3):
            cy, cx = rng.uniform(0, size, 2)
            out[k] += rng.uniform(1, 8) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(2, 5) ** 2))
    return np.where(out < 0.1, 0.0, out)


def test_shapes_and_nearest_neighbour_start():
    net = small()
    c = jnp.asarray(np.random.default_rng(0).gamma(1.0, 1.0, (1, 16, 16)))
    y = call(net, c)
    assert y.shape == (1, 32, 32)
    # the zero-initialised output layer makes the untrained network exactly nearest-neighbour upsampling
    np.testing.assert_array_equal(y, upsample_nearest(c, 2))
    assert eqx.filter_jit(lambda m, x: m.upscale(x))(net, jnp.ones((2, 3, 16, 16))).shape == (2, 3, 32, 32)


@pytest.mark.slow  # a second configuration: its weight initialisation and compilation take ~10 s on 2 busy cores
def test_multichannel_shapes():
    multi = SuperResolutionUNet(in_channels=3, out_channels=2, factor=2, width=8, depth=1, residual=False,
                                key=jax.random.key(1))
    assert call(multi, jnp.ones((3, 8, 12))).shape == (2, 16, 24)


def test_jit_vmap_grad():
    net = small()
    batch = jnp.asarray(rain_patches(3))
    coarse = block_average(batch, 2)[:, None]
    out = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(net, coarse)
    assert out.shape == (3, 1, 32, 32)

    def loss(model):
        return jnp.mean((jax.vmap(model)(coarse)[:, 0] - batch) ** 2)

    g = eqx.filter_jit(eqx.filter_grad(loss))(net)
    leaves = jax.tree_util.tree_leaves(eqx.filter(g, eqx.is_inexact_array))
    assert all(np.all(np.isfinite(v)) for v in leaves)
    assert float(jnp.max(jnp.abs(g.out.weight))) > 0  # the zero output layer still gets a gradient


def test_saves_and_loads_in_the_one_weights_format(tmp_path):
    assert "SuperResolutionUNet" in registered_kinds()
    assert module_spec("SuperResolutionUNet").cls is SuperResolutionUNet
    net = small(key=2, activation_name="silu", residual=False)
    path = save_module(tmp_path / "unet", net)
    back = load_module(path, kind="SuperResolutionUNet")
    assert back.config() == net.config()
    x = jnp.ones((1, 16, 16))
    np.testing.assert_array_equal(call(back, x), call(net, x))


def test_errors_are_one_line():
    with pytest.raises(ConfigError, match="width must be an integer"):
        small(width=0)
    with pytest.raises(ConfigError, match="unknown activation"):
        small(activation_name="swishy")
    with pytest.raises(DataError, match="not divisible by 2\\*\\*depth"):
        small()(jnp.ones((1, 5, 5)))
    with pytest.raises(DataError, match="expects"):
        small()(jnp.ones((8, 8)))


def test_tiny_training_with_fit_lowers_the_mse():
    train = rain_patches(24, seed=1)
    test = jnp.asarray(rain_patches(8, seed=2))
    test_coarse = block_average(test, 2)
    net = small(key=3)
    sampler = PatchSampler(train, factor=2, batch_size=8)

    def mse(model, batch, key):
        return jnp.mean((model.upscale(batch["coarse"]) - batch["fine"]) ** 2)

    test_mse = eqx.filter_jit(lambda m: jnp.mean((m.upscale(test_coarse) - test) ** 2))
    before = float(test_mse(net))
    res = fit(net, mse, sampler, optimizer=optax.adam(3e-3), n_iters=60, key=jax.random.key(0), progress=False)
    after = float(test_mse(res.model))
    assert np.mean(res.history[-10:]) < np.mean(res.history[:10])
    assert after < 0.8 * before, (before, after)

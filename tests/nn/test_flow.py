"""The conditional flow-matching model: transforms, shapes, non-negative samples, jit/grad of its loss, the
fixed-step ODE solvers against the exact flow of a known velocity field, and the one weights format."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.nn.flow import ConditionalFlow, integrate_flow
from nemic.train.checkpoint import load_module, save_module
from nemic.train.downscaling_losses import flow_matching_loss

FACTOR = 4


def tiny(key=0):
    return ConditionalFlow(FACTOR, width=4, depth=2, latent_scale=0.5, n_steps=3, key=jax.random.key(key))


def batch(n=2, seed=0):
    rng = np.random.default_rng(seed)
    fine = rng.gamma(0.6, 2.0, (n, 16, 16))
    fine = np.where(fine < 0.1, 0.0, fine)
    coarse = fine.reshape(n, 4, FACTOR, 4, FACTOR).mean(axis=(2, 4))
    return {"coarse": jnp.asarray(coarse), "fine": jnp.asarray(fine)}


def constant_velocity(model, value):
    """The same model whose U-Net returns ``value`` everywhere (zero output weights, bias = value)."""
    out = model.net.out
    return eqx.tree_at(lambda m: (m.net.out.weight, m.net.out.bias), model,
                       (jnp.zeros_like(out.weight), jnp.full_like(out.bias, value)))


def test_latent_transform_round_trip_and_non_negative():
    m, b = tiny(), batch()
    z = m.to_latent(b["fine"], b["coarse"])
    # log(1 + R) - log(1 + upsampled coarse), divided by the scale: computed here with numpy
    up = np.repeat(np.repeat(np.asarray(b["coarse"]), FACTOR, -2), FACTOR, -1)
    np.testing.assert_allclose(z, (np.log1p(b["fine"]) - np.log1p(up)) / 0.5, rtol=1e-12)
    np.testing.assert_allclose(m.from_latent(z, b["coarse"]), b["fine"], rtol=1e-10, atol=1e-12)
    # any latent value maps to a rain rate >= 0
    assert float(jnp.min(m.from_latent(-50.0 * jnp.ones_like(z), b["coarse"]))) == 0.0


def test_shapes_sampling_and_determinism():
    m, b = tiny(), batch()
    sample = eqx.filter_jit(lambda m, c, k: m.sample_batch(c, k, 3))
    ens = sample(m, b["coarse"], jax.random.key(1))
    assert ens.shape == (3, 2, 16, 16)
    assert bool(jnp.all(ens >= 0)) and bool(jnp.all(jnp.isfinite(ens)))
    np.testing.assert_array_equal(ens, sample(m, b["coarse"], jax.random.key(1)))
    assert not np.allclose(ens[0], ens[1])  # members differ
    with pytest.raises(DataError):
        m.velocity(jnp.zeros((16, 16)), 0.5, jnp.zeros((5, 4)))
    with pytest.raises(ConfigError):
        ConditionalFlow(4, solver="rk45", key=jax.random.key(0))


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_solver_against_the_exact_flow_of_a_constant_velocity(solver):
    # with v = c the flow is x(1) = x(0) + c exactly; both fixed-step schemes integrate constants exactly
    m = constant_velocity(tiny(), 0.7)
    b = batch(1)
    key = jax.random.key(3)
    got = m.sample(b["coarse"][0], key, n_steps=4, solver=solver)
    x0 = jax.random.normal(key, (16, 16), dtype=got.dtype)
    up = np.repeat(np.repeat(np.asarray(b["coarse"][0]), FACTOR, -2), FACTOR, -1)
    want = np.expm1(np.maximum(np.log1p(up) + 0.5 * (np.asarray(x0) + 0.7), 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_flow_matching_loss_jit_grad_and_value_of_a_zero_field():
    m, b = tiny(), batch(4)
    loss = flow_matching_loss()
    value, aux = eqx.filter_jit(loss)(m, b, jax.random.key(0))
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: loss(m, b, jax.random.key(0))[0]))(m)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(g**2)) for g in leaves) > 0
    # with v = 0 the loss is mean((x1 - x0)^2) = mean(x1^2) + 1 in expectation (x0 standard normal, independent)
    zero = constant_velocity(m, 0.0)
    x1 = np.asarray(zero.to_latent(b["fine"], b["coarse"]))
    vals = [float(loss(zero, b, jax.random.key(k))[0]) for k in range(4)]
    assert abs(np.mean(vals) - (np.mean(x1**2) + 1.0)) < 0.1 * (np.mean(x1**2) + 1.0)


def test_save_load_round_trip(tmp_path):
    m = tiny(5)
    p = save_module(tmp_path / "flow.eqx", m)
    back = load_module(p, kind="ConditionalFlow")
    assert back.config() == m.config()
    c = batch(1)["coarse"][0]
    np.testing.assert_array_equal(back.sample(c, jax.random.key(0)), m.sample(c, jax.random.key(0)))


def test_noise_scale_multiplies_the_starting_noise_and_survives_save_load(tmp_path):
    # with v = c, x(1) = sigma x(0) + c: the rain of the sampler with noise scale sigma, computed with numpy
    m = constant_velocity(tiny(), 0.3).with_noise_scale(1.7)
    assert m.noise_scale == 1.7 and m.config()["noise_scale"] == 1.7
    b = batch(1)
    key = jax.random.key(4)
    got = m.sample(b["coarse"][0], key, n_steps=1)
    x0 = np.asarray(jax.random.normal(key, (16, 16), dtype=got.dtype))
    up = np.repeat(np.repeat(np.asarray(b["coarse"][0]), FACTOR, -2), FACTOR, -1)
    want = np.expm1(np.maximum(np.log1p(up) + 0.5 * (1.7 * x0 + 0.3), 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    back = load_module(save_module(tmp_path / "f.eqx", m), kind="ConditionalFlow")
    assert back.noise_scale == 1.7 and back.config() == m.config()
    with pytest.raises(ConfigError):
        tiny().with_noise_scale(0.0)


def gaussian_velocity(m, s):
    """The exact flow-matching velocity E[x1 - x0 | x_t = x] for data x1 ~ N(m, s^2), x0 ~ N(0, 1) (worked out by
    hand: Cov(x1 - x0, x_t) = t s^2 - (1 - t), Var(x_t) = (1 - t)^2 + t^2 s^2)."""
    return lambda x, t: m + (t * s**2 - (1.0 - t)) / ((1.0 - t) ** 2 + t**2 * s**2) * (x - t * m)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_stochastic_sampler_keeps_the_exact_law_of_gaussian_data(solver):
    # with the exact velocity of Gaussian data N(0.7, 0.5^2), the ODE and the SDE of any noise level end in that
    # law at t = 1 (40 000 independent pixels: standard errors 0.0025 on the mean, 0.4 % on the std)
    m, s = 0.7, 0.5
    x0 = jax.random.normal(jax.random.key(0), (100, 400))
    ode = integrate_flow(gaussian_velocity(m, s), x0, jax.random.key(1), 200, solver, 0.0)
    for eps in (0.5, 3.0):
        x1 = np.asarray(integrate_flow(gaussian_velocity(m, s), x0, jax.random.key(1), 200, solver, eps))
        assert abs(x1.mean() - m) < 0.015
        assert abs(x1.std() / s - 1.0) < 0.025
        # the noise is really injected: the SDE's end points are not those of the ODE from the same start
        assert np.corrcoef(x1.ravel(), np.asarray(ode).ravel())[0, 1] < 0.95
    assert abs(np.asarray(ode).std() / s - 1.0) < 0.025
    # the tolerances catch a wrong scheme: without the score's correction (drift v alone, the same noise of
    # variance integral of 2 eps (1 - t) = eps) the end law is clearly wider
    v, dt, eps = gaussian_velocity(m, s), 1.0 / 200, 0.5

    def naive(x, i):
        t = i * dt
        dw = jax.random.normal(jax.random.fold_in(jax.random.key(1), i.astype(jnp.int32)), x.shape, x.dtype)
        return x + dt * v(x, t) + jnp.sqrt(eps * dt * (2 - 2 * t - dt)) * dw, None

    wrong = np.asarray(jax.lax.scan(naive, x0, jnp.arange(200, dtype=x0.dtype))[0])
    assert wrong.std() / s - 1.0 > 0.1


def test_stochastic_sampler_one_step_by_hand_and_zero_noise_is_the_ode():
    # one Euler-Maruyama step (dt = 1) with v = c: x1 = x0 + (c - eps x0) + sqrt(eps (2 - 1)) dw
    eps, c = 0.4, 0.3
    m = constant_velocity(tiny(), c).with_noise_scale(1.0, eps)
    assert m.sde_noise == eps and m.config()["sde_noise"] == eps
    b = batch(1)
    key = jax.random.key(6)
    got = m.sample(b["coarse"][0], key, n_steps=1)
    x0 = np.asarray(jax.random.normal(key, (16, 16), dtype=got.dtype))
    dw = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 1), 0), (16, 16), dtype=got.dtype))
    up = np.repeat(np.repeat(np.asarray(b["coarse"][0]), FACTOR, -2), FACTOR, -1)
    want = np.expm1(np.maximum(np.log1p(up) + 0.5 * (x0 + c - eps * x0 + np.sqrt(eps) * dw), 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # eps = 0 (default, or given as a traced value) is the ODE sampler exactly
    ode = tiny(2)
    c0 = b["coarse"][0]
    traced = jax.jit(lambda e: ode.sample(c0, key, n_steps=1, sde_noise=e, noise_scale=1.3))(0.0)
    np.testing.assert_allclose(traced, ode.with_noise_scale(1.3).sample(c0, key, n_steps=1), rtol=1e-6, atol=1e-9)
    with pytest.raises(ConfigError):
        tiny().with_noise_scale(1.0, -0.1)

"""Stochastic processes: multiplicative AR(1) statistics, Gaussian random fields against their analytic
covariance and autocorrelation, the stochastic neural closure through jit/vmap/grad, and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import RK4, ConfigError, ForwardEuler, FunctionProcess, ensemble_rollout, rollout
from nemic.models.lorenz96 import Lorenz96, Lorenz96State
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.polynomial import PolynomialClosure
from nemic.processes.stochastic import (GaussianRandomField, MultiplicativeAR1Noise, NoisyStencilMLP,
                                        StochasticNeuralClosure)

zero = FunctionProcess(lambda s, t: jax.tree_util.tree_map(jnp.zeros_like, s))
one = PolynomialClosure(coeffs=jnp.asarray([1.0]))  # U(x) = 1 everywhere


def _increments(process, n_steps, n_vars, key, dt=0.1):
    """With dx/dt = tendency and forward Euler, (x_{n+1} - x_n)/dt is exactly the tendency of step n."""
    traj = rollout(zero + process, ForwardEuler(), Lorenz96State(x=jnp.zeros(n_vars)), dt=dt, n_steps=n_steps,
                   key=key)
    return np.diff(np.asarray(traj.states.x), axis=0) / dt


@pytest.mark.parametrize("sigma, phi", [(0.5, 0.9), (1.5, 0.3)])
def test_multiplicative_ar1_has_the_analytic_variance_and_autocorrelation(sigma, phi):
    e = _increments(MultiplicativeAR1Noise(one, sigma, phi), 3000, 64, jax.random.key(1)) - 1.0  # (1 + e) * 1
    se_var = sigma**2 * np.sqrt(2 * (1 + phi**2) / ((1 - phi**2) * e.size))
    assert abs(e.var() - sigma**2) < 5 * se_var
    r1 = np.mean(e[1:] * e[:-1]) / e.var()
    assert abs(r1 - phi) < 5 * np.sqrt((1 - phi**2) / e.size)


def test_multiplicative_noise_scales_the_closure_and_uniform_is_one_number():
    poly = PolynomialClosure(coeffs=jnp.asarray([0.0, 2.0]))  # U = 2x
    p = MultiplicativeAR1Noise(poly, 0.3, 0.5, uniform=True).bind_noise(jnp.asarray(0.25))
    s = Lorenz96State(x=jnp.arange(4.0))
    np.testing.assert_allclose(p.tendency(s, 0.0).x, 1.25 * 2 * np.arange(4.0))
    e = _increments(MultiplicativeAR1Noise(one, 1.0, 0.5, uniform=True), 20, 8, jax.random.key(0))
    assert np.allclose(e, e[:, :1])  # same value at every site


def test_random_field_stationary_variance_and_spatial_correlation_1d():
    grf = GaussianRandomField((32,), sigma=[0.7, 2.0], length=[1.5, 4.0], tau=1.0, channels=2)
    fields = jax.vmap(grf.sample)(jax.random.split(jax.random.key(0), 4000))  # (4000, 2, 32)
    f = np.asarray(fields)
    sig = np.array([0.7, 2.0])
    np.testing.assert_allclose(f.var(axis=(0, 2)), sig**2, rtol=0.05)
    emp = np.stack([np.mean(f * np.roll(f, -r, axis=2), axis=(0, 2)) for r in range(8)], axis=1) / sig[:, None]**2
    exact = np.asarray(grf.correlation())[:, :8]
    np.testing.assert_allclose(emp, exact, atol=0.03)
    # the periodic Gaussian correlation is close to exp(-r^2 / (2 L^2)) when L << N
    r = np.arange(8)
    np.testing.assert_allclose(exact[0], np.exp(-r**2 / (2 * 1.5**2)), atol=5e-5)


def test_random_field_2d_and_temporal_autocorrelation():
    grf = GaussianRandomField((16, 16), sigma=1.0, length=2.0, tau=0.5)
    dt = 0.1
    phi = float(np.exp(-dt / 0.5))

    def step(e, k):
        e2 = grf.advance(e, k, dt)
        return e2, e2

    _, es = jax.lax.scan(step, grf.sample(jax.random.key(1)), jax.random.split(jax.random.key(2), 1000))
    es = np.asarray(es)[:, 0]  # (T, 16, 16)
    assert abs(es.var() - 1.0) < 0.1
    r1 = np.mean(es[1:] * es[:-1]) / es.var()
    assert abs(r1 - phi) < 0.03
    corr = np.asarray(grf.correlation())[0]
    np.testing.assert_allclose(corr[0, 1], np.exp(-1 / 8), atol=5e-4)
    np.testing.assert_allclose(corr[1, 1], np.exp(-2 / 8), atol=5e-4)


def test_random_field_as_additive_forcing_and_same_key_same_run():
    model = Lorenz96(8.0) + GaussianRandomField((8,), sigma=0.5, length=2.0, tau=0.2, field="x")
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    run = jax.jit(lambda k: rollout(model, RK4(), s0, dt=0.01, n_steps=50, save_every=10, key=k).states.x)
    a, b, c = run(jax.random.key(3)), run(jax.random.key(3)), run(jax.random.key(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[-1], c[-1])


def _closure(key=jax.random.key(0)):
    det = LocalStencilMLP(1, 8, 1, key=key, in_mean=2.0, in_std=3.0, out_scale=0.5)
    net = NoisyStencilMLP.from_deterministic(det, n_noise=2, key=jax.random.key(5))
    return det, StochasticNeuralClosure(net, GaussianRandomField((8,), 1.0, 1.0, 0.1, channels=2))


def test_from_deterministic_equals_the_deterministic_net_without_noise():
    det, clo = _closure()
    x = jnp.linspace(-3, 5, 8)
    np.testing.assert_allclose(clo.net(x, jnp.zeros((2, 8))), det(x), rtol=1e-12)
    assert not np.allclose(clo.net(x, jnp.ones((2, 8))), det(x))
    net0 = NoisyStencilMLP.from_deterministic(det, 2, key=jax.random.key(1), noise_weight=0.0)
    np.testing.assert_allclose(net0(x, jnp.ones((2, 8))), det(x), rtol=1e-12)
    assert net0.mlp.layers[0].in_features == 5


def test_stochastic_closure_ensemble_jit_vmap_grad():
    _, clo = _closure()
    model = Lorenz96(8.0) + clo
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    keys = jax.random.split(jax.random.key(0), 3)
    run = eqx.filter_jit(lambda m: ensemble_rollout(m, RK4(), s0, keys=keys, dt=0.01, n_steps=10).states.x)
    ens = run(model)
    assert ens.shape == (3, 11, 8)
    assert not np.allclose(ens[0, -1], ens[1, -1])
    np.testing.assert_array_equal(ens, run(model))

    @eqx.filter_jit
    def loss(c):
        x = rollout(Lorenz96(8.0) + c, RK4(), s0, dt=0.01, n_steps=10, key=jax.random.key(1)).states.x
        return jnp.mean(x[-1] ** 2)

    g = eqx.filter_jit(eqx.filter_grad(loss))(clo)
    for leaf in (g.noise.log_length, g.noise.log_tau, g.noise.log_sigma, g.net.mlp.layers[0].weight):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
    # gradient of the correlation time against central differences
    eps = 1e-5
    shift = lambda d: eqx.tree_at(lambda c: c.noise.log_tau, clo, clo.noise.log_tau + d)  # noqa: E731
    fd = (loss(shift(jnp.array([eps, 0.0]))) - loss(shift(jnp.array([-eps, 0.0])))) / (2 * eps)
    np.testing.assert_allclose(g.noise.log_tau[0], fd, rtol=1e-4)


@pytest.mark.parametrize("make, msg", [
    (lambda: MultiplicativeAR1Noise(one, -0.1, 0.5), "sigma must be >= 0"),
    (lambda: MultiplicativeAR1Noise(one, 0.1, 1.0), "phi must be in"),
    (lambda: GaussianRandomField((8,), sigma=1.0, length=1.0, tau=-1.0), "correlation time tau must be > 0"),
    (lambda: GaussianRandomField((8,), sigma=-1.0), "sigma must be > 0"),
    (lambda: GaussianRandomField((8,), length=0.0), "correlation length must be > 0"),
    (lambda: GaussianRandomField((8, 8, 8)), "grid must be"),
    (lambda: GaussianRandomField((8,), channels=2, field="x"), "channels=1"),
])
def test_bad_settings_are_one_line_errors(make, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        make()
    assert "\n" not in str(e.value)


def test_missing_key_is_an_error():
    _, clo = _closure()
    with pytest.raises(ConfigError, match="key"):
        rollout(Lorenz96(8.0) + clo, RK4(), Lorenz96State(x=jnp.ones(8)), dt=0.01, n_steps=2)

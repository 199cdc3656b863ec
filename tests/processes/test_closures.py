"""NeuralTendency, LocalStencilMLP and the polynomial closure."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nemic.core import AB3, RK4, ConfigError, DataError, Sum, rollout
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96State
from nemic.nn.mlp import LocalStencilMLP, zero_last_layer
from nemic.processes.neural import NeuralTendency
from nemic.processes.polynomial import PolynomialClosure


def test_zero_initialised_correction_reproduces_physics_bit_for_bit():
    physics = Lorenz96(F=20.0)
    net = LocalStencilMLP(2, 16, 2, key=jax.random.PRNGKey(0), in_mean=3.0, in_std=5.0, out_scale=4.0,
                          zero_init=True)
    hybrid = physics + NeuralTendency(net, "x")
    assert isinstance(hybrid, Sum)
    s0 = physics.initial_state(jax.random.PRNGKey(1), K=8)
    # the tendencies are identical bit for bit
    np.testing.assert_array_equal(physics.tendency(s0, 0.0).x, hybrid.tendency(s0, 0.0).x)
    # and so is a whole RK4 run (the quickstart's stepper) of 2,000 steps of a chaotic model
    a = rollout(physics, RK4(), s0, dt=0.005, n_steps=2000, save_every=10)
    b = rollout(hybrid, RK4(), s0, dt=0.005, n_steps=2000, save_every=10)
    np.testing.assert_array_equal(np.asarray(a.states.x), np.asarray(b.states.x))
    # AB3: XLA may contract multiply-adds into FMAs differently in the two programs (see NeuralTendency's
    # docs); the runs agree to round-off before chaos amplifies the last-bit differences
    a = rollout(physics, AB3(), s0, dt=0.005, n_steps=100, save_every=10)
    b = rollout(hybrid, AB3(), s0, dt=0.005, n_steps=100, save_every=10)
    np.testing.assert_allclose(np.asarray(a.states.x), np.asarray(b.states.x), rtol=1e-12)
    # and the non-zero network does change the run (the comparison above can fail)
    live = physics + NeuralTendency(LocalStencilMLP(2, 16, 2, key=jax.random.PRNGKey(0)), "x")
    c = rollout(live, RK4(), s0, dt=0.005, n_steps=200)
    assert not np.array_equal(np.asarray(c.final.x), np.asarray(rollout(physics, RK4(), s0, dt=0.005,
                                                                         n_steps=200).final.x))


def test_local_stencil_mlp_is_translation_equivariant_and_local():
    net = LocalStencilMLP(2, 8, 2, key=jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (12,))
    for shift in (1, 3, 7):
        np.testing.assert_allclose(net(jnp.roll(x, shift)), jnp.roll(net(x), shift), rtol=1e-12)
    # locality: perturbing x_0 only changes outputs k in {-2..2}
    jac = jax.jacfwd(net)(x)
    nonzero = np.nonzero(np.abs(np.asarray(jac[:, 0])) > 0)[0]
    assert set(nonzero.tolist()) <= {10, 11, 0, 1, 2}
    assert net(jnp.ones((3, 12))).shape == (3, 12)


def test_zero_last_layer_gives_exact_zero():
    mlp = zero_last_layer(eqx.nn.MLP(3, 2, 8, 2, key=jax.random.PRNGKey(0)))
    assert np.all(np.asarray(mlp(jnp.ones(3))) == 0.0)


def test_neural_tendency_only_touches_its_fields_and_checks_names():
    net = lambda x: 2.0 * x  # noqa: E731
    s = TwoScaleLorenz96State(x=jnp.ones(4), y=jnp.ones((4, 3)))
    d = NeuralTendency(net, "x").tendency(s, 0.0)
    np.testing.assert_array_equal(d.x, 2.0)
    np.testing.assert_array_equal(d.y, 0.0)
    with pytest.raises(ConfigError, match="'z' is not a field"):
        NeuralTendency(net, "z").tendency(s, 0.0)
    with pytest.raises(ConfigError, match="shape"):
        NeuralTendency(lambda x: x[:2], "x").tendency(s, 0.0)


def test_check_grads_neural_tendency_wrt_state_and_weights():
    net = LocalStencilMLP(1, 6, 1, key=jax.random.PRNGKey(2), activation_name="tanh")
    proc = NeuralTendency(net, "x")
    x = jax.random.normal(jax.random.PRNGKey(3), (6,))
    check_grads(lambda x: proc.tendency(Lorenz96State(x=x), 0.0).x, (x,), order=2)
    w = net.mlp.layers[0].weight
    check_grads(lambda w: NeuralTendency(eqx.tree_at(lambda n: n.mlp.layers[0].weight, net, w), "x")
                .tendency(Lorenz96State(x=x), 0.0).x, (w,), order=1)


def test_polynomial_fit_recovers_known_coefficients_and_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-8, 14, 5000)
    true = np.array([0.3, -0.8, 0.05, -0.002, 1e-4])
    u = np.polynomial.polynomial.polyval(x, true)
    closure = PolynomialClosure.fit(x, u, degree=4)
    np.testing.assert_allclose(closure.coeffs, true, rtol=1e-6, atol=1e-9)
    noisy = u + rng.normal(0, 0.5, x.size)
    ref = np.polynomial.polynomial.polyfit(x, noisy, 4)
    np.testing.assert_allclose(PolynomialClosure.fit(x, noisy).coeffs, ref, rtol=1e-6, atol=1e-9)
    d = closure.tendency(Lorenz96State(x=jnp.asarray([1.0, 2.0, 3.0, 4.0])), 0.0).x
    np.testing.assert_allclose(d, np.polynomial.polynomial.polyval([1.0, 2.0, 3.0, 4.0], true), rtol=1e-6)
    g = jax.grad(lambda c: PolynomialClosure(c)(jnp.asarray(2.0)))(jnp.asarray(true))
    np.testing.assert_allclose(g, 2.0 ** np.arange(5))


def test_polynomial_fit_bad_data():
    with pytest.raises(DataError, match="same number"):
        PolynomialClosure.fit(np.ones(5), np.ones(4))
    with pytest.raises(DataError, match="finite"):
        PolynomialClosure.fit(np.array([1.0, np.nan, 2, 3, 4, 5]), np.ones(6))
    with pytest.raises(ConfigError, match="degree"):
        PolynomialClosure.fit(np.arange(3.0), np.ones(3), degree=4)

"""Column physics in the atmosphere: analytic tendencies (fast), a zero network reproduces the bare core, gradients
through a short hybrid rollout agree with finite differences, jit/vmap/grad through the public objects."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nemic.core import ConfigError, rollout
from nemic.models.atmosphere import (
    ColumnPhysics,
    ColumnTendencies,
    HeldSuarez,
    PackedColumnFunction,
    PrimitiveEquations,
    insolation_field,
)
from nemic.models.ebm.insolation import annual_mean_insolation

OMEGA = 7.292e-5
RADIUS = 6.37122e6


@pytest.fixture(scope="module")
def model():
    return PrimitiveEquations()


def _uniform(heating, du_over_coslat):
    """Column physics with uniform heating [K/s] and a wind tendency du = du_over_coslat * cos(lat) [m/s2]."""

    def fn(c):
        one = jnp.ones_like(c.temperature)
        du = du_over_coslat * jnp.cos(jnp.deg2rad(c.latitude)) * one
        return ColumnTendencies(heating * one, 0.0 * one, du, 0.0 * one, jnp.asarray(1e-5))

    return fn


def test_column_tendencies_match_analytic_fields(model):
    g = model.grid
    s = model.initial_state(surface_humidity=0.01)
    cp = ColumnPhysics(g, _uniform(1e-5, 1e-4))
    tend = jax.jit(cp.tendency)(s, 0.0)
    # uniform heating: the temperature tendency is 1e-5 K/s everywhere (state units: K per second)
    np.testing.assert_allclose(g.to_nodal(tend.temperature_variation), 1e-5, atol=1e-15)
    # du = A cos(lat): vorticity tendency 2 A sin(lat) / a [s-2], in units of 2 Omega per second
    lat = np.deg2rad(g.lat)[None, :, None]
    np.testing.assert_allclose(g.to_nodal(tend.vorticity) * 2 * OMEGA,
                               np.broadcast_to(2e-4 * np.sin(lat) / RADIUS, g.nodal_shape), atol=1e-20)
    np.testing.assert_allclose(g.to_nodal(tend.divergence), 0.0, atol=1e-16)
    np.testing.assert_array_equal(tend.log_surface_pressure, 0.0)
    f = jax.jit(cp.observe)(s, 0.0)
    np.testing.assert_allclose(f.precipitation_flux, 1e-5)
    # insolation given to the columns: the EBM's annual mean (Berger 1978) at the Gaussian latitudes
    np.testing.assert_allclose(insolation_field(g, 0.0)[:, 0], annual_mean_insolation(jnp.asarray(g.lat)))


def _zero_mlp(levels, key):
    mlp = eqx.nn.MLP(4 * levels + 3, 4 * levels + 1, 16, 2, key=key)
    last = mlp.layers[-1]
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                       (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))


class _Net(eqx.Module):
    mlp: eqx.nn.MLP
    levels: int = eqx.field(static=True)

    def __call__(self, c):
        x = jnp.concatenate([c.temperature / 300.0, c.specific_humidity * 100.0, c.eastward_wind / 10.0,
                             c.northward_wind / 10.0,
                             jnp.stack([c.surface_pressure / 1e5, c.insolation / 400.0, c.latitude / 90.0])])
        y = self.mlp(x)
        L = self.levels
        return ColumnTendencies(y[:L] * 1e-5, y[L:2 * L] * 1e-8, y[2 * L:3 * L] * 1e-5, y[3 * L:4 * L] * 1e-5,
                                jax.nn.softplus(y[-1]) * 1e-5)


def test_zero_network_tendency_is_the_bare_core_bit_for_bit(model):
    s = model.initial_state(jax.random.key(0), perturbation=5e3, surface_humidity=0.01)
    hybrid = model + ColumnPhysics(model.grid, _Net(_zero_mlp(8, jax.random.key(1)), 8))
    # the explicit parts (the implicit part is the same object): core + zero network vs core, each jitted
    a = eqx.filter_jit(lambda p, s: p.explicit.tendency(s, 0.0))(hybrid, s)
    b = eqx.filter_jit(lambda p, s: p.explicit.tendency(s, 0.0))(model, s)
    assert hybrid.implicit is model.implicit
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_network_for_other_levels_is_a_one_line_error(model):
    s = model.initial_state()
    cp = ColumnPhysics(model.grid, lambda c: ColumnTendencies(jnp.zeros(5), jnp.zeros(5), jnp.zeros(5),
                                                              jnp.zeros(5), jnp.zeros(())))
    with pytest.raises(ConfigError, match="another number of levels"):
        cp.tendency(s, 0.0)


def test_zero_network_rollout_reproduces_the_bare_core(model):
    s = model.initial_state(jax.random.key(0), perturbation=5e3, surface_humidity=0.01)
    hs = HeldSuarez(model.grid)
    hybrid = model + hs + ColumnPhysics(model.grid, _Net(_zero_mlp(8, jax.random.key(1)), 8))
    run = lambda p, s: rollout(p, model.default_stepper(), s, dt=model.dt, n_steps=24, save_every=24)
    a = eqx.filter_jit(run)(hybrid, s).states
    b = eqx.filter_jit(run)(model + hs, s).states
    # x + 0 is exact, so the explicit tendencies are bit for bit (test above); the two jitted whole-step programs
    # may differ in the last bit because XLA fuses and orders the larger program's reductions differently
    # (measured: 4e-22 in a divergence tendency of the full explicit + implicit sum)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert float(jnp.max(jnp.abs(x - y))) <= 1e-12 * float(jnp.max(jnp.abs(y)))


def test_check_grads_through_a_short_hybrid_rollout(model):
    g = model.grid
    s0 = model.initial_state(jax.random.key(2), perturbation=5e3, surface_humidity=0.01)

    def loss(w):
        def fn(c):
            x = (c.temperature - 250.0) / 50.0
            return ColumnTendencies(-1e-5 * w[0] * x, 1e-9 * w[1] * x, -1e-5 * w[2] * c.eastward_wind / 10.0,
                                    jnp.zeros_like(x), jnp.asarray(0.0))

        p = model + HeldSuarez(g) + ColumnPhysics(g, fn)
        traj = rollout(p, model.default_stepper(), s0, dt=model.dt, n_steps=3, save_every=3)
        f = model.observe(jax.tree_util.tree_map(lambda x: x[-1], traj.states))
        return jnp.mean(f.air_temperature ** 2) / 1e4 + jnp.mean(f.eastward_wind ** 2) + jnp.mean(
            f.specific_humidity) * 1e3

    w = jnp.array([0.7, -0.4, 1.3])
    check_grads(jax.jit(loss), (w,), order=1, modes=("rev",), eps=1e-3, atol=1e-7, rtol=1e-5)


def test_jit_vmap_grad_through_the_public_objects(model):
    g = model.grid
    keys = jax.random.split(jax.random.key(5), 2)
    states = jax.vmap(lambda k: model.initial_state(k, perturbation=5e3))(keys)
    stepper = model.default_stepper()

    def run(hs, s):
        return rollout(model + hs, stepper, s, dt=model.dt, n_steps=2, save_every=2).states

    hs = HeldSuarez(g)
    batched = eqx.filter_jit(jax.vmap(run, in_axes=(None, 0)))(hs, states)
    single = eqx.filter_jit(run)(hs, jax.tree_util.tree_map(lambda x: x[1], states))
    for x, y in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single)):
        np.testing.assert_allclose(x[1], y, rtol=1e-12, atol=1e-14 * float(jnp.max(jnp.abs(y))))

    def loss(kf):
        s = run(eqx.tree_at(lambda h: h.kf, hs, kf), jax.tree_util.tree_map(lambda x: x[0], states))
        u = model.observe(jax.tree_util.tree_map(lambda x: x[-1], s)).eastward_wind
        return jnp.mean(u ** 2)

    grad = eqx.filter_jit(jax.grad(loss))(hs.kf)
    assert np.isfinite(float(grad)) and float(grad) != 0.0


def test_packed_column_adapter_unpacks_in_order(model):
    g = model.grid
    s = model.initial_state(temperature=270.0, surface_humidity=0.01)
    L = g.layers

    def net(x):  # dT/dt = 1e-6 * T, dq/dt = q, du/dt = 0, dv/dt = sin(lat) * 1e-6, P = p_s * 1e-10, E = insolation
        T, q, sinlat = x[:L], x[L:2 * L], x[-1]
        return jnp.concatenate([1e-6 * T, q, jnp.zeros(L), jnp.full(L, 1e-6) * sinlat,
                                jnp.stack([x[4 * L] * 1e-10, x[4 * L + 1]])])

    cp = ColumnPhysics(g, PackedColumnFunction(net, L))
    _, out = jax.jit(cp.columns)(s, 0.0)
    np.testing.assert_allclose(out.temperature, 270e-6, rtol=1e-12)
    np.testing.assert_allclose(out.specific_humidity[0], 0.01 * g.sigma ** 3, rtol=1e-9, atol=1e-15)
    lat = np.broadcast_to(np.deg2rad(g.lat)[:, None], (32, 64)).reshape(-1)
    np.testing.assert_allclose(out.northward_wind[:, 0], 1e-6 * np.sin(lat), atol=1e-18)
    np.testing.assert_allclose(out.precipitation, 1e-5, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(out.evaporation).reshape(32, 64)[:, 0], annual_mean_insolation(jnp.asarray(g.lat)), rtol=1e-12)

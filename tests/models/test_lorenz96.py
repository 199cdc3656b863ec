"""Lorenz-96: against scipy's solve_ivp, invariants, gradients, transformations and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.integrate import solve_ivp

from nemic.core import RK4, ConfigError, DataError, rollout
from nemic.models.lorenz96 import (Lorenz96, Lorenz96State, TwoScaleLorenz96, TwoScaleLorenz96State,
                                   advection_tendency)


def numpy_two_scale(t, z, K, J, h, b, c, F):
    """Independent plain-numpy right-hand side written from Wilks (2005), eqs. (1)-(2), index by index."""
    X, Y = z[:K], z[K:]
    dX = np.empty(K)
    dY = np.empty(K * J)
    for k in range(K):
        dX[k] = -X[k - 1] * (X[k - 2] - X[(k + 1) % K]) - X[k] + F - h * c / b * Y[k * J:(k + 1) * J].sum()
    n = K * J
    for i in range(n):
        k = i // J
        dY[i] = -c * b * Y[(i + 1) % n] * (Y[(i + 2) % n] - Y[i - 1]) - c * Y[i] + h * c / b * X[k]
    return np.concatenate([dX, dY])


def test_two_scale_against_solve_ivp():
    K, J = 5, 4
    pars = dict(h=1.0, b=10.0, c=10.0, F=20.0)
    model = TwoScaleLorenz96(**pars)
    s0 = model.initial_state(jax.random.PRNGKey(1), K=K, J=J)
    T = 0.2  # short: the fast scales amplify any difference quickly
    z0 = np.concatenate([np.asarray(s0.x), np.asarray(s0.y).ravel()])
    ref = solve_ivp(numpy_two_scale, (0, T), z0, args=(K, J, *pars.values()), rtol=1e-12, atol=1e-12,
                    method="DOP853").y[:, -1]
    errs = []
    for dt in (2e-4, 1e-4):
        n = int(round(T / dt))
        fin = rollout(model, RK4(), s0, dt=dt, n_steps=n, save_every=n).final
        errs.append(np.abs(np.concatenate([np.asarray(fin.x), np.asarray(fin.y).ravel()]) - ref).max())
    assert errs[1] < 5e-6
    assert 10 < errs[0] / errs[1] < 24  # RK4 converges to the reference at fourth order (ratio 16)


def test_one_scale_against_solve_ivp():
    model = Lorenz96(F=8.0)
    s0 = model.initial_state(jax.random.PRNGKey(0), K=10)
    f = lambda t, x: np.array([-x[k - 1] * (x[k - 2] - x[(k + 1) % 10]) - x[k] + 8.0 for k in range(10)])  # noqa
    ref = solve_ivp(f, (0, 2.0), np.asarray(s0.x), rtol=1e-12, atol=1e-12, method="DOP853")
    errs = [np.abs(np.asarray(rollout(model, RK4(), s0, dt=2.0 / n, n_steps=n, save_every=n).final.x)
                   - ref.y[:, -1]).max() for n in (1000, 2000)]
    assert errs[1] < 1e-5
    assert 12 < errs[0] / errs[1] < 20  # fourth-order convergence to the reference


def test_advection_conserves_energy():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 36))
    # instantaneous: <x, adv(x)> = 0 to round-off, for every member of a batch
    np.testing.assert_allclose(jnp.sum(x * advection_tendency(x), axis=-1), 0.0, atol=1e-12)
    # integrated: the advection term alone keeps sum X^2 over many RK4 steps (error ~ dt^4)
    from nemic.core import FunctionProcess

    adv = FunctionProcess(lambda s, t: advection_tendency(s))
    tr = rollout(adv, RK4(), x[0], dt=1e-3, n_steps=5000, save_every=500)
    e = jnp.sum(tr.states ** 2, axis=-1)
    np.testing.assert_allclose(e, e[0], rtol=1e-9)


def test_subgrid_tendency_definition():
    model = TwoScaleLorenz96()
    s = model.initial_state(jax.random.PRNGKey(3), K=8, J=32)
    u = model.subgrid_tendency(s)
    np.testing.assert_allclose(u, -1.0 * 10 / 10 * np.asarray(s.y).sum(-1))
    assert model.tendency(s, 0.0).y.shape == (8, 32)


def test_check_grads_tendencies_and_rollout():
    m2 = TwoScaleLorenz96(h=1.0, b=10.0, c=10.0, F=20.0)
    s = m2.initial_state(jax.random.PRNGKey(0), K=4, J=3)
    check_grads(jax.jit(lambda x, y: m2.tendency(TwoScaleLorenz96State(x=x, y=y), 0.0).x), (s.x, s.y), order=2,
                modes=["fwd", "rev"])
    check_grads(lambda h, c, F: eqx.tree_at(lambda m: (m.h, m.c, m.F), m2, (h, c, F)).tendency(s, 0.0).y,
                (m2.h, m2.c, m2.F), order=1)
    m1 = Lorenz96(F=8.0)

    @jax.jit  # check_grads evaluates many times; compile once
    def short(x, F):
        m = eqx.tree_at(lambda m: m.F, m1, F)
        return rollout(m, RK4(), Lorenz96State(x=x), dt=0.01, n_steps=10).states.x

    check_grads(short, (8.0 + jnp.sin(jnp.arange(6.0)), jnp.asarray(8.0)), order=1, modes=["fwd", "rev"])


def test_jit_vmap_grad_through_models():
    model = TwoScaleLorenz96()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states = jax.vmap(lambda k: model.initial_state(k, K=8, J=4))(keys)

    @jax.jit
    def final_mean_x(F, s):
        m = eqx.tree_at(lambda m: m.F, model, F)
        return rollout(m, RK4(), s, dt=0.001, n_steps=50).final.x.mean()

    vals = jax.vmap(final_mean_x, in_axes=(None, 0))(jnp.asarray(20.0), states)
    assert vals.shape == (3,)
    g = jax.vmap(jax.grad(final_mean_x), in_axes=(None, 0))(jnp.asarray(20.0), states)
    # d<X>/dF over a short time ~ t (forcing accumulates linearly at first)
    assert np.all((np.asarray(g) > 0.02) & (np.asarray(g) < 0.06))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="K"):
        Lorenz96().initial_state(jax.random.PRNGKey(0), K=3)
    with pytest.raises(ConfigError, match="K"):
        TwoScaleLorenz96().initial_state(jax.random.PRNGKey(0), K=2, J=32)
    with pytest.raises(ConfigError, match="K"):
        Lorenz96().check_state(Lorenz96State(x=jnp.ones(3)))
    with pytest.raises(DataError, match="NaN"):
        Lorenz96().check_state(Lorenz96State(x=jnp.asarray([1.0, 2.0, jnp.nan, 4.0, 5.0])))
    with pytest.raises(DataError, match="NaN"):
        rollout(Lorenz96(), RK4(), Lorenz96State(x=jnp.asarray([1.0, 2.0, jnp.nan, 4.0])), dt=0.01, n_steps=2)
    with pytest.raises(ConfigError, match="dt"):
        rollout(Lorenz96(), RK4(), Lorenz96State(x=jnp.ones(8)), dt=-0.01, n_steps=2)
    with pytest.raises(ConfigError, match="finite"):
        TwoScaleLorenz96(F=float("nan"))
    with pytest.raises(ConfigError, match="b"):
        TwoScaleLorenz96(b=0.0)
    with pytest.raises(ConfigError, match="shape"):
        TwoScaleLorenz96().check_state(TwoScaleLorenz96State(x=jnp.ones(8), y=jnp.ones((7, 4))))

"""Randomness in the Process protocol: AR(1) noise statistics against their analytic values, reproducibility,
key splitting across sums, ensembles with a member axis, and the missing-key error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import (RK4, AR1Noise, ConfigError, ForwardEuler, FunctionProcess, WhiteNoise, ensemble_rollout,
                        rollout, simulate)
from nemic.io import to_xarray
from nemic.models.lorenz96 import Lorenz96, Lorenz96State

zero = FunctionProcess(lambda s, t: jax.tree_util.tree_map(jnp.zeros_like, s))


def _noise_series(sigma, phi, n_steps, n_vars, key, dt=0.1):
    """With dx/dt = e and forward Euler, the increments (x_{n+1} - x_n)/dt are exactly the noise e_n."""
    traj = rollout(zero + AR1Noise(sigma, phi, field="x"), ForwardEuler(), Lorenz96State(x=jnp.zeros(n_vars)),
                   dt=dt, n_steps=n_steps, key=key)
    return np.diff(np.asarray(traj.states.x), axis=0) / dt


@pytest.mark.parametrize("sigma, phi", [(0.7, 0.9), (2.0, 0.3), (1.0, 0.0)])
def test_ar1_variance_and_lag1_autocorrelation(sigma, phi):
    e = _noise_series(sigma, phi, n_steps=4000, n_vars=64, key=jax.random.key(3))  # (4000, 64)
    n_eff = e.size * (1 - phi) / (1 + phi)  # effective sample size of an AR(1) series
    var = e.var()
    # variance of the sample variance of a Gaussian AR(1): ~ 2 sigma^4 / n_eff' with n_eff' = n (1-phi^2)/(1+phi^2)
    se_var = sigma**2 * np.sqrt(2 * (1 + phi**2) / ((1 - phi**2) * e.size))
    assert abs(var - sigma**2) < 5 * se_var, (var, sigma**2, se_var)
    r1 = np.mean((e[1:] * e[:-1])) / var
    se_r1 = np.sqrt((1 - phi**2) / e.size) + 1e-12
    assert abs(r1 - phi) < 5 * se_r1, (r1, phi, se_r1)
    assert n_eff > 1000


def test_white_noise_variance_and_independence():
    traj = rollout(zero + WhiteNoise(1.5, field="x"), ForwardEuler(), Lorenz96State(x=jnp.zeros(64)), dt=0.1,
                   n_steps=2000, key=jax.random.key(0))
    e = np.diff(np.asarray(traj.states.x), axis=0) / 0.1
    assert abs(e.var() - 1.5**2) < 5 * 1.5**2 * np.sqrt(2 / e.size)
    assert abs(np.mean(e[1:] * e[:-1]) / e.var()) < 5 / np.sqrt(e.size)


def test_same_key_same_trajectory_and_segments_do_not_matter():
    model = Lorenz96(8.0) + AR1Noise(0.5, 0.95, field="x")
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    a = rollout(model, RK4(), s0, dt=0.01, n_steps=200, save_every=10, key=jax.random.key(1))
    b = rollout(model, RK4(), s0, dt=0.01, n_steps=200, save_every=10, key=jax.random.key(1))
    c = rollout(model, RK4(), s0, dt=0.01, n_steps=200, save_every=10, key=jax.random.key(2))
    np.testing.assert_array_equal(a.states.x, b.states.x)
    assert not np.allclose(a.states.x[-1], c.states.x[-1])
    d = simulate(model, RK4(), s0, dt=0.01, n_steps=200, save_every=10, key=jax.random.key(1), segments=4)
    np.testing.assert_allclose(a.states.x, d.states.x, rtol=1e-12, atol=1e-12)


def test_deterministic_terms_do_not_change_the_noise():
    """The key is split among stochastic terms only, so adding a deterministic term keeps the noise."""
    s0 = Lorenz96State(x=jnp.zeros(8))
    noise = WhiteNoise(1.0, field="x")
    a = rollout(zero + noise, ForwardEuler(), s0, dt=0.1, n_steps=5, key=jax.random.key(4))
    b = rollout(zero + zero + noise, ForwardEuler(), s0, dt=0.1, n_steps=5, key=jax.random.key(4))
    np.testing.assert_array_equal(a.states.x, b.states.x)


def test_missing_key_is_a_one_line_error():
    s0 = Lorenz96State(x=jnp.zeros(8))
    with pytest.raises(ConfigError, match="stochastic: pass key") as e:
        rollout(Lorenz96(8.0) + AR1Noise(1.0, 0.5), RK4(), s0, dt=0.1, n_steps=2)
    assert "\n" not in str(e.value).split("----")[0].strip()
    with pytest.raises(ConfigError, match="phi"):
        AR1Noise(1.0, 1.0)
    with pytest.raises(ConfigError, match="key must be"):
        rollout(Lorenz96(8.0) + AR1Noise(1.0, 0.5), RK4(), s0, dt=0.1, n_steps=2, key=3)


def test_deterministic_rollout_ignores_key():
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    a = rollout(Lorenz96(8.0), RK4(), s0, dt=0.01, n_steps=50)
    b = rollout(Lorenz96(8.0), RK4(), s0, dt=0.01, n_steps=50, key=jax.random.key(0))
    np.testing.assert_array_equal(a.states.x, b.states.x)


def test_ensemble_member_axis_and_xarray():
    model = Lorenz96(8.0, K=8) + AR1Noise(0.3, 0.9, field="x")
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    keys = jax.random.split(jax.random.key(0), 5)
    ens = ensemble_rollout(model, RK4(), s0, keys=keys, dt=0.01, n_steps=40, save_every=10)
    assert ens.member_axis and ens.n_members == 5
    assert ens.states.x.shape == (5, 5, 8) and ens.t.shape == (5,)
    # member i equals a single rollout with key i
    one = rollout(model, RK4(), s0, dt=0.01, n_steps=40, save_every=10, key=keys[2])
    np.testing.assert_allclose(ens.member(2).states.x, one.states.x, rtol=1e-12)
    ds = to_xarray(ens)
    assert ds["x"].dims == ("member", "time", "k") and list(ds["member"].values) == [0, 1, 2, 3, 4]
    assert ds["member"].attrs["standard_name"] == "realization"
    # members differ (different keys), and the ensemble of initial states works without keys
    assert float(np.std(np.asarray(ens.final.x), axis=0).mean()) > 0
    states = Lorenz96State(x=jnp.stack([s0.x, s0.x + 0.1]))
    det = ensemble_rollout(Lorenz96(8.0), RK4(), states, dt=0.01, n_steps=10)
    assert det.states.x.shape == (2, 11, 8)


def test_observe_saves_derived_fields_and_jit_grad_through_noise():
    model = Lorenz96(8.0) + AR1Noise(0.3, 0.9, field="x")
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    energy = lambda s, t: {"energy": 0.5 * jnp.sum(s.x**2)}  # noqa: E731
    tr = rollout(model, RK4(), s0, dt=0.01, n_steps=20, save_every=5, key=jax.random.key(0), observe=energy)
    full = rollout(model, RK4(), s0, dt=0.01, n_steps=20, save_every=5, key=jax.random.key(0))
    np.testing.assert_allclose(tr.states["energy"], 0.5 * np.sum(np.asarray(full.states.x) ** 2, -1), rtol=1e-12)

    @jax.jit
    def loss(sigma):
        m = Lorenz96(8.0) + AR1Noise(sigma, 0.9, field="x")
        return jnp.mean(rollout(m, RK4(), s0, dt=0.01, n_steps=20, key=jax.random.key(0)).final.x ** 2)

    g = jax.grad(loss)(0.3)
    eps = 1e-6
    fd = (loss(0.3 + eps) - loss(0.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_ensemble_in_chunks_equals_full_vectorisation():
    model = Lorenz96(8.0, K=8) + AR1Noise(0.3, 0.9, field="x")
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))
    keys = jax.random.split(jax.random.key(0), 6)
    full = ensemble_rollout(model, RK4(), s0, keys=keys, dt=0.01, n_steps=20, save_every=10)
    for bs in (4,):
        chunked = ensemble_rollout(model, RK4(), s0, keys=keys, dt=0.01, n_steps=20, save_every=10, batch_size=bs)
        np.testing.assert_allclose(chunked.states.x, full.states.x, rtol=1e-12)
    with pytest.raises(ConfigError, match="batch_size"):
        ensemble_rollout(model, RK4(), s0, keys=keys, dt=0.01, n_steps=20, batch_size=0)

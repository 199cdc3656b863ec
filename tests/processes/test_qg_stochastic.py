"""The multiplicative (SPPT-like) and additive modes of the stochastic QG CNN closure: with the noise at zero they
are the deterministic closure exactly, the mean of their forcing over many noise draws is the deterministic forcing
(within sampling error: the design's analytic property), gradients of an ensemble CRPS reach the random field's
parameters through jit/vmap'ed rollouts, weights round-trip, and bad settings fail in one line."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.rollout import ensemble_rollout
from nemic.errors import ConfigError
from nemic.experiments import qg_stochastic as qs
from nemic.experiments.qg_subgrid import make_cnn_closure
from nemic.metrics.probabilistic import crps_ensemble
from nemic.models.qg import QGState, get_config
from nemic.processes.qg_stochastic import STOCHASTIC_CNN_CLOSURE_KIND, StochasticCNNClosure
from nemic.train.checkpoint import load_module, save_module

NX = 16


@pytest.fixture(scope="module")
def setup():
    lo = get_config("eddy", nx=NX)
    det = make_cnn_closure(np.array([6e-6, 1e-6]), np.array([1e-11, 2e-12]), widths=(4,), kernel_sizes=(3, 3),
                           key=jax.random.key(0))
    k = np.fft.fftfreq(NX) * NX
    smooth = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / 8.0)
    z = np.random.default_rng(3).standard_normal((2, NX, NX))
    q = np.real(np.fft.ifft2(np.fft.fft2(z) * smooth))
    q = q / q.std(axis=(1, 2), keepdims=True) * np.array([6e-6, 1e-6])[:, None, None]
    return lo, det, jnp.asarray(q)


@pytest.mark.parametrize("mode, channels", [("multiplicative", 1), ("multiplicative", 2), ("additive", 1)])
def test_zero_noise_is_deterministic_and_the_mean_over_noise_is_the_deterministic_forcing(setup, mode, channels):
    lo, det, q = setup
    st = StochasticCNNClosure.from_deterministic(det, lo, mode=mode, channels=channels, sigma=0.6, length=1.5,
                                                 key=jax.random.key(1))
    f = np.asarray(det.forcing(q))
    np.testing.assert_array_equal(np.asarray(st.forcing(q, jnp.zeros((channels, NX, NX)))), f)
    np.testing.assert_array_equal(np.asarray(st.deterministic_forcing(q)), f)
    n = 1500
    e = jax.jit(jax.vmap(st.noise.sample))(jax.random.split(jax.random.key(7), n))
    draws = np.asarray(jax.jit(jax.vmap(lambda x: st.forcing(q, x)))(e))
    # each layer's domain mean is kept (the zero-mean CNN conserves mean PV; so does the perturbation)
    np.testing.assert_allclose(draws.mean(axis=(2, 3)), np.broadcast_to(f.mean(axis=(1, 2)), (n, 2)),
                               atol=1e-6 * np.abs(f).max())
    std = draws.std(axis=0)
    assert np.median(std) > 0.1 * np.median(np.abs(f))  # the noise does perturb the forcing
    z = (draws.mean(axis=0) - f) / (std / np.sqrt(n))
    assert np.abs(z).max() < 5.0, np.abs(z).max()  # 512 points: |z| > 5 has probability ~3e-4
    if mode == "multiplicative":  # SPPT's clipping: a field of 10 acts as r = 1, f (1 + 1) - <f>
        big = st.forcing(q, jnp.full((channels, NX, NX), 10.0))
        np.testing.assert_allclose(np.asarray(big), 2 * f - f.mean(axis=(1, 2), keepdims=True), rtol=1e-12,
                                   atol=1e-12 * np.abs(f).max())


def test_jit_vmap_grad_of_the_ensemble_crps_reach_the_random_field(setup):
    lo, det, q = setup
    st = StochasticCNNClosure.from_deterministic(det, lo, mode="multiplicative", sigma=0.5, length=1.5, tau=7200.0,
                                                 key=jax.random.key(1))
    state = QGState.from_q(jnp.stack([q, q]))  # two members from the same state
    target = q * 1.01
    keys = jax.random.split(jax.random.key(5), 2)

    @jax.jit
    def loss(c):
        tr = ensemble_rollout(lo + c, lo.default_stepper(), state, keys=keys, dt=3600.0, n_steps=3, save_every=3)
        scale = jnp.array([6e-6, 1e-6])[:, None, None]
        return jnp.mean(crps_ensemble(tr.states.q[:, -1] / scale, target / scale, fair=True))

    spec = qs.closure_filter(st, train_net=False)
    params, static = eqx.partition(st, spec)
    g = jax.grad(lambda p: loss(eqx.combine(p, static)))(params)
    grads = [g.noise.log_sigma, g.noise.log_length, g.noise.log_tau]
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in grads)
    assert float(jnp.abs(g.noise.log_sigma[0])) > 0
    assert all(x is None for x in jax.tree_util.tree_leaves(g.net))  # the network is frozen
    np.testing.assert_array_equal(np.asarray(loss(st)), np.asarray(loss(st)))  # same keys, same ensemble


def test_weights_round_trip_and_one_line_errors(setup, tmp_path):
    lo, det, q = setup
    st = StochasticCNNClosure.from_deterministic(det, lo, mode="multiplicative", sigma=0.4, length=1.2,
                                                 tau=3 * 86400.0, key=jax.random.key(1))
    back = load_module(save_module(tmp_path / "m.eqx", st), kind=STOCHASTIC_CNN_CLOSURE_KIND)
    assert back.mode == "multiplicative"
    e = st.noise.sample(jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(back.forcing(q, e)), np.asarray(st.forcing(q, e)))
    np.testing.assert_array_equal(np.asarray(back.noise.log_tau), np.asarray(st.noise.log_tau))
    bad = [dict(sigma=-0.5), dict(tau=-3600.0), dict(length=0.0), dict(mode="sppt"), dict(channels=3)]
    for kw in bad:
        with pytest.raises(ConfigError) as err:
            StochasticCNNClosure.from_deterministic(det, lo, key=jax.random.key(1), **{"mode": "multiplicative", **kw})
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="crps_train_net"):
        qs.QGStochasticConfig(closure_mode="input")
    with pytest.raises(ConfigError, match="closure_mode"):
        qs.QGStochasticConfig(closure_mode="sppt")

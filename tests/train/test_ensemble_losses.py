"""CRPS / energy-score training through rollouts: the fair scores of 2-member ensembles recover the amplitude
of the noise that generated the reference; gradients through the ensemble loss; bad settings."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import ConfigError, ForwardEuler, FunctionProcess, WhiteNoise, rollout
from nemic.models.lorenz96 import Lorenz96State
from nemic.train.ensemble_losses import crps_loss, energy_score_loss, ensemble_window_loss, fit_ensemble
from nemic.train.windows import WindowSampler

zero = FunctionProcess(lambda s, t: jax.tree_util.tree_map(jnp.zeros_like, s))
DT = 0.1


def _reference(sigma=1.0, n=400, k=16):
    """A random walk dx/dt = sigma z: the training data of a model whose only unknown is sigma."""
    traj = rollout(zero + WhiteNoise(sigma, field="x"), ForwardEuler(), Lorenz96State(x=jnp.zeros(k)), dt=DT,
                   n_steps=n, key=jax.random.key(42))
    return traj.states


@pytest.mark.parametrize("score", ["crps", pytest.param("energy", marks=pytest.mark.slow)])  # slow: ~20 s
def test_two_member_score_training_recovers_the_noise_amplitude(score):
    ref = _reference()
    res = fit_ensemble(WhiteNoise(0.3, field="x"), lambda p: zero + p, ForwardEuler(), ref, dt=DT,
                       key=jax.random.key(0), n_members=2, score=score, curriculum=((1, 60), (3, 60)),
                       batch_size=16, learning_rate=0.05, progress=False)
    sigma = float(res.model.sigma)
    assert abs(sigma - 1.0) < 0.15, sigma


def test_ensemble_loss_gradient_matches_finite_differences_and_jit_vmap():
    ref = _reference(n=40, k=4)
    windows = WindowSampler(ref, 3, 4)(jax.random.key(1))
    loss = eqx.filter_jit(lambda p, w: ensemble_window_loss(zero + p, ForwardEuler(), w, n_members=3,
                                                            key=jax.random.key(2), dt=DT))
    p = WhiteNoise(0.5, field="x")
    g = eqx.filter_jit(eqx.filter_grad(loss))(p, windows)
    eps = 1e-6
    fd = (loss(WhiteNoise(0.5 + eps, field="x"), windows) - loss(WhiteNoise(0.5 - eps, field="x"), windows)) / (2 * eps)
    np.testing.assert_allclose(g.sigma, fd, rtol=1e-5)
    ens = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)))
    tgt = jnp.zeros((3, 4))
    per_row = jax.vmap(lambda e, t: crps_loss(e, t), in_axes=(1, 0))(ens, tgt)
    np.testing.assert_allclose(jnp.mean(per_row), crps_loss(ens, tgt), rtol=1e-12)
    assert np.isfinite(jax.jit(energy_score_loss)(ens, tgt))


def test_bad_settings():
    ref = _reference(n=20, k=4)
    with pytest.raises(ConfigError, match="n_members must be an integer >= 2"):
        fit_ensemble(WhiteNoise(0.3, field="x"), lambda p: zero + p, ForwardEuler(), ref, dt=DT,
                     key=jax.random.key(0), n_members=1)
    with pytest.raises(ConfigError, match="unknown ensemble score"):
        fit_ensemble(WhiteNoise(0.3, field="x"), lambda p: zero + p, ForwardEuler(), ref, dt=DT,
                     key=jax.random.key(0), score="brier")

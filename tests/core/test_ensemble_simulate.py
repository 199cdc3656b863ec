"""ensemble_simulate: an ensemble run in host-driven segments with progress reports equals one ensemble_rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import RK4, ConfigError, FunctionProcess
from nemic.core.random import AR1Noise
from nemic.core.rollout import ensemble_rollout, ensemble_simulate
from nemic.models.lorenz96 import Lorenz96, Lorenz96State


def test_stochastic_ensemble_in_segments_equals_one_call_and_reports_progress():
    model = Lorenz96(F=8.0) + AR1Noise(0.5, 0.9, field="x")
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8)))
    keys = jax.random.split(jax.random.key(3), 5)
    kw = dict(dt=0.01, n_steps=60, save_every=3, keys=keys)
    ref = ensemble_rollout(model, RK4(), Lorenz96State(x=x0), **kw)
    calls = []
    seg = ensemble_simulate(model, RK4(), Lorenz96State(x=x0), segments=7,
                            progress=lambda done, total: calls.append((done, total)), **kw)
    assert seg.member_axis and seg.states.x.shape == (5, 21, 8)
    np.testing.assert_allclose(np.asarray(seg.states.x), np.asarray(ref.states.x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(seg.t), np.asarray(ref.t))
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and calls[-1] == (60, 60) and len(calls) == 7
    assert float(jnp.std(seg.states.x[:, -1], axis=0).mean()) > 1e-3  # members differ (independent keys)


def test_chunked_members_give_the_same_numbers():
    model = Lorenz96(F=8.0) + AR1Noise(0.5, 0.9, field="x")
    x0 = jnp.asarray(np.random.default_rng(1).normal(size=(5, 8)))
    kw = dict(dt=0.01, n_steps=30, save_every=3, keys=jax.random.split(jax.random.key(4), 5))
    ref = ensemble_rollout(model, RK4(), Lorenz96State(x=x0), **kw)
    chunked = ensemble_simulate(model, RK4(), Lorenz96State(x=x0), segments=2, batch_size=2, **kw)
    np.testing.assert_allclose(np.asarray(chunked.states.x), np.asarray(ref.states.x), rtol=1e-10, atol=1e-12)


def test_members_that_blow_up_freeze_as_in_ensemble_rollout():
    p = FunctionProcess(lambda s, t: s * s)  # x' = x^2 blows up at t = 1 / x0; negative starts decay
    x0 = jnp.asarray([[1.0], [0.4], [-1.0]])
    ref = ensemble_rollout(p, RK4(), x0, dt=0.05, n_steps=100, save_every=5)
    seg = ensemble_simulate(p, RK4(), x0, dt=0.05, n_steps=100, save_every=5, segments=6)
    bad = np.asarray(ref.blowup_step)
    assert bad[0] >= 0 and bad[2] == -1  # blows up within the run (t = 1) / never
    np.testing.assert_array_equal(np.asarray(seg.blowup_step), bad)
    np.testing.assert_allclose(np.asarray(seg.states), np.asarray(ref.states), rtol=1e-12)
    assert np.all(np.isfinite(np.asarray(seg.states)))


def test_bad_progress_is_one_line_error():
    with pytest.raises(ConfigError):
        ensemble_simulate(Lorenz96(F=8.0), RK4(), Lorenz96State(x=jnp.zeros((2, 8))), dt=0.01, n_steps=4,
                          progress="yes")

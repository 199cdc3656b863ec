"""Guards: the novelty detector on shifted Lorenz-96 climates, the guarded tendency, run reports, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from nemic.core.errors import ConfigError, DataError
from nemic.core.process import FunctionProcess
from nemic.core.rollout import rollout
from nemic.core.steppers import RK4
from nemic.models.lorenz96 import Lorenz96, Lorenz96State
from nemic.processes.guards import (GuardedTendency, MahalanobisDetector, guard_dataset, guard_report,
                                    moment_features, stencil_features)

K = 40  # the standard Lorenz-96 size: per-state statistics over 40 sites are informative


def climate(F, seed, n=600):
    m = Lorenz96(F)
    s0 = m.initial_state(jax.random.PRNGKey(seed), K=K)
    spun = rollout(m, RK4(), s0, dt=0.005, n_steps=1000, save_every=1000).final
    return rollout(m, RK4(), spun, dt=0.005, n_steps=5 * n, save_every=5).states.x[1:]


def feats(x):
    return jax.vmap(moment_features)(x).reshape(-1, 3)


@pytest.fixture(scope="module")
def detector_and_data():
    train, heldout = climate(20.0, 0, n=1500), climate(20.0, 1)
    return MahalanobisDetector.fit(feats(train), quantile=0.999), train, heldout


def test_detector_flags_shifted_climates_and_spares_in_distribution(detector_and_data):
    det, _, heldout = detector_and_data
    far = det.false_alarm_rate(feats(heldout))
    assert far < 0.01, far  # expected about 1 - quantile = 0.001
    for F in (5.0, 35.0):
        rate = det.false_alarm_rate(feats(climate(F, 2)))
        assert rate > 0.9, (F, rate)


def test_distance_matches_scipy(detector_and_data):
    det, train, _ = detector_and_data
    f = np.asarray(feats(train[:5]))
    ours = np.asarray(det.distance(jnp.asarray(f)))
    ref = [mahalanobis(v, np.asarray(det.mean), np.asarray(det.precision)) for v in f]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    # the threshold is the training quantile of the distances
    d_train = np.asarray(det.distance(feats(train)))
    assert np.mean(d_train > float(det.threshold)) == pytest.approx(0.001, abs=0.0015)


def test_guarded_tendency_switches_off_tapers_clips_and_transforms(detector_and_data):
    det, train, _ = detector_and_data
    learned = FunctionProcess(lambda s, t: Lorenz96State(x=0.5 * s.x))
    guard = GuardedTendency(learned, det, moment_features, "x")
    inside = Lorenz96State(x=train[100])
    novel = Lorenz96State(x=3.0 * train[100])
    np.testing.assert_allclose(guard.tendency(inside, 0.0).x, 0.5 * inside.x)
    np.testing.assert_array_equal(guard.tendency(novel, 0.0).x, 0.0)
    # taper: weight linear in the distance between threshold and taper * threshold
    tap = GuardedTendency(learned, det, moment_features, "x", taper=2.0)
    thr = float(det.threshold)
    scales = jnp.linspace(1.0, 3.0, 41)
    states = Lorenz96State(x=train[100][None, :] * scales[:, None])
    d = np.asarray(jax.vmap(tap.distance)(states))
    weights = np.asarray(jax.vmap(tap.weight)(states))
    expect = np.clip((2 * thr - d) / thr, 0, 1)
    np.testing.assert_allclose(weights, expect, rtol=1e-12)
    tend = jax.vmap(lambda s: tap.tendency(s, 0.0))(states).x
    np.testing.assert_allclose(tend, expect[:, None] * 0.5 * states.x, atol=1e-12)
    assert any(0.05 < w < 0.95 for w in weights) and weights[0] == 1.0 and weights[-1] == 0.0
    # clipping bounds the learned output smoothly
    clipped = GuardedTendency(learned, det, moment_features, "x", clip=1.0)
    out = clipped.tendency(inside, 0.0).x
    assert float(jnp.max(jnp.abs(out))) < 1.0
    np.testing.assert_allclose(out, jnp.tanh(0.5 * inside.x))
    # jit, vmap, grad
    f = jax.jit(lambda g, s: g.tendency(s, 0.0).x)
    np.testing.assert_allclose(f(guard, inside), 0.5 * inside.x)
    batch = Lorenz96State(x=jnp.stack([inside.x, novel.x]))
    vm = jax.vmap(lambda s: guard.tendency(s, 0.0))(batch).x
    np.testing.assert_allclose(vm[0], 0.5 * inside.x)
    np.testing.assert_array_equal(vm[1], 0.0)
    g = jax.grad(lambda x: jnp.sum(guard.tendency(Lorenz96State(x=x), 0.0).x))(inside.x)
    np.testing.assert_allclose(g, 0.5)


def test_guard_report_counts_flagged_states(detector_and_data):
    det, train, _ = detector_and_data
    learned = FunctionProcess(lambda s, t: Lorenz96State(x=jnp.zeros_like(s.x)))
    guard = GuardedTendency(learned, det, moment_features, "x")
    model = Lorenz96(35.0) + guard
    s0 = Lorenz96State(x=train[-1])
    traj = rollout(model, RK4(), s0, dt=0.005, n_steps=1500, save_every=5)
    rep = guard_report(guard, traj)
    d = np.array([mahalanobis(np.asarray(moment_features(x))[0], np.asarray(det.mean), np.asarray(det.precision))
                  for x in np.asarray(traj.states.x)])
    assert rep["n_states"] == 301
    assert rep["n_flagged"] == int(np.sum(d > float(det.threshold)))
    assert rep["flagged_fraction"] > 0.5
    assert rep["blowup_step"] == -1
    ds = guard_dataset(guard, traj)
    assert int(ds["novel"].sum()) == rep["n_flagged"]
    assert ds["novelty_distance"].attrs["units"] == "1"


def test_stencil_features_shape():
    x = jnp.arange(8.0)
    f = stencil_features(2)(x)
    assert f.shape == (8, 5)
    np.testing.assert_array_equal(f[0], [6, 7, 0, 1, 2])


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="D \\+ 1"):
        MahalanobisDetector.fit(rng.normal(size=(3, 3)))
    with pytest.raises(DataError, match="shape"):
        MahalanobisDetector.fit(rng.normal(size=(30,)))
    with pytest.raises(ConfigError, match="quantile"):
        MahalanobisDetector.fit(rng.normal(size=(30, 2)), quantile=1.0)
    bad = rng.normal(size=(30, 2))
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        MahalanobisDetector.fit(bad)
    det = MahalanobisDetector.fit(rng.normal(size=(30, 3)))
    learned = FunctionProcess(lambda s, t: s)
    with pytest.raises(ConfigError, match="taper"):
        GuardedTendency(learned, det, taper=0.5)
    with pytest.raises(ConfigError, match="clip"):
        GuardedTendency(learned, det, clip=0.0)

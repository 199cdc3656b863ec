"""Probabilistic scores against scoringrules (ties, one member), unbiasedness of the fair CRPS, perfect
forecasts, spread/error by lead, reliability, gradients and bad input."""

import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest
import scoringrules as sr

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.probabilistic import (crps_ensemble, crps_gaussian, energy_score, ensemble_mean_rmse,
                                         ensemble_spread, reliability, spread_error, spread_error_by_lead)

rng = np.random.default_rng(0)


@pytest.mark.parametrize("m", [1, 2, 7, 40])
@pytest.mark.parametrize("fair", [False, True])
def test_crps_equals_scoringrules_with_ties(m, fair):
    ens = rng.normal(size=(m, 50))
    obs = rng.normal(size=50)
    ens[:, :10] = np.round(ens[:, :10])  # ties among members and with the observation
    obs[:10] = np.round(obs[:10])
    if m > 2:
        ens[1, 10:20] = ens[0, 10:20]
    if fair and m == 1:
        with pytest.raises(ConfigError, match="at least 2 members") as e:
            crps_ensemble(ens, obs, fair=True)
        assert "\n" not in str(e.value)
        return
    ref = sr.crps_ensemble(obs, ens, m_axis=0, estimator="fair" if fair else "nrg")
    np.testing.assert_allclose(crps_ensemble(ens, obs, fair=fair), ref, atol=1e-6)


@pytest.mark.parametrize("m", [1, 2, 9])
@pytest.mark.parametrize("fair", [False, True])
def test_energy_score_equals_scoringrules(m, fair):
    ens = rng.normal(size=(m, 30, 5))
    obs = rng.normal(size=(30, 5))
    ens[:, :5] = np.round(ens[:, :5])
    obs[:5] = np.round(obs[:5])
    if fair and m == 1:
        with pytest.raises(ConfigError, match="at least 2 members"):
            energy_score(ens, obs, fair=True)
        return
    ref = sr.es_ensemble(obs, ens, m_axis=0, v_axis=-1, estimator="fair" if fair else "nrg")
    np.testing.assert_allclose(energy_score(ens, obs, fair=fair), ref, atol=1e-6)
    if m == 1:  # one member: the energy score is the Euclidean error
        np.testing.assert_allclose(energy_score(ens, obs), np.linalg.norm(ens[0] - obs, axis=-1), atol=1e-12)


def test_perfect_deterministic_forecast_scores_zero_with_finite_gradients():
    obs = jnp.asarray(rng.normal(size=(4, 3)))
    ens = jnp.broadcast_to(obs, (5, 4, 3))
    # the sorted-member pair sum of crps_ensemble cancels to rounding level, not to an exact 0
    assert float(jnp.max(jnp.abs(crps_ensemble(ens, obs)))) < 1e-14
    assert float(jnp.max(jnp.abs(energy_score(ens, obs)))) == 0.0
    g = jax.grad(lambda e: jnp.sum(energy_score(e, obs, fair=True)))(ens)
    assert np.all(np.isfinite(g))


def test_fair_crps_is_unbiased_and_the_plain_one_is_not():
    """Mean over many 3-member ensembles drawn from N(0,1) = analytic CRPS of N(0,1) for the same observations."""
    m, n = 3, 50_000
    obs = jnp.asarray(rng.normal(size=n) * 1.3 + 0.4)
    ens = jnp.asarray(rng.normal(size=(m, n)))
    exact = float(jnp.mean(crps_gaussian(0.0, 1.0, obs)))
    fair = np.asarray(crps_ensemble(ens, obs, fair=True))
    plain = float(jnp.mean(crps_ensemble(ens, obs)))
    se = fair.std() / np.sqrt(n)
    assert abs(fair.mean() - exact) < 4 * se
    assert plain - exact > 20 * se  # E|X-X'|/(2M) bias: 1/(sqrt(pi) M) ~ 0.19
    np.testing.assert_allclose(crps_gaussian(0.3, 1.7, 1.1), sr.crps_normal(1.1, 0.3, 1.7), atol=1e-10)


def test_spread_error_by_lead_matches_spread_error_and_reliable_ensemble_is_one():
    n_lead = 3
    truth = rng.normal(size=(n_lead, 4000, 2)) * np.array([1.0, 2.0, 3.0])[:, None, None]
    ens = rng.normal(size=(10, n_lead, 4000, 2)) * np.array([1.0, 2.0, 3.0])[None, :, None, None]
    out = spread_error_by_lead(ens, truth, lead_axis=0)
    for i in range(n_lead):
        np.testing.assert_allclose(out["ratio"][i], spread_error(ens[:, i], truth[i]), rtol=1e-12)
        np.testing.assert_allclose(out["rmse"][i], ensemble_mean_rmse(ens[:, i], truth[i]), rtol=1e-12)
        np.testing.assert_allclose(out["spread"][i], ensemble_spread(ens[:, i]), rtol=1e-12)
    np.testing.assert_allclose(out["ratio"], 1.0, atol=0.05)
    np.testing.assert_allclose(out["spread"], np.sqrt(1.1) * np.array([1.0, 2.0, 3.0]), rtol=0.05)


def test_reliability_diagram_of_a_reliable_and_an_overconfident_ensemble():
    mu = rng.normal(size=10000)
    obs = mu + rng.normal(size=10000)
    small = reliability(mu[None] + rng.normal(size=(8, 10000)), obs, threshold=0.5)
    assert small["count"].shape == (9,) and float(small["count"].sum()) == 10000
    # with many members the ensemble fraction is the true probability: observed frequency = forecast probability
    good = reliability(mu[None] + rng.normal(size=(100, 10000)), obs, threshold=0.5, n_bins=5)
    np.testing.assert_allclose(good["observed_frequency"], good["forecast_probability"], atol=0.04)
    bad = reliability(mu[None] + 0.2 * rng.normal(size=(100, 10000)), obs, threshold=0.5, n_bins=5)
    assert float(bad["observed_frequency"][-1]) < float(bad["forecast_probability"][-1]) - 0.1


def test_bad_input_is_a_one_line_error():
    ens, obs = np.zeros((4, 5, 3)), np.zeros((5, 3))
    with pytest.raises(DataError, match="do not match"):
        energy_score(ens, np.zeros((5, 2)))
    nan = ens.copy()
    nan[1, 2, 0] = np.nan
    for fn in (energy_score, crps_ensemble, spread_error):
        with pytest.raises(DataError, match="NaN") as e:
            fn(nan, obs)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="do not match"):
        crps_ensemble(ens, np.zeros(7))
    with pytest.raises(ConfigError, match="at least 2 members"):
        spread_error_by_lead(ens[:1], obs)


def test_scores_jit_vmap_grad():
    ens = jnp.asarray(rng.normal(size=(6, 4, 3)))
    obs = jnp.asarray(rng.normal(size=(4, 3)))
    a = jax.jit(lambda e, o: energy_score(e, o, fair=True))(ens, obs)
    b = jax.vmap(lambda e, o: energy_score(e, o, fair=True), in_axes=(1, 0))(ens, obs)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    jax.test_util.check_grads(lambda e: jnp.sum(energy_score(e, obs, fair=True)), (ens,), order=1,
                              modes=["rev"])
    jax.test_util.check_grads(lambda e: jnp.sum(crps_ensemble(e, obs, fair=True)), (ens,), order=1,
                              modes=["rev"])

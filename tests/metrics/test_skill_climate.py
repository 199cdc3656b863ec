"""Forecast-skill and climate metrics against analytic references."""

import numpy as np
import pytest
import jax.numpy as jnp

from nemic.core.errors import DataError
from nemic.metrics.climate import autocorrelation, hellinger_distance
from nemic.metrics.skill import forecast_rmse, rmse, skill_lost_lead_time


def gaussian_hellinger(m1, s1, m2, s2):
    """Closed form for two normal distributions."""
    bc = np.sqrt(2 * s1 * s2 / (s1 ** 2 + s2 ** 2)) * np.exp(-((m1 - m2) ** 2) / (4 * (s1 ** 2 + s2 ** 2)))
    return np.sqrt(1 - bc)


@pytest.mark.parametrize("m2, s2", [(0.0, 1.0), (0.5, 1.0), (0.0, 1.5), (1.0, 0.7), (3.0, 1.0)])
def test_hellinger_matches_gaussian_closed_form(m2, s2):
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 400_000)
    b = rng.normal(m2, s2, 400_000)
    expected = gaussian_hellinger(0.0, 1.0, m2, s2)
    assert abs(hellinger_distance(a, b, bins=200) - expected) < 0.015


def test_hellinger_limits_and_nan():
    a = np.arange(1000.0)
    assert hellinger_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert hellinger_distance(a, a + 5000) == pytest.approx(1.0)
    with pytest.raises(DataError, match="samples_b contains 1 NaN/inf"):
        hellinger_distance(a, np.array([np.nan, 1.0]))


def test_autocorrelation_of_ar1_process():
    rng = np.random.default_rng(1)
    phi, n = 0.8, 200_000
    x = np.empty((n, 3))
    x[0] = 0
    eps = rng.normal(size=(n, 3))
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    acf = autocorrelation(x, 5)
    np.testing.assert_allclose(acf, phi ** np.arange(6), atol=0.01)
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(x[:5], 5)


def test_forecast_rmse_and_skill_lost():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(10, 4, 6))
    t = rng.normal(size=(10, 4, 6))
    ref = np.sqrt(((f - t) ** 2).mean(axis=(0, 2)))
    np.testing.assert_allclose(forecast_rmse(jnp.asarray(f), jnp.asarray(t)), ref, rtol=1e-12)
    assert float(rmse(jnp.ones(3), jnp.zeros(3))) == pytest.approx(1.0)
    leads = np.array([0.0, 1.0, 2.0, 3.0])
    assert skill_lost_lead_time(leads, [0.0, 1.0, 3.0, 4.0], 2.0) == pytest.approx(1.5)
    assert skill_lost_lead_time(leads, [0.0, 1.0, 1.5, 1.9], 2.0) == float("inf")
    with pytest.raises(ValueError):
        forecast_rmse(jnp.ones((3, 4)), jnp.ones((3, 5)))

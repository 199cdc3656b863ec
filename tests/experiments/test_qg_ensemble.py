"""Random-field initial perturbations and the choice of their amplitude (nemic.experiments.qg_ensemble)."""

import jax
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.experiments.qg_ensemble import choose_amplitude, climate_perturbations


def test_perturbations_have_zero_mean_and_the_climate_std_times_the_amplitude():
    rng = np.random.default_rng(0)
    sigma = np.array([2.0, 0.5])[:, None, None]
    pool = rng.normal(size=(400, 2, 8, 8)) * sigma + 3.0  # iid climate states, offset that differences remove
    d = climate_perturbations(pool, 4000, 0.1, jax.random.key(1))
    assert d.shape == (4000, 2, 8, 8)
    std = d.std(axis=(0, 2, 3))
    # Var(a (x_i - x_j) / sqrt 2) = a^2 sigma^2 for independent states; 256 000 samples per layer
    np.testing.assert_allclose(std, 0.1 * sigma.ravel(), rtol=0.01)
    se = 0.1 * sigma.ravel() / np.sqrt(d[:, 0].size)
    assert np.all(np.abs(d.mean(axis=(0, 2, 3))) < 5 * se)


def test_two_states_are_never_paired_with_themselves_and_zero_amplitude_gives_zero():
    pool = np.stack([np.zeros((3,)), np.ones((3,))])
    d = climate_perturbations(pool, 100, 1.0, jax.random.key(0))
    np.testing.assert_allclose(np.abs(d), 1 / np.sqrt(2.0))  # always one state minus the other
    assert np.all(climate_perturbations(pool, 5, 0.0, jax.random.key(0)) == 0)


def test_choose_amplitude_takes_the_smallest_worst_case_log_ratio():
    # ratio grows with the amplitude: r(a) = (0.3 + 5 a) at every lead, times a lead-dependent factor
    def ratio_of(a):
        return (0.3 + 5 * a) * np.array([0.9, 1.0, 1.1])

    best, record = choose_amplitude((0.0, 0.1, 0.2, 0.4), ratio_of)
    # worst |log r|: a=0 -> 1.31, a=0.1 -> 0.33, a=0.2 -> 0.36, a=0.4 -> 0.93
    assert best == 0.1
    assert set(record) == {"0", "0.1", "0.2", "0.4"}


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(DataError, match="at least 2"):
        climate_perturbations(np.zeros((1, 3)), 2, 0.1, jax.random.key(0))
    with pytest.raises(ConfigError):
        climate_perturbations(np.zeros((4, 3)), 2, -0.1, jax.random.key(0))
    with pytest.raises(ConfigError):
        choose_amplitude((), lambda a: np.ones(2))
    with pytest.raises(DataError, match="non-finite"):
        choose_amplitude((0.1,), lambda a: np.array([np.nan]))

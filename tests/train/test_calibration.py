"""Calibration: gradient descent (Adam, L-BFGS), ensemble Kalman inversion and identifiability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.train.calibration import (
    check_targets,
    ensemble_kalman_inversion,
    fit_gradient,
    identifiability,
    misfit,
)

M = np.array([[1.0, 0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.4, 1.0], [1.0, 1.0, 1.0], [0.3, -0.2, 0.5]])


def _linear_problem():
    theta_true = np.array([1.2, -0.7, 0.4])
    sigma = np.array([0.1, 0.2, 0.1, 0.3, 0.2])
    y = M @ theta_true + sigma * np.asarray(jax.random.normal(jax.random.PRNGKey(3), (5,)))
    W = np.diag(1 / sigma**2)
    ls = np.linalg.solve(M.T @ W @ M, M.T @ W @ y)  # weighted least squares (the MLE)
    return y, sigma, ls, np.linalg.inv(M.T @ W @ M)


def test_lbfgs_and_adam_find_the_weighted_least_squares_solution():
    y, sigma, ls, _ = _linear_problem()
    loss = misfit(lambda th: jnp.asarray(M) @ th, jnp.asarray(y), jnp.asarray(sigma))
    r = fit_gradient(loss, np.zeros(3), method="lbfgs", steps=30)
    assert np.allclose(r.theta, ls, atol=1e-6) and r.n_forward >= r.n_gradient > 0
    r2 = fit_gradient(loss, np.zeros(3), method="adam", steps=2000, learning_rate=0.05)
    assert np.allclose(r2.theta, ls, atol=1e-3)
    assert r2.n_forward == r2.n_gradient + 1


def test_lbfgs_solves_rosenbrock_with_counted_line_search_evaluations():
    def rosen(th):
        return (1 - th[0]) ** 2 + 100 * (th[1] - th[0] ** 2) ** 2

    r = fit_gradient(rosen, np.array([-1.2, 1.0]), method="lbfgs", steps=200)
    assert np.allclose(r.theta, [1.0, 1.0], atol=1e-5)
    assert r.n_forward > r.n_gradient  # line-search trial points are counted


def test_eki_converges_to_least_squares_for_a_linear_forward_map():
    y, sigma, ls, _ = _linear_problem()
    ens0 = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (200, 3)))
    r = ensemble_kalman_inversion(lambda th: jnp.asarray(M) @ th, ens0, y, sigma, jax.random.PRNGKey(1),
                                  n_iter=40)
    assert np.allclose(r.theta, ls, atol=0.05), (r.theta, ls)
    assert r.n_forward == 200 * 40 and r.n_gradient == 0
    # same key -> same result
    r2 = ensemble_kalman_inversion(lambda th: jnp.asarray(M) @ th, ens0, y, sigma, jax.random.PRNGKey(1),
                                   n_iter=40)
    assert np.array_equal(r.theta, r2.theta)


def test_identifiability_matches_linear_theory_and_flags_inseparable_parameters():
    y, sigma, ls, cov = _linear_problem()
    ident = identifiability(lambda th: jnp.asarray(M) @ th, ls, sigma, ["a", "b", "c"])
    assert np.allclose(list(ident["cramer_rao_std"].values()), np.sqrt(np.diag(cov)), rtol=1e-10)
    assert np.allclose(ident["singular_values"], np.linalg.svd(M / sigma[:, None], compute_uv=False))
    # a map that only sees a + b cannot separate a and b
    G = lambda th: jnp.stack([th[0] + th[1], 2 * (th[0] + th[1]) + 1e-6 * th[0], th[2]])  # noqa: E731
    ident2 = identifiability(G, jnp.array([1.0, 1.0, 1.0]), 0.01, ["a", "b", "c"])
    assert set(ident2["poorly_identified"]) == {"a", "b"}
    assert [p[:2] for p in ident2["inseparable_pairs"]] == [("a", "b")]
    assert ident2["singular_values"][-1] < 1e-4 * ident2["singular_values"][0]


def test_grad_through_misfit_and_jit_vmap():
    y, sigma, _, _ = _linear_problem()
    loss = misfit(lambda th: jnp.asarray(M) @ th, jnp.asarray(y), jnp.asarray(sigma))
    th = jnp.array([0.1, 0.2, 0.3])
    g = jax.jit(jax.grad(loss))(th)
    expected = M.T @ ((M @ np.asarray(th) - y) / sigma**2) / 5
    assert np.allclose(g, expected)
    assert jax.vmap(loss)(jnp.stack([th, 2 * th])).shape == (2,)


def test_bad_calibration_input():
    with pytest.raises(DataError, match="NaN"):
        check_targets([1.0, float("nan"), 2.0])
    with pytest.raises(DataError, match="NaN"):
        ensemble_kalman_inversion(lambda th: th, np.ones((4, 2)), [np.nan, 1.0], 1.0, jax.random.PRNGKey(0))
    with pytest.raises(DataError, match="sigma"):
        check_targets([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ConfigError, match="method"):
        fit_gradient(lambda th: jnp.sum(th**2), np.ones(2), method="sgd")
    with pytest.raises(ConfigError, match="ensemble0"):
        ensemble_kalman_inversion(lambda th: th, np.ones(2), [1.0, 1.0], 1.0, jax.random.PRNGKey(0))

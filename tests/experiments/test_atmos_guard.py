"""The novelty guard of the column physics on synthetic columns whose distribution is known: Gaussian anomalies
about a latitude-dependent mean. The distances of in-distribution columns follow a chi-square law with D degrees
of freedom and those of columns warmed by 4 K a non-central chi-square law with non-centrality
``delta^T C^-1 delta`` (scipy.stats), so the flag rates of the fitted detector are compared with these analytic
rates; the guarded network returns the network's output in distribution and the chosen fallback on novel columns;
bad settings are one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nemic.core.errors import ConfigError, DataError
from nemic.experiments.atmos_guard import GuardedColumnNet, fit_column_detector, guarded_hybrid
from nemic.models.atmosphere import PrimitiveEquations
from nemic.nn.column import ColumnNet

L = 8
EQ = np.linspace(0.0, 1.0, L + 1)
THERMO = list(range(2 * L)) + [4 * L]  # T, q, p_s
D = len(THERMO)


def _net():
    mean = np.concatenate([np.full(L, 250.0), np.full(L, 2e-3), np.zeros(2 * L), [1e5, 300.0, 0.0]])
    std = np.concatenate([np.full(L, 3.0), np.full(L, 1e-3), np.full(2 * L, 5.0), [800.0, 100.0, 0.5]])
    net = ColumnNet(EQ, width=16, depth=1, key=jax.random.key(0))
    return net.with_statistics(mean, std, np.full(4 * L, 1e-5), 3e-5), mean, std


def _columns(n, rng, cov_chol, mean, std, warming=0.0):
    """Packed columns: features = row mean (depends on latitude) + N(0, C) anomaly; T warmed by ``warming``."""
    sin_lat = np.linspace(-0.9, 0.9, 6)[rng.integers(0, 6, n)]
    row_mean = np.zeros((n, D))
    row_mean[:, :L] = -6.0 * sin_lat[:, None] ** 2  # colder poleward (in units of the T std)
    row_mean[:, L:2 * L] = -1.0 * sin_lat[:, None] ** 2
    f = row_mean + rng.standard_normal((n, D)) @ cov_chol.T
    x = np.empty((n, 4 * L + 3))
    x[:, THERMO] = mean[THERMO] + std[THERMO] * f
    x[:, 2 * L:4 * L] = rng.normal(0.0, 5.0, (n, 2 * L))
    x[:, 4 * L + 1] = rng.uniform(0.0, 500.0, n)
    x[:, 4 * L + 2] = sin_lat
    x[:, :L] += warming
    return x


def test_flag_rates_match_the_chi_square_laws_of_gaussian_columns():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    cov = 0.3 * a @ a.T / D + 0.5 * np.eye(D)  # correlated anomalies
    chol = np.linalg.cholesky(cov)
    net, mean, std = _net()
    det, lo, hi = fit_column_detector(net, _columns(60000, rng, chol, mean, std), quantile=0.99)
    thr = float(det.threshold)
    # the 99 % quantile of a chi distribution with D degrees of freedom
    assert abs(thr - np.sqrt(stats.chi2.ppf(0.99, D))) < 0.03 * thr
    held_out = float(np.mean(np.asarray(det.is_novel(_columns(40000, rng, chol, mean, std)))))
    assert abs(held_out - stats.chi2.sf(thr ** 2, D)) < 0.003, held_out
    # 4 K warming of every level: a shift of 4 / 3 T-standard deviations on the L temperature features
    delta = np.zeros(D)
    delta[:L] = 4.0 / std[0]
    lam = delta @ np.linalg.solve(cov, delta)
    expect = stats.ncx2.sf(thr ** 2, D, lam)
    warm = float(np.mean(np.asarray(det.is_novel(_columns(40000, rng, chol, mean, std, warming=4.0)))))
    assert 0.5 < expect < 0.95 and abs(warm - expect) < 0.015, (warm, expect)


def test_guarded_network_uses_the_fallback_only_on_novel_columns():
    rng = np.random.default_rng(1)
    net, mean, std = _net()
    x_train = _columns(5000, rng, np.eye(D) * 0.5, mean, std)
    det, lo, hi = fit_column_detector(net, x_train, quantile=0.999)
    inside = jnp.asarray(x_train[0])
    novel = inside.at[:L].add(12.0)  # 4 T-standard deviations on every level
    assert not bool(det.is_novel(inside)) and bool(det.is_novel(novel))
    zero = GuardedColumnNet(net, det, lo, hi, fallback="zero")
    clip = GuardedColumnNet(net, det, lo, hi, fallback="clip")
    np.testing.assert_array_equal(np.asarray(zero(inside)), np.asarray(net(inside)))
    np.testing.assert_array_equal(np.asarray(zero(novel)), np.zeros(4 * L + 2))
    np.testing.assert_allclose(np.asarray(clip(novel)), np.asarray(net(jnp.clip(novel, lo, hi))), rtol=1e-12)
    assert float(jnp.max(novel[:L] - hi[:L])) > 0  # the novel column is outside the training range
    tapered = GuardedColumnNet(net, det, lo, hi, fallback="zero", taper=1e6)
    assert 0.99 < float(tapered.weight(novel)) < 1.0


def test_guard_bad_settings_are_one_line_errors():
    net, mean, std = _net()
    rng = np.random.default_rng(2)
    det, lo, hi = fit_column_detector(net, _columns(2000, rng, np.eye(D), mean, std))
    for kw, err, text in (({"fallback": "held-suarez"}, ConfigError, "fallback must be one of"),
                          ({"taper": 0.5}, ConfigError, "taper must be > 1")):
        with pytest.raises(err, match=text) as e:
            GuardedColumnNet(net, det, lo, hi, **kw)
        assert "\n" not in str(e.value)
    other = ColumnNet(np.linspace(0.0, 1.0, 6), width=8, depth=1, key=jax.random.key(1))
    with pytest.raises(DataError, match="for 23 inputs") as e:
        GuardedColumnNet(other, det, lo, hi)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"shape \(N, 35\)"):
        fit_column_detector(net, np.zeros((10, 7)))
    speedy = ColumnNet([0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0], width=8, depth=1, key=jax.random.key(2))
    det_s, lo_s, hi_s = fit_column_detector(speedy, _columns(2000, rng, np.eye(D), mean, std))
    with pytest.raises(DataError, match="trained on sigma levels") as e:
        guarded_hybrid(PrimitiveEquations(21, L), GuardedColumnNet(speedy, det_s, lo_s, hi_s))
    assert "\n" not in str(e.value)

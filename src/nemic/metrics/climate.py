"""Climate statistics of long runs: distances between distributions and autocorrelation."""

from __future__ import annotations

import numpy as np

from nemic.core.errors import ConfigError, DataError


def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        n_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise DataError(f"{name} contains {n_bad} NaN/inf value(s); finite values are required (a run that blew "
                        "up is compared up to its last finite state)")


def histogram_pdf(samples, bins) -> np.ndarray:
    """Probability mass per bin of ``samples`` (flattened) on the bin ``edges``; values outside are dropped."""
    counts, _ = np.histogram(np.asarray(samples).ravel(), bins=np.asarray(bins))
    total = counts.sum()
    return counts / total if total else counts.astype(float)


def hellinger_distance(samples_a, samples_b, bins: int | np.ndarray = 50) -> float:
    """Hellinger distance ``sqrt(1 - sum_i sqrt(p_i q_i))`` between histograms of two sample sets.

    The bins (if an integer is given) span the union of both samples' ranges. 0 means identical histograms,
    1 disjoint support. Used to compare Lorenz-96 climates by Arnold et al. (2013), doi:10.1098/rsta.2011.0479.
    """
    a = np.asarray(samples_a, dtype=float).ravel()
    b = np.asarray(samples_b, dtype=float).ravel()
    if a.size == 0 or b.size == 0:
        raise DataError("hellinger_distance needs at least one sample on each side")
    _finite("samples_a", a)
    _finite("samples_b", b)
    if np.isscalar(bins):
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        bins = np.linspace(lo, hi, int(bins) + 1)
    p, q = histogram_pdf(a, bins), histogram_pdf(b, bins)
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def autocorrelation(x, max_lag: int, axis: int = 0) -> np.ndarray:
    """Sample autocorrelation at lags 0..max_lag along ``axis``, averaged over the other axes.

    Uses the biased estimator ``sum_t (x_t - m)(x_{t+l} - m) / sum_t (x_t - m)^2`` (Box & Jenkins 1976).
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, 0)
    _finite("x", x)
    n = x.shape[0]
    if not isinstance(max_lag, (int, np.integer)) or max_lag < 0:
        raise ConfigError(f"max_lag must be an integer >= 0, got {max_lag!r}")
    if max_lag >= n:
        raise DataError(f"max_lag ({max_lag}) must be smaller than the series length ({n})")
    x = x - x.mean(axis=0)
    var = np.sum(x * x, axis=0)
    acf = np.stack([np.sum(x[: n - lag] * x[lag:], axis=0) / var for lag in range(max_lag + 1)])
    return acf.reshape(max_lag + 1, -1).mean(axis=1)



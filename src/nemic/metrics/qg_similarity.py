"""Distances and similarity scores of the ocean subgrid benchmark (Ross et al. 2023), pure NumPy.

A *summary* is a dict of time-mean isotropic curves (``kr`` and spectra or budget terms, one value per shell) and
pooled, sorted samples of fields, plus ``kmax`` (the largest wavenumber compared). :func:`distances` compares two
summaries metric by metric (RMS difference of curves over ``kr < kmax``; first Wasserstein distance of the
samples); :func:`similarity` turns distances into the benchmark's score ``1 - D(param, HR) / D(LR, HR)`` (eq. 9).

Every function here refuses non-finite input (NaN or inf in a curve, a sample or a distance) with a one-line
:class:`~nemic.core.errors.DataError` naming the metric: a NaN would otherwise turn into a fake score (a NaN
distance drops out of the mean, a NaN sample sorts to the end). They work on host (NumPy) values, outside ``jit``.

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258, section 3.3.
"""

from __future__ import annotations

import numpy as np

from nemic.core.errors import ConfigError, DataError

SPECTRAL_METRICS = ("KEspec1", "KEspec2", "Ensspec1", "Ensspec2", "KEflux", "APEflux", "APEgenspec",
                    "KEfrictionspec")
DISTRIBUTION_METRICS = ("q1", "q2", "u1", "u2", "v1", "v2", "KE1", "KE2", "Ens1", "Ens2")


def _finite(name: str, x) -> np.ndarray:
    """``x`` as a float64 array, or a one-line :class:`DataError` naming ``name`` if it holds NaN/inf."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numbers, got {type(x).__name__}") from None
    if not np.all(np.isfinite(a)):
        n = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise DataError(f"{name} holds {n} NaN/inf value(s); the similarity metrics need finite data")
    return a


def wasserstein1(a, b, presorted: bool = False) -> float:
    """First Wasserstein distance between the empirical distributions of samples ``a`` and ``b`` (1-D).

    ``W1 = int_0^1 |F_a^-1(p) - F_b^-1(p)| dp`` evaluated with the exact empirical quantile functions on a merged
    grid (Villani 2009, Optimal Transport, Remark 2.19); same units as the samples. ``presorted``: ``a`` and ``b``
    are already sorted 1-D arrays (saves the sorts for the millions of samples of a high-resolution run).
    """
    a, b = _finite("the first samples", a), _finite("the second samples", b)
    if a.size == 0 or b.size == 0:
        raise DataError("the Wasserstein distance needs at least one sample on each side")
    if not presorted:
        a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    if a.size > b.size:
        a, b = b, a
    if b.size % a.size == 0:  # a's quantile steps are a subset of b's: the merged grid is b's
        return float(np.mean(np.abs(np.repeat(a, b.size // a.size) - b)))
    p = np.union1d(np.arange(1, a.size) / a.size, np.arange(1, b.size) / b.size)
    p = np.concatenate([[0.0], p, [1.0]])
    mid = (p[:-1] + p[1:]) / 2
    qa = a[np.minimum((mid * a.size).astype(int), a.size - 1)]
    qb = b[np.minimum((mid * b.size).astype(int), b.size - 1)]
    return float(np.sum(np.abs(qa - qb) * np.diff(p)))


def resolved_kmax(grid) -> float:
    """Largest wavenumber (rad/m) the spectral distances use on ``grid`` (anything with ``dx``, ``dy`` in m):
    where pyqg's exponential filter starts (``kappa* = 0.65 pi``, about 2/3 of the Nyquist wavenumber), as in
    the benchmark's ``spectral_rmse``."""
    return float(0.65 * np.pi / max(grid.dx, grid.dy))


def distances(a: dict, b: dict) -> dict:
    """Distance per metric between two summaries (see the module documentation).

    Spectra and budget terms: RMS difference of the time-mean isotropic curves over the resolved wavenumbers
    ``kr < kmax`` (the smaller of the two); marginal distributions: Wasserstein-1 distance of the (sorted) pooled
    samples. As the benchmark's ``diagnostic_differences``. The two summaries may come from different
    resolutions of the same domain (their shells then coincide below kmax).
    """
    missing = [k for k in ("kr", *SPECTRAL_METRICS, *DISTRIBUTION_METRICS) if k not in a or k not in b]
    if missing:
        raise DataError(f"a summary lacks the metric(s) {missing}")
    kmax = min(a.get("kmax", np.inf), b.get("kmax", np.inf))
    kra, krb = _finite("wavenumbers kr of a summary", a["kr"]), _finite("wavenumbers kr of a summary", b["kr"])
    sa, sb = kra < kmax, krb < kmax
    if sa.sum() != sb.sum() or not np.allclose(kra[sa], krb[sb]):
        raise ConfigError("the two summaries have different wavenumber shells below kmax (different domains?)")
    d = {}
    for k in SPECTRAL_METRICS:
        x, y = _finite(f"metric {k} of a summary", a[k])[sa], _finite(f"metric {k} of a summary", b[k])[sb]
        d[k] = float(np.sqrt(np.mean((x - y) ** 2)))
    for k in DISTRIBUTION_METRICS:
        try:
            d[k] = wasserstein1(a[k], b[k], presorted=True)
        except DataError as e:
            raise DataError(f"metric {k}: {e}") from None
    return d


def similarity(param: dict, low: dict, high: dict, low_distances: dict | None = None) -> dict:
    """Similarity ``1 - D(param, HR) / D(LR, HR)`` per metric (Ross et al. 2023, eq. 9), with mean and minimum.

    1 means the parameterized run matches the high-resolution run, 0 means no better than the unparameterized
    low-resolution run, negative means worse. ``low_distances``: ``distances(low, high)`` if already computed.

    A metric on which the low-resolution run already equals the high-resolution one (``D(LR, HR) = 0``) has no
    score (``None``) and is left out of the mean and minimum; non-finite input is a one-line :class:`DataError`.
    """
    dp = distances(param, high)
    dl = distances(low, high) if low_distances is None else low_distances
    for k in dp:
        if k not in dl:
            raise DataError(f"the low-resolution distances lack the metric {k}")
        _finite(f"the low-resolution distance of {k}", dl[k])
    s = {k: 1.0 - dp[k] / dl[k] if dl[k] > 0 else None for k in dp}
    vals = [v for v in s.values() if v is not None]
    if not vals:
        raise DataError("no metric can be scored: the low-resolution run equals the high-resolution one on all")
    return {"per_metric": s, "mean": float(np.mean(vals)), "min": float(np.min(vals))}


__all__ = ["DISTRIBUTION_METRICS", "SPECTRAL_METRICS", "distances", "resolved_kmax", "similarity", "wasserstein1"]

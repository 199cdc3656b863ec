r"""Structure-amplitude-location (SAL) score of precipitation fields, computed on the host (numpy + scipy.ndimage).

SAL (Wernli, Paulat, Hagen & Frei 2008, Mon. Wea. Rev. 136, 4470, doi:10.1175/2008MWR2415.1; Wernli, Hofmann &
Zimmer 2009, Wea. Forecasting 24, 1472, doi:10.1175/2009WAF2222271.1) compares a forecast :math:`f` with an
observation :math:`o` through precipitation *objects*:

* **objects**: the connected regions of ``field >= R*`` with :math:`R^* = \text{thr\_factor} \times
  Q_{q}(\text{field} > \min\text{field})` (eq. 1 of Wernli et al. 2009: 1/15 of the 95th percentile of the
  non-zero values), at least ``min_size`` pixels each (4-connected by default);
* **amplitude** :math:`A = (D_f - D_o) / (\tfrac12 (D_f + D_o))` with :math:`D` the domain mean;
* **structure** :math:`S = (V_f - V_o) / (\tfrac12 (V_f + V_o))` with the scaled volume
  :math:`V = \sum_n R_n (R_n / R_n^{\max}) / \sum_n R_n` (:math:`R_n` the sum and :math:`R_n^{\max}` the maximum
  of object :math:`n`);
* **location** :math:`L = |x_f - x_o| / d + 2 |r_f - r_o| / d`, with :math:`x` the centre of mass of the field,
  :math:`r = \sum_n R_n |x_n - x| / \sum_n R_n` (:math:`x_n` the intensity-weighted centroid of object
  :math:`n`) and :math:`d = \sqrt{H^2 + W^2}` (pixel units, as pysteps).

Labelling connected objects is not a ``jnp`` operation (it needs a sequential union-find or an iterative
labelling), so SAL runs on the host; it is an evaluation score, not a loss.

Difference from ``pysteps.verification.salscores.sal``: pysteps identifies objects with its thunderstorm
detection (Feldmann et al. 2021, doi:10.1175/WAF-D-20-0175.1), which also splits a thresholded region with
several maxima at least 10 px apart along watershed lines; here an object is a whole connected region, as in
Wernli et al. (2008). Where the two identifications agree (regions with one maximum) the scores are identical;
the tests check this, and check S and L against pysteps' own volume and distance code given the same objects.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from nemic.core.errors import ConfigError, DataError

__all__ = ["SALScore", "sal", "sal_objects"]


class SALScore(NamedTuple):
    """The three SAL components, each of shape (...): structure in [-2, 2], amplitude in [-2, 2], location in
    [0, 2]; 0 is perfect."""

    structure: np.ndarray
    amplitude: np.ndarray
    location: np.ndarray


def sal_objects(field: Any, thr_factor: float = 0.067, thr_quantile: float = 0.95, min_size: int = 50,
                connectivity: int = 4) -> tuple[np.ndarray, int]:
    """Label the SAL objects of one field (H, W): ``(labels, n)`` with labels 1..n, 0 outside objects.

    The threshold is ``thr_factor * quantile(field[field > field.min()], thr_quantile)`` (pysteps' convention);
    regions smaller than ``min_size`` pixels are dropped and the rest renumbered in scan order.
    """
    from scipy import ndimage

    x = np.asarray(field, dtype=np.float64)
    above = x[x > x.min()]
    if above.size == 0:
        return np.zeros(x.shape, dtype=np.int64), 0
    thr = thr_factor * np.quantile(above, thr_quantile)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, n = ndimage.label(x >= thr, structure=structure)
    if n == 0:
        return labels.astype(np.int64), 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    new = np.zeros(n + 1, dtype=np.int64)
    new[keep] = np.arange(1, int(keep.sum()) + 1)
    return new[labels], int(keep.sum())


def _centre_of_mass(x: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(x.shape)
    total = x.sum()
    return np.array([(rows * x).sum() / total, (cols * x).sum() / total])


def _object_stats(x: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per object: intensity sum, maximum, intensity-weighted centroid (n, 2)."""
    idx = labels.ravel()
    flat = x.ravel()
    sums = np.bincount(idx, weights=flat, minlength=n + 1)[1:]
    maxima = np.full(n + 1, -np.inf)
    np.maximum.at(maxima, idx, flat)
    rows, cols = np.indices(x.shape)
    cy = np.bincount(idx, weights=flat * rows.ravel(), minlength=n + 1)[1:]
    cx = np.bincount(idx, weights=flat * cols.ravel(), minlength=n + 1)[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        centroids = np.stack([cy / sums, cx / sums], axis=-1)
    return sums, maxima[1:], centroids


def _scaled_volume(sums: np.ndarray, maxima: np.ndarray) -> float:
    if sums.size == 0 or np.all(sums == 0):
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        vol = np.where(sums == 0, 0.0, sums * (sums / maxima))
    return float(np.sum(vol) / np.sum(sums))


def _weighted_distance(x: np.ndarray, sums: np.ndarray, centroids: np.ndarray) -> float:
    if sums.size == 0:
        return float("nan")
    c = _centre_of_mass(x)
    dist = np.hypot(centroids[:, 1] - c[1], centroids[:, 0] - c[0])
    return float(np.sum(sums * dist) / np.sum(sums))


def _sal_one(f: np.ndarray, o: np.ndarray, thr_factor: float, thr_quantile: float, min_size: int,
             connectivity: int) -> tuple[float, float, float]:
    dmax = np.hypot(*o.shape)
    stats = []
    for x in (f, o):
        labels, n = sal_objects(x, thr_factor, thr_quantile, min_size, connectivity)
        stats.append(_object_stats(x, labels, n))
    (sf, mf, cf), (so, mo, co) = stats
    vf, vo = _scaled_volume(sf, mf), _scaled_volume(so, mo)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (vf - vo) / (0.5 * (vf + vo))
        a = (f.mean() - o.mean()) / (0.5 * (f.mean() + o.mean()))
        l1 = np.hypot(*(_centre_of_mass(f) - _centre_of_mass(o))) / dmax
    l2 = 2.0 * abs(_weighted_distance(o, so, co) - _weighted_distance(f, sf, cf)) / dmax
    return float(s), float(a), float(l1 + l2)


def sal(forecast: Any, observation: Any, thr_factor: float = 0.067, thr_quantile: float = 0.95,
        min_size: int = 50, connectivity: int = 4) -> SALScore:
    """SAL of fields (..., H, W) (non-negative, e.g. mm/h); see the module docstring.

    Args:
        forecast, observation: same shape, NaN refused (numpy or JAX arrays; computed on the host).
        thr_factor, thr_quantile: object threshold ``thr_factor * quantile(non-minimum values, thr_quantile)``
            (Wernli et al. 2009: 1/15 of the 95th percentile; pysteps' default factor 0.067).
        min_size: smallest object in pixels (pysteps' thunderstorm-detection default 50).
        connectivity: 4 (pysteps) or 8.

    Returns:
        :class:`SALScore` of arrays with the leading shape (...). Components are NaN where undefined, as pysteps:
        S when neither field has an object, L when one of them has none, A when both fields are dry.
    """
    f = np.asarray(forecast, dtype=np.float64)
    o = np.asarray(observation, dtype=np.float64)
    if f.ndim < 2 or f.shape != o.shape:
        raise DataError(f"forecast {f.shape} and observation {o.shape} must be fields (..., H, W) of one shape")
    for name, x in (("forecast", f), ("observation", o)):
        if not np.all(np.isfinite(x)):
            raise DataError(f"{name} contains {int(np.sum(~np.isfinite(x)))} NaN/inf value(s); SAL needs finite fields")
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if not 0 < thr_quantile <= 1 or not thr_factor > 0:
        raise ConfigError(f"need thr_factor > 0 and thr_quantile in (0, 1], got {thr_factor!r}, {thr_quantile!r}")
    lead = f.shape[:-2]
    ff = f.reshape((-1,) + f.shape[-2:])
    oo = o.reshape((-1,) + o.shape[-2:])
    out = np.array([_sal_one(a, b, thr_factor, thr_quantile, min_size, connectivity) for a, b in zip(ff, oo)])
    out = out.reshape(lead + (3,))
    return SALScore(out[..., 0], out[..., 1], out[..., 2])

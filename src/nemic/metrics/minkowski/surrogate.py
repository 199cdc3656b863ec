r"""Pure functions around the learned Minkowski surrogate: the geometric constraints it must satisfy, and scores.

The network itself is :class:`nemic.nn.minkowski_surrogate.MinkowskiSurrogate`; its fitting is
:func:`nemic.train.surrogate.train_surrogate`. This module imports nothing above ``core`` (metrics are pure
functions of arrays): the least perimeter of a set of pixels (Harary & Harborth 1976, "Extremal animals",
J. Combin. Inform. System Sci. 1, 1-8), the constraint checker, the stacking of measures and the R^2 score
(Quarenghi, Cotsakis & Beucler 2026, arXiv:2604.11422).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import DataError
from nemic.metrics.minkowski.exact import MinkowskiMeasures

__all__ = ["MEASURE_NAMES", "constraint_violations", "polyomino_min_perimeter", "r2_scores", "stack_measures"]

MEASURE_NAMES = ("area", "perimeter", "euler", "components")


def _check_finite_array(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        n_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise DataError(f"{name} contains {n_bad} NaN/inf value(s); finite values are required")


def polyomino_min_perimeter(area: Any) -> jax.Array:
    r"""Least perimeter (in pixel edges) of a union of ``area`` unit squares: :math:`2\lceil 2\sqrt{n}\rceil`, 0 at 0.

    Harary & Harborth (1976), "Extremal animals", J. Combin. Inform. System Sci. 1, 1-8. For real ``area`` the
    same formula is used (non-decreasing in ``area``); negative areas give 0.
    """
    a = jnp.maximum(jnp.asarray(area), 0.0)
    return jnp.where(a > 0, 2.0 * jnp.ceil(2.0 * jnp.sqrt(a) - 1e-9), 0.0)


def stack_measures(m: MinkowskiMeasures) -> jax.Array:
    """(area, perimeter, euler, components) as one array (..., 4, T) of floats."""
    return jnp.stack([jnp.asarray(v, dtype=float) for v in (m.area, m.perimeter, m.euler, m.components)], axis=-2)


def constraint_violations(measures: Any, domain: float, atol: float = 1e-6) -> dict[str, np.ndarray]:
    """Which (sample, threshold) pairs break a geometric constraint; boolean arrays (..., T) by constraint.

    Args:
        measures: array (..., 4, T) of (area, perimeter, euler, components), e.g. from :func:`stack_measures`.
        domain: number of pixels of a patch.
        atol: tolerance (in pixels / edges / counts).

    Constraints: ``area_range`` (0 <= A <= D), ``area_monotone`` (A non-increasing in the threshold),
    ``perimeter_bound`` (P >= 2 ceil(2 sqrt(A))), ``components_nonnegative`` (N >= 0), ``holes_nonnegative``
    (chi <= N); ``any`` is their union.
    """
    m = np.asarray(measures, dtype=float)
    if m.ndim < 2 or m.shape[-2] != 4:
        raise DataError(f"measures must have shape (..., 4, T), got {m.shape}")
    _check_finite_array("measures", m)
    if not (np.isfinite(domain) and domain > 0):
        raise DataError(f"domain must be a finite number of pixels > 0, got {domain!r}")
    a, p, e, n = (m[..., i, :] for i in range(4))
    out = {
        "area_range": (a < -atol) | (a > domain + atol),
        "area_monotone": np.concatenate([np.zeros_like(a[..., :1], bool), a[..., 1:] > a[..., :-1] + atol], -1),
        "perimeter_bound": p < np.asarray(polyomino_min_perimeter(a)) - atol,
        "components_nonnegative": n < -atol,
        "holes_nonnegative": e > n + atol,
    }
    out["any"] = np.logical_or.reduce([v for v in out.values()])
    return out


def r2_scores(pred: Any, target: Any) -> np.ndarray:
    r"""Coefficient of determination :math:`1 - \sum (y - \hat y)^2 / \sum (y - \bar y)^2` over the first axis.

    (N, ...) x (N, ...) -> (...); NaN where the target is constant.
    """
    p, t = np.asarray(pred, float), np.asarray(target, float)
    if p.shape != t.shape or p.ndim < 1 or p.shape[0] < 2:
        raise DataError(f"pred and target need the same shape (N >= 2, ...), got {p.shape} and {t.shape}")
    _check_finite_array("pred", p)
    _check_finite_array("target", t)
    ss_res = np.sum((t - p) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)

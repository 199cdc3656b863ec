"""Initial-state perturbations of QG ensemble forecasts: random-field perturbations from the climate, with an
amplitude fitted on training forecasts.

A closure's noise alone, started from exact initial states, cannot give the spread that a coarse model's error
has from the first hours (measured in docs/uncertainty.md: the SPPT-like closure's spread is a tenth of its
error at 6 h). Operational ensembles perturb the initial states as well. The perturbations here are the random
field perturbations of Magnusson, Nycander & Källén 2009 (Tellus A 61, 194, doi:10.1111/j.1600-0870.2008.00385.x):
the scaled difference of two states drawn at random from the model's climate,
``delta = a (q_i - q_j) / sqrt(2)``, which has the climate's spatial structure and balance, zero mean, and a
standard deviation of ``a`` times the climate's. The amplitude ``a`` is chosen among candidates by the
spread/error ratio of forecasts from the training period (never the verification period): the candidate whose
ratio over the scored leads stays closest to 1 in the worst case (smallest ``max |log ratio|``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_positive

__all__ = ["climate_perturbations", "choose_amplitude"]


def climate_perturbations(pool: np.ndarray, n: int, amplitude: float, key: jax.Array) -> np.ndarray:
    """``n`` random-field perturbations ``amplitude (pool[i] - pool[j]) / sqrt(2)`` with ``i != j`` drawn at
    random from the climate states ``pool`` (S, ...), shape (n, ...).

    Raises:
        DataError: fewer than two states in ``pool``. ConfigError: a negative amplitude.
    """
    check_positive("amplitude", amplitude, allow_zero=True)
    pool = np.asarray(pool)
    if pool.shape[0] < 2:
        raise DataError(f"random-field perturbations need at least 2 climate states, got {pool.shape[0]}")
    k1, k2 = jax.random.split(key)
    i = np.asarray(jax.random.randint(k1, (n,), 0, pool.shape[0]))
    # j != i: shift by 1..S-1
    j = (i + np.asarray(jax.random.randint(k2, (n,), 1, pool.shape[0]))) % pool.shape[0]
    return amplitude * (pool[i] - pool[j]) / np.sqrt(2.0)


def choose_amplitude(candidates: Sequence[float], ratio_of: Callable[[float], np.ndarray]
                     ) -> tuple[float, dict[str, Any]]:
    """The candidate amplitude whose spread/error ratios ``ratio_of(a)`` (over the scored leads) have the smallest
    ``max |log ratio|``; returns it and {candidate: [ratios]} as a record."""
    if not candidates:
        raise ConfigError("choose_amplitude needs at least one candidate amplitude")
    record: dict[str, Any] = {}
    best, best_cost = None, np.inf
    for a in candidates:
        r = np.asarray(ratio_of(float(a)), dtype=float)
        record[f"{float(a):g}"] = r.tolist()
        cost = float(np.max(np.abs(np.log(np.maximum(r, 1e-12))))) if np.all(np.isfinite(r)) else np.inf
        if cost < best_cost:
            best, best_cost = float(a), cost
    if best is None:
        raise DataError("every candidate amplitude gave non-finite spread/error ratios")
    return best, record

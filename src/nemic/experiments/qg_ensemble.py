"""Ensemble forecasts of the stochastic QG recipe: initial states, random-field perturbations from the climate
with an amplitude fitted on training forecasts, vectorised ensembles, and their scores against lead time.

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

import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError, check_positive
from nemic.core.rollout import ensemble_simulate
from nemic.io.terminal import progress as progress_reporter
from nemic.metrics.probabilistic import spread_error_by_lead
from nemic.metrics.verification_ensemble import crps_ensemble
from nemic.models.qg import QGState

__all__ = ["climate_perturbations", "choose_amplitude", "ensemble_forecasts", "fit_starts", "forecast_scores",
           "forecast_starts"]


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


def forecast_starts(inp: dict[str, Any], n: int) -> np.ndarray:
    """Indices of ``n`` initial states spread over the test part of the forecast data."""
    T = inp["fs"]["q"].shape[0]
    last = T - 1 - inp["n_lead"]
    return np.unique(np.linspace(inp["n_train"], last, n).round().astype(int))


def fit_starts(inp: dict[str, Any], n: int) -> np.ndarray:
    """Indices of ``n`` initial states spread over the training part of the forecast data."""
    last = inp["n_train"] - 1 - inp["n_lead"]
    if last < 0:
        raise DataError(f"the training part of the forecast data ({inp['n_train']} snapshots) is too short for "
                        f"{inp['n_lead']}-snapshot forecasts that fit the initial perturbations")
    return np.unique(np.linspace(0, last, n).round().astype(int))


def ensemble_forecasts(model, inp: dict[str, Any], starts: np.ndarray, n_members: int, key,
                       progress: bool = False, label: str = "forecasts", amplitude: float = 0.0,
                       ic_key=None) -> tuple[np.ndarray, np.ndarray]:
    """Members (M, N, L, 2, ny, nx) from the forecast data's states at ``starts`` (exact initial states, plus
    random-field perturbations of ``amplitude`` drawn with ``ic_key`` from the long data's climate), saved every
    forecast-data interval up to the maximum lead; and blow-up flags (M, N). One compiled, vectorised call per
    progress segment (:func:`~nemic.core.rollout.ensemble_simulate`)."""
    q = np.asarray(inp["fs"]["q"].values)
    lo = inp["lo"]
    n, m = len(starts), n_members
    x0 = np.repeat(q[starts][:, None], m, axis=1).reshape((n * m,) + q.shape[1:])
    if amplitude > 0:
        x0 = x0 + climate_perturbations(np.asarray(inp["ds"]["q"].values), n * m, amplitude, ic_key).astype(x0.dtype)
    q0 = jnp.asarray(x0)
    keys = jax.random.split(key, n * m) if model.stochastic else None
    with progress_reporter(label, enabled=progress) as report:
        tr = ensemble_simulate(model, lo.default_stepper(), QGState.from_q(q0), keys=keys, dt=inp["dt"],
                               n_steps=inp["n_lead"] * inp["every"], save_every=inp["every"], observe=lo.observe,
                               progress=report, batch_size=1)
    x = np.asarray(tr.states.q).reshape((n, m) + tr.states.q.shape[1:])
    return np.moveaxis(x, 1, 0), np.asarray(tr.blowup_step).reshape(n, m).T >= 0


def forecast_scores(members: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Fair CRPS (plain CRPS = MAE for one member), ensemble-mean RMSE, spread and spread/error against lead
    (normalised PV, both layers), and the spread/error ratio of each layer."""
    s = scale[:, None, None]
    e, y = jnp.asarray(members / s), jnp.asarray(truth / s)
    fair = members.shape[0] > 1
    crps = np.asarray(jnp.mean(crps_ensemble(e, y, fair=fair), axis=(0, 2, 3, 4)))
    out = {"crps": crps}
    if fair:
        se = spread_error_by_lead(e, y, lead_axis=1)
        out.update({k: np.asarray(v) for k, v in se.items()})
        for i in (0, 1):
            out[f"ratio_layer{i + 1}"] = np.asarray(spread_error_by_lead(e[:, :, :, i], y[:, :, i],
                                                                         lead_axis=1)["ratio"])
    else:
        out["rmse"] = np.sqrt(np.mean((members[0] / s - truth / s) ** 2, axis=(0, 2, 3, 4)))
        out["spread"] = np.zeros_like(out["rmse"])
        out["ratio"] = np.zeros_like(out["rmse"])
    return out

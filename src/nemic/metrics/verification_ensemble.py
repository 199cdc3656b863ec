r"""Ensemble verification: CRPS, spread/error ratio, rank histogram (pure ``jnp``, jittable, batched).

Ensembles carry an explicit member axis (``member_axis``, default 0, as nemic's ensemble rollouts); the
observation has the ensemble's shape without it. Re-exported by :mod:`nemic.metrics.verification`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError, check_finite, is_concrete

__all__ = ["crps_ensemble", "rank_histogram", "spread_error"]


def _ensemble(ensemble: Any, observation: Any, member_axis: int) -> tuple[jax.Array, jax.Array]:
    e, o = jnp.asarray(ensemble), jnp.asarray(observation)
    if e.ndim < 1:
        raise DataError(f"ensemble must have a member axis, got shape {e.shape}")
    e = jnp.moveaxis(e, member_axis, 0)
    if e.shape[1:] != o.shape:
        raise DataError(f"ensemble {tuple(jnp.asarray(ensemble).shape)} (members on axis {member_axis}) and "
                        f"observation {o.shape} do not match")
    if e.shape[0] < 1:
        raise DataError("the ensemble has no members")
    if is_concrete((e, o)):
        check_finite("ensemble", e)
        check_finite("observation", o)
    dtype = jnp.result_type(e.dtype, o.dtype, jnp.float32)
    return e.astype(dtype), o.astype(dtype)


def crps_ensemble(ensemble: Any, observation: Any, member_axis: int = 0, fair: bool = False) -> jax.Array:
    r"""Continuous ranked probability score of an ensemble at each point (Gneiting & Raftery 2007,
    J. Am. Stat. Assoc. 102, 359, doi:10.1198/016214506000001437).

    .. math:: \mathrm{CRPS} = \frac{1}{M}\sum_i |x_i - y| - \frac{1}{2M^2}\sum_{i,j} |x_i - x_j|

    (the "energy" form :math:`E|X - y| - \tfrac12 E|X - X'|` of the ensemble's empirical distribution); with
    ``fair`` the second sum is divided by :math:`2M(M-1)` instead (the fair CRPS, Ferro 2014, Q. J. R. Meteorol.
    Soc. 140, 1917, doi:10.1002/qj.2270). The pair sum is computed in :math:`O(M \log M)` from the sorted
    members: :math:`\sum_{i,j}|x_i - x_j| = 2\sum_k (2k - M - 1) x_{(k)}`. Equals ``scoringrules.crps_ensemble``
    with ``estimator="nrg"`` (``"fair"``). Units of the data; shape of the observation.
    """
    e, o = _ensemble(ensemble, observation, member_axis)
    m = e.shape[0]
    if fair and m < 2:
        raise ConfigError("the fair CRPS needs at least 2 members")
    skill = jnp.mean(jnp.abs(e - o), axis=0)
    s = jnp.sort(e, axis=0)
    k = jnp.arange(1, m + 1, dtype=e.dtype).reshape((m,) + (1,) * o.ndim)
    pair_sum = 2.0 * jnp.sum((2.0 * k - m - 1.0) * s, axis=0)
    spread = pair_sum / (2.0 * m * (m - 1)) if fair else pair_sum / (2.0 * m * m)
    return skill - spread


def spread_error(ensemble: Any, observation: Any, member_axis: int = 0) -> jax.Array:
    r"""Spread/error ratio of an ensemble, corrected for the ensemble size (Fortin et al. 2014, J. Hydrometeor.
    15, 1708, doi:10.1175/JHM-D-14-0008.1).

    .. math:: \frac{\sqrt{(M+1)/M}\;\sqrt{\overline{s^2}}}{\sqrt{\overline{(\bar x - y)^2}}}

    with :math:`s^2` the unbiased member variance at each point, :math:`\bar x` the ensemble mean and the bars
    means over all points. About 1 for a reliable ensemble, below 1 for an under-dispersive one. A scalar.
    """
    e, o = _ensemble(ensemble, observation, member_axis)
    m = e.shape[0]
    if m < 2:
        raise ConfigError("spread/error needs at least 2 members")
    var = jnp.mean(jnp.var(e, axis=0, ddof=1))
    mse = jnp.mean((jnp.mean(e, axis=0) - o) ** 2)
    return jnp.sqrt((m + 1.0) / m * var / mse)


def rank_histogram(ensemble: Any, observation: Any, member_axis: int = 0, *, key: jax.Array | None = None) -> jax.Array:
    r"""Rank histogram (Talagrand diagram; Hamill 2001, Mon. Wea. Rev. 129, 550,
    doi:10.1175/1520-0493(2001)129<0550:IORHFV>2.0.CO;2): how often the observation falls at each rank.

    The rank of the observation is the number of members below it, in 0..M. Ties (e.g. dry pixels where the
    observation and several members are 0) are broken at random when ``key`` is given: the observation takes a
    uniformly drawn place among the members equal to it (Hamill 2001, section 2). Without a key ties count as
    "below" nothing (the lowest tied rank), which biases rain fields with many zeros towards low ranks.

    Returns:
        the relative frequencies of ranks 0..M, shape (M + 1,), summing to 1 over all points.
    """
    e, o = _ensemble(ensemble, observation, member_axis)
    m = e.shape[0]
    below = jnp.sum(e < o, axis=0)
    if key is not None:
        ties = jnp.sum(e == o, axis=0)
        u = jax.random.uniform(key, o.shape, dtype=e.dtype)
        below = below + jnp.floor(u * (ties + 1)).astype(below.dtype)
    counts = jnp.bincount(below.ravel(), length=m + 1)
    return counts / jnp.maximum(jnp.sum(counts), 1)

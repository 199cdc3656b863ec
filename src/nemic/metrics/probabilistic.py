r"""Probabilistic scores of ensembles beyond the CRPS: energy score, spread and error against lead time,
reliability, and the analytic CRPS of a Gaussian (pure ``jnp``: usable as losses and for evaluation).

Members are on ``member_axis`` (0 by default, as nemic's ensemble rollouts); the observation has the ensemble's
shape without it. The CRPS itself is :func:`nemic.metrics.verification_ensemble.crps_ensemble` (re-exported
here), which these functions complement; every estimator is checked against ``scoringrules`` in
``tests/metrics/test_probabilistic.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.stats as jstats

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.verification_ensemble import _ensemble, crps_ensemble, rank_histogram, spread_error

__all__ = ["crps_ensemble", "crps_gaussian", "ensemble_mean_rmse", "ensemble_spread", "energy_score",
           "rank_histogram", "reliability", "spread_error", "spread_error_by_lead"]


def _safe_norm(d: jax.Array, axis: int = -1) -> jax.Array:
    """Euclidean norm along ``axis`` whose gradient at 0 is 0 instead of NaN (pairs i = j, perfect forecasts)."""
    s = jnp.sum(d * d, axis=axis)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def energy_score(ensemble: Any, observation: Any, member_axis: int = 0, fair: bool = False) -> jax.Array:
    r"""Energy score of an ensemble of vectors (Gneiting & Raftery 2007, J. Am. Stat. Assoc. 102, 359,
    doi:10.1198/016214506000001437), the multivariate CRPS:

    .. math:: \mathrm{ES} = \frac1M\sum_i \lVert x_i - y\rVert - \frac{1}{2M^2}\sum_{i,j}\lVert x_i - x_j\rVert

    with ``fair`` the pair sum divided by :math:`2M(M-1)` (unbiased for the score of the distribution the members
    are drawn from; Ferro 2014, doi:10.1002/qj.2270). The vector is the **last** axis; the score has the
    observation's shape without it. Equals ``scoringrules.energy_score(obs, fct, m_axis, -1, estimator="nrg"``
    / ``"fair")``. Gradients are finite when members coincide.

    Args:
        ensemble: (M, ..., D) with members on ``member_axis``.
        observation: (..., D).
        fair: the fair estimator (needs M >= 2).
    """
    e, o = _ensemble(ensemble, observation, member_axis)
    if o.ndim < 1:
        raise DataError("the energy score needs vectors: the observation has no variable (last) axis")
    m = e.shape[0]
    if fair and m < 2:
        raise ConfigError("the fair energy score needs at least 2 members")
    skill = jnp.mean(_safe_norm(e - o[None]), axis=0)
    pair = _safe_norm(e[:, None] - e[None, :])  # (M, M, ...)
    pair_sum = jnp.sum(pair, axis=(0, 1))
    spread = pair_sum / (2.0 * m * (m - 1)) if fair else pair_sum / (2.0 * m * m)
    return skill - spread


def crps_gaussian(mu: Any, sigma: Any, observation: Any) -> jax.Array:
    r"""CRPS of the normal distribution :math:`N(\mu, \sigma^2)` for observation :math:`y` (Gneiting et al. 2005,
    Mon. Wea. Rev. 133, 1098, doi:10.1175/MWR2904.1): :math:`\sigma[z(2\Phi(z) - 1) + 2\varphi(z) - 1/\sqrt\pi]`
    with :math:`z = (y - \mu)/\sigma`. Broadcasts; units of the data."""
    mu, sigma, y = jnp.asarray(mu), jnp.asarray(sigma), jnp.asarray(observation)
    z = (y - mu) / sigma
    return sigma * (z * (2.0 * jstats.norm.cdf(z) - 1.0) + 2.0 * jstats.norm.pdf(z) - 1.0 / jnp.sqrt(jnp.pi))


def ensemble_mean_rmse(ensemble: Any, observation: Any, member_axis: int = 0) -> jax.Array:
    r"""Root-mean-square error of the ensemble mean over all points, :math:`\sqrt{\overline{(\bar x - y)^2}}`."""
    e, o = _ensemble(ensemble, observation, member_axis)
    return jnp.sqrt(jnp.mean((jnp.mean(e, axis=0) - o) ** 2))


def ensemble_spread(ensemble: Any, observation: Any | None = None, member_axis: int = 0) -> jax.Array:
    r"""Ensemble spread comparable with :func:`ensemble_mean_rmse`: :math:`\sqrt{(M+1)/M}\sqrt{\overline{s^2}}`
    with :math:`s^2` the unbiased member variance (Fortin et al. 2014, J. Hydrometeor. 15, 1708,
    doi:10.1175/JHM-D-14-0008.1); for a reliable ensemble it matches the RMSE of the ensemble mean."""
    e = jnp.moveaxis(jnp.asarray(ensemble), member_axis, 0)
    if observation is not None:
        e, _ = _ensemble(ensemble, observation, member_axis)
    m = e.shape[0]
    if m < 2:
        raise ConfigError("the ensemble spread needs at least 2 members")
    return jnp.sqrt((m + 1.0) / m * jnp.mean(jnp.var(e, axis=0, ddof=1)))


def spread_error_by_lead(ensemble: Any, observation: Any, lead_axis: int = 0, member_axis: int = 0
                         ) -> dict[str, jax.Array]:
    """Spread, ensemble-mean RMSE and their ratio at every lead time.

    Args:
        ensemble: members on ``member_axis``; ``lead_axis`` indexes the observation's axes (i.e. after the member
            axis is removed), e.g. ensemble (M, L, N, K) and observation (L, N, K) with ``lead_axis=0``.
        observation: the verifying truth.

    Returns:
        ``{"spread": (L,), "rmse": (L,), "ratio": (L,)}``; the ratio is :func:`spread_error` at each lead.
    """
    e, o = _ensemble(ensemble, observation, member_axis)
    if e.shape[0] < 2:
        raise ConfigError("spread/error needs at least 2 members")
    e = jnp.moveaxis(e, lead_axis + 1, 1)
    o = jnp.moveaxis(o, lead_axis, 0)
    m = e.shape[0]
    axes = tuple(range(1, o.ndim))
    var = jnp.mean(jnp.var(e, axis=0, ddof=1), axis=axes)
    mse = jnp.mean((jnp.mean(e, axis=0) - o) ** 2, axis=axes)
    spread = jnp.sqrt((m + 1.0) / m * var)
    rmse = jnp.sqrt(mse)
    return {"spread": spread, "rmse": rmse, "ratio": spread / rmse}


def reliability(ensemble: Any, observation: Any, threshold: float, member_axis: int = 0,
                n_bins: int | None = None) -> dict[str, jax.Array]:
    r"""Reliability diagram of the event "value > threshold" (Wilks 2011, Statistical Methods in the Atmospheric
    Sciences, 3rd ed., section 8.4.4): the forecast probability is the fraction of members above the threshold;
    points are grouped by it and the observed frequency of the event is counted in each group.

    Args:
        n_bins: number of probability bins on [0, 1] (default M + 1: one bin per possible ensemble fraction).

    Returns:
        ``{"forecast_probability": (n_bins,), "observed_frequency": (n_bins,), "count": (n_bins,)}``; the mean
        forecast probability and observed frequency in each bin (NaN where a bin is empty), and the number of
        points in it. A reliable ensemble has ``observed_frequency == forecast_probability``.
    """
    e, o = _ensemble(ensemble, observation, member_axis)
    m = e.shape[0]
    n_bins = m + 1 if n_bins is None else int(n_bins)
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    p = jnp.mean(e > threshold, axis=0).ravel()
    hit = (o > threshold).ravel().astype(e.dtype)
    idx = jnp.clip(jnp.floor(p * n_bins).astype(jnp.int32), 0, n_bins - 1)
    if n_bins == m + 1:
        idx = jnp.round(p * m).astype(jnp.int32)
    count = jnp.bincount(idx, length=n_bins).astype(e.dtype)
    psum = jnp.bincount(idx, weights=p, length=n_bins)
    hsum = jnp.bincount(idx, weights=hit, length=n_bins)
    safe = jnp.where(count > 0, count, 1.0)
    nan = jnp.asarray(jnp.nan, e.dtype)
    return {"forecast_probability": jnp.where(count > 0, psum / safe, nan),
            "observed_frequency": jnp.where(count > 0, hsum / safe, nan), "count": count}

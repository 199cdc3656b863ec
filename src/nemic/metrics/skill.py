"""Forecast skill: RMSE against lead time and the lead time at which skill is lost."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import DataError, check_finite


def rmse(forecast: jax.Array, truth: jax.Array, axis=None) -> jax.Array:
    """Root-mean-square error ``sqrt(mean((forecast - truth)^2))`` over ``axis`` (all axes by default).

    Concrete inputs with NaN/inf raise :class:`DataError` (traced ones, inside ``jit``, are not checked).
    """
    check_finite("forecast", forecast)
    check_finite("truth", truth)
    return jnp.sqrt(jnp.mean((forecast - truth) ** 2, axis=axis))


def forecast_rmse(forecasts: jax.Array, truths: jax.Array) -> jax.Array:
    """RMSE against lead time over many forecasts.

    Args:
        forecasts, truths: shape (n_forecasts, n_leads, *state_shape).

    Returns:
        shape (n_leads,): ``sqrt(mean over forecasts and state of squared error)`` at each lead.
    """
    if jnp.shape(forecasts) != jnp.shape(truths) or jnp.ndim(forecasts) < 2:
        raise DataError(f"forecasts and truths need equal shapes (n, leads, ...), got {jnp.shape(forecasts)}, "
                        f"{jnp.shape(truths)}")
    check_finite("forecasts", forecasts)
    check_finite("truths", truths)
    forecasts, truths = jnp.asarray(forecasts), jnp.asarray(truths)
    err = (forecasts - truths) ** 2
    return jnp.sqrt(jnp.mean(err.reshape(err.shape[0], err.shape[1], -1), axis=(0, 2)))


def skill_lost_lead_time(lead_times, rmse_curve, threshold: float) -> float:
    """First lead time at which the RMSE reaches ``threshold`` (linear interpolation); ``inf`` if never.

    A common threshold is the climatological standard deviation of the variable: the RMSE of two independent
    draws from the climate saturates at sqrt(2) times it, so crossing one standard deviation marks the loss of
    most of the skill. Closures of Lorenz-96 are compared by such error-growth curves in Arnold, Moroz & Palmer
    (2013), Phil. Trans. R. Soc. A 371, doi:10.1098/rsta.2011.0479.
    """
    lead = np.asarray(lead_times, dtype=float)
    e = np.asarray(rmse_curve, dtype=float)
    if lead.ndim != 1 or lead.shape != e.shape or lead.size == 0:
        raise DataError(f"lead_times and rmse_curve must be 1-D of the same length, got {lead.shape}, {e.shape}")
    if not (np.all(np.isfinite(lead)) and np.all(np.isfinite(e)) and np.isfinite(threshold)):
        raise DataError("lead_times, rmse_curve and threshold must be finite (no NaN/inf)")
    above = np.nonzero(e >= threshold)[0]
    if above.size == 0:
        return float("inf")
    i = int(above[0])
    if i == 0:
        return float(lead[0])
    f = (threshold - e[i - 1]) / (e[i] - e[i - 1])
    return float(lead[i - 1] + f * (lead[i] - lead[i - 1]))

"""Host-side validation shared by the exact, relaxed and learned Minkowski measures."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, is_concrete

NAN_POLICIES = ("raise", "background")
CONNECTIVITIES = (4, 8)


def check_field(field: Any, nan_policy: str) -> jax.Array:
    """Return ``field`` as a floating JAX array of shape (..., H, W), raising on bad input.

    NaN handling: with ``nan_policy="raise"`` a concrete field holding NaN is refused; with ``"background"``
    NaN pixels count as background (a NaN never compares ``>=`` a threshold, so nothing else is needed).
    Traced fields (inside ``jit``) cannot be inspected and behave as ``"background"``.
    """
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if is_concrete(field):
        arr = np.asarray(field)
        if arr.ndim < 2:
            raise DataError(f"field must have at least 2 dimensions (..., H, W), got shape {arr.shape}")
        if arr.shape[-1] < 1 or arr.shape[-2] < 1:
            raise DataError(f"field must have H >= 1 and W >= 1, got shape {arr.shape}")
        if arr.dtype.kind not in "fiub":
            raise DataError(f"field must be numeric, got dtype {arr.dtype}")
        if nan_policy == "raise" and arr.dtype.kind == "f" and np.isnan(arr).any():
            n = int(np.isnan(arr).sum())
            raise DataError(
                f"field contains {n} NaN value(s); pass nan_policy='background' to treat them as background"
            )
        if arr.dtype.kind == "f" and np.isinf(arr).any() and nan_policy == "raise":
            # +inf is simply above every threshold; allowed, but -inf/+inf are rarely intended
            pass
    field = jnp.asarray(field)
    if field.ndim < 2:
        raise DataError(f"field must have at least 2 dimensions (..., H, W), got shape {field.shape}")
    if not jnp.issubdtype(field.dtype, jnp.floating):
        field = field.astype(jnp.result_type(float))
    return field


def check_thresholds(thresholds: Any) -> jax.Array:
    """Return thresholds as a 1-D array of shape (T,), strictly increasing and finite (checked when concrete)."""
    if is_concrete(thresholds):
        arr = np.atleast_1d(np.asarray(thresholds, dtype=float))
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"thresholds must be a non-empty 1-D sequence, got shape {np.shape(thresholds)}")
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"thresholds must be finite (no NaN/inf), got {arr.tolist()}")
        if arr.size > 1 and not np.all(np.diff(arr) > 0):
            raise ConfigError(f"thresholds must be strictly increasing, got {arr.tolist()}")
    thr = jnp.atleast_1d(jnp.asarray(thresholds))
    if thr.ndim != 1:
        raise ConfigError(f"thresholds must be 1-D, got shape {thr.shape}")
    return thr


def check_connectivity(connectivity: Any) -> int:
    """Return the connectivity (4 or 8) or raise :class:`ConfigError`."""
    if connectivity not in CONNECTIVITIES or isinstance(connectivity, bool):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return int(connectivity)


def check_pixel_size(pixel_size: Any) -> tuple[float, float] | None:
    """Return ``(dy, dx)`` from a scalar or a pair, or ``None``; both must be finite and > 0."""
    if pixel_size is None:
        return None
    arr = np.atleast_1d(np.asarray(pixel_size, dtype=float))
    if arr.size == 1:
        arr = np.array([arr[0], arr[0]])
    if arr.shape != (2,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError(f"pixel_size must be a number > 0 or a pair (dy, dx) of them, got {pixel_size!r}")
    return float(arr[0]), float(arr[1])

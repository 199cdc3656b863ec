"""Checks of arrays, pytrees and timesteps that raise nemic's errors early, on host values, with a clear message.

The error classes live in :mod:`nemic.errors` (no JAX) and are re-exported here.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from nemic.errors import (BlowUpError, ConfigError, DataError, NemicError, check_int_at_least,  # noqa: F401
                          check_positive)

__all__ = ["BlowUpError", "ConfigError", "DataError", "NemicError", "check_dt", "check_finite",
           "check_int_at_least", "check_positive", "is_concrete"]


def check_finite(name: str, tree: Any) -> None:
    """Raise :class:`DataError` naming the first leaf of ``tree`` that holds NaN or inf.

    Traced values (inside ``jit``) are skipped: validation is for concrete user input.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.core.Tracer):
            continue
        try:
            arr = np.asarray(leaf)
        except Exception:  # noqa: BLE001
            continue
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise DataError(
                f"{name}{jax.tree_util.keystr(path)} contains {n_bad} NaN/inf value(s); "
                "finite values are required"
            )


def is_concrete(x: Any) -> bool:
    """True when ``x`` is not a JAX tracer (so it can be validated on the host)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def check_dt(dt: Any) -> None:
    """Raise :class:`ConfigError` unless the timestep is a finite positive number."""
    if is_concrete(dt):
        v = float(np.asarray(dt))
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"timestep dt must be a finite number > 0, got {dt!r}")

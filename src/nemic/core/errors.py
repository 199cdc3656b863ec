"""Errors raised by nemic and small validation helpers that produce them early, with a clear message.

Every check here runs on concrete (host) values, before anything is traced or compiled, so users see one line
that names the problem instead of a stack trace from inside XLA.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class NemicError(Exception):
    """Base class of all errors raised deliberately by nemic."""


class ConfigError(NemicError, ValueError):
    """A parameter, option or configuration value is impossible or unknown."""


class DataError(NemicError, ValueError):
    """Input data has the wrong shape, variables or values (NaN, inf)."""


class BlowUpError(NemicError, FloatingPointError):
    """A simulation produced NaN or inf.

    Attributes:
        step: index of the first step whose result is not finite (1-based: step 1 maps the initial state
            to the state at ``t0 + dt``).
        time: model time at the end of that step.
        variable: name (pytree path) of the first non-finite state variable.
        trajectory: the trajectory up to and including the last finite saved state.
    """

    def __init__(self, step: int, time: float, variable: str, trajectory: Any = None):
        self.step = int(step)
        self.time = float(time)
        self.variable = variable
        self.trajectory = trajectory
        super().__init__(
            f"simulation blew up at step {self.step} (t = {self.time:g}): "
            f"variable '{variable}' became NaN or inf"
        )


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise :class:`ConfigError` unless every element of ``value`` is a finite number > 0 (>= 0)."""
    try:
        arr = np.asarray(value, dtype=float)
    except Exception:  # noqa: BLE001  (tracers and odd objects are not checked)
        return
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        rel = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {rel}, got {value!r}")


def check_finite(name: str, tree: Any) -> None:
    """Raise :class:`DataError` naming the first leaf of ``tree`` that holds NaN or inf.

    Traced values (inside ``jit``) are skipped: validation is for concrete user input.
    """
    import jax

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
    import jax

    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def check_int_at_least(name: str, value: int, minimum: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= ``minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_dt(dt: Any) -> None:
    """Raise :class:`ConfigError` unless the timestep is a finite positive number."""
    if is_concrete(dt):
        v = float(np.asarray(dt))
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"timestep dt must be a finite number > 0, got {dt!r}")

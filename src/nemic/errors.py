"""Errors raised by nemic and small validation helpers that produce them early, with a clear message.

This module imports no JAX (the command line catches these errors without loading the numerical stack); the
checks of arrays and pytrees are in :mod:`nemic.core.errors`.

Every check here runs on concrete (host) values, before anything is traced or compiled, so users see one line
that names the problem instead of a stack trace from inside XLA.
"""

from __future__ import annotations

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


def check_int_at_least(name: str, value: int, minimum: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= ``minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")

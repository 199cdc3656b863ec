"""Lorenz-96: the one-scale model and the two-scale model with fast subgrid variables.

Equations (non-dimensional; Lorenz 1996, "Predictability: a problem partly solved", Proc. ECMWF Seminar on
Predictability; two-scale form and notation of Wilks 2005, QJRMS 131, 389-407, doi:10.1256/qj.04.03)::

    dX_k/dt     = -X_{k-1} (X_{k-2} - X_{k+1}) - X_k + F - (h c / b) sum_{j=1..J} Y_{j,k}
    dY_{j,k}/dt = -c b Y_{j+1,k} (Y_{j+2,k} - Y_{j-1,k}) - c Y_{j,k} + (h c / b) X_k

with k = 1..K periodic, and the Y variables forming one periodic ring of K*J values (Y_{J+1,k} = Y_{1,k+1}).
The one-scale model drops the coupling term. ``h, b, c, F`` are array fields so that ``jax.grad`` reaches them;
``K`` and ``J`` are taken from the state's shape.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_finite, check_int_at_least, is_concrete
from nemic.core.process import AbstractProcess
from nemic.core.state import AbstractState


class Lorenz96State(AbstractState):
    """State of the one-scale Lorenz-96 model: ``x`` of shape (K,)."""

    x: jax.Array

    cf: ClassVar[dict] = {
        "x": {"dims": ("k",), "units": "1", "long_name": "large-scale Lorenz-96 variable X_k"},
    }


class TwoScaleLorenz96State(AbstractState):
    """State of the two-scale Lorenz-96 model: ``x`` of shape (K,), ``y`` of shape (K, J)."""

    x: jax.Array
    y: jax.Array

    cf: ClassVar[dict] = {
        "x": {"dims": ("k",), "units": "1", "long_name": "large-scale Lorenz-96 variable X_k"},
        "y": {"dims": ("k", "j"), "units": "1", "long_name": "small-scale Lorenz-96 variable Y_jk"},
    }

    @property
    def coarse(self) -> Lorenz96State:
        """The large-scale part, a state of the one-scale model."""
        return Lorenz96State(x=self.x)


def advection_tendency(x: jax.Array) -> jax.Array:
    """The quadratic advection term ``-X_{k-1} (X_{k-2} - X_{k+1})`` on a periodic axis (last axis).

    It conserves ``sum_k X_k^2`` (its inner product with ``x`` vanishes identically).
    """
    return -jnp.roll(x, 1, -1) * (jnp.roll(x, 2, -1) - jnp.roll(x, -1, -1))


def _validate_params(**params) -> None:
    for name, v in params.items():
        if is_concrete(v):
            if not np.all(np.isfinite(np.asarray(v, dtype=float))):
                raise ConfigError(f"Lorenz-96 parameter {name} must be finite, got {v!r}")


def _check_k(k: int) -> None:
    check_int_at_least("K (number of large-scale variables)", k, 4)


class Lorenz96(AbstractProcess):
    """The one-scale Lorenz-96 model ``dX_k/dt = -X_{k-1}(X_{k-2} - X_{k+1}) - X_k + F`` (Lorenz 1996).

    Args:
        F: forcing (non-dimensional), scalar or shape (K,).
    """

    F: jax.Array

    def __init__(self, F: float | jax.Array = 20.0):
        _validate_params(F=F)
        self.F = jnp.asarray(F, dtype=float)

    def tendency(self, state: Lorenz96State, t, key=None) -> Lorenz96State:
        x = state.x
        return Lorenz96State(x=advection_tendency(x) - x + self.F)

    def initial_state(self, K: int, key: jax.Array, scale: float = 1.0) -> Lorenz96State:
        """A random state ``F + scale * N(0, 1)`` of size K (K >= 4)."""
        _check_k(K)
        return Lorenz96State(x=self.F + scale * jax.random.normal(key, (K,)))

    def check_state(self, state: Lorenz96State) -> None:
        """Raise a one-line error if the state has K < 4 or holds NaN/inf."""
        _check_k(int(state.x.shape[-1]))
        check_finite("initial state", state)


class TwoScaleLorenz96(AbstractProcess):
    """The two-scale Lorenz-96 model (Wilks 2005, eqs. 1-2); defaults are Wilks' (h=1, b=10, c=10, F=20).

    Args:
        h: coupling strength; b: spatial-scale ratio; c: time-scale ratio; F: forcing. All non-dimensional
        and differentiable.
    """

    h: jax.Array
    b: jax.Array
    c: jax.Array
    F: jax.Array

    def __init__(self, h=1.0, b=10.0, c=10.0, F=20.0):
        _validate_params(h=h, b=b, c=c, F=F)
        if is_concrete(b) and np.any(np.asarray(b, dtype=float) == 0):
            raise ConfigError("Lorenz-96 parameter b must be non-zero")
        self.h, self.b, self.c, self.F = (jnp.asarray(v, dtype=float) for v in (h, b, c, F))

    @property
    def coupling(self) -> jax.Array:
        """The coupling coefficient h c / b."""
        return self.h * self.c / self.b

    def subgrid_tendency(self, state: TwoScaleLorenz96State) -> jax.Array:
        """The effect of the small scales on X: ``-(h c / b) sum_j Y_{j,k}``, shape (K,)."""
        return -self.coupling * jnp.sum(state.y, axis=-1)

    def tendency(self, state: TwoScaleLorenz96State, t, key=None) -> TwoScaleLorenz96State:
        x, y = state.x, state.y
        K, J = y.shape[-2], y.shape[-1]
        dx = advection_tendency(x) - x + self.F + self.subgrid_tendency(state)
        ring = y.reshape(y.shape[:-2] + (K * J,))
        # -c b Y_{j+1} (Y_{j+2} - Y_{j-1}): the advection of the fast ring, mirrored in index direction
        adv = -self.c * self.b * jnp.roll(ring, -1, -1) * (jnp.roll(ring, -2, -1) - jnp.roll(ring, 1, -1))
        dy = adv.reshape(y.shape) - self.c * y + self.coupling * x[..., :, None]
        return TwoScaleLorenz96State(x=dx, y=dy)

    def initial_state(self, K: int, J: int, key: jax.Array) -> TwoScaleLorenz96State:
        """A random state: X ~ F + N(0, 1), Y ~ 0.1 N(0, 1)."""
        _check_k(K)
        check_int_at_least("J (number of small-scale variables per X)", J, 1)
        kx, ky = jax.random.split(key)
        return TwoScaleLorenz96State(
            x=self.F + jax.random.normal(kx, (K,)), y=0.1 * jax.random.normal(ky, (K, J))
        )

    def check_state(self, state: TwoScaleLorenz96State) -> None:
        """Raise a one-line error for K < 4, inconsistent shapes or NaN/inf."""
        _check_k(int(state.x.shape[-1]))
        if state.y.shape[-2] != state.x.shape[-1]:
            raise ConfigError(
                f"y must have shape (K, J) with K = {state.x.shape[-1]}, got {tuple(state.y.shape)}"
            )
        check_finite("initial state", state)


def as_one_scale(model: TwoScaleLorenz96) -> Lorenz96:
    """The one-scale model with the same forcing (the coarse model whose missing physics a closure supplies)."""
    return Lorenz96(F=model.F)


__all__ = [
    "Lorenz96", "Lorenz96State", "TwoScaleLorenz96", "TwoScaleLorenz96State", "advection_tendency", "as_one_scale",
]

"""Lorenz-96: the one-scale model and the two-scale model with fast subgrid variables.

Equations (non-dimensional; Lorenz 1996, "Predictability: a problem partly solved", Proc. ECMWF Seminar on
Predictability; two-scale form and notation of Wilks 2005, QJRMS 131, 389-407, doi:10.1256/qj.04.03)::

    dX_k/dt     = -X_{k-1} (X_{k-2} - X_{k+1}) - X_k + F - (h c / b) sum_{j=1..J} Y_{j,k}
    dY_{j,k}/dt = -c b Y_{j+1,k} (Y_{j+2,k} - Y_{j-1,k}) - c Y_{j,k} + (h c / b) X_k

with k = 1..K periodic, and the Y variables forming one periodic ring of K*J values (Y_{J+1,k} = Y_{1,k+1}).
The one-scale model drops the coupling term. ``h, b, c, F`` are array fields so that ``jax.grad`` reaches them;
the grid sizes ``K`` and ``J`` are static fields (``None`` accepts any size, taken from the state's shape).
Both models are :class:`~nemic.core.model.AbstractModel` s: ``initial_state(key)``, ``default_stepper()`` (RK4),
parameters to and from dataset attributes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_finite, check_int_at_least, is_concrete
from nemic.core.errors import DataError
from nemic.core.model import AbstractModel
from nemic.core.state import AbstractState
from nemic.core.steppers import RK4, AbstractStepper


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


def _size(name: str, given: int | None, default: int | None, minimum: int) -> int:
    n = given if given is not None else default
    if n is None:
        raise ConfigError(f"{name} is not set: give it to the model (e.g. K=40) or to initial_state")
    check_int_at_least(name, n, minimum)
    return int(n)


def _check_x(state: Any, K: int | None) -> int:
    x = getattr(state, "x", None)
    if x is None or jnp.ndim(x) < 1:
        raise DataError(f"a Lorenz-96 state needs an array field x of shape (K,), got {type(state).__name__}")
    k = int(jnp.shape(x)[-1])
    _check_k(k)
    if K is not None and k != K:
        raise DataError(f"the model has K = {K} large-scale variables, the state has {k}")
    return k


class Lorenz96(AbstractModel):
    """The one-scale Lorenz-96 model ``dX_k/dt = -X_{k-1}(X_{k-2} - X_{k+1}) - X_k + F`` (Lorenz 1996).

    Args:
        F: forcing (non-dimensional), scalar or shape (K,).
        K: number of variables (static grid; any K >= 4, taken from the state, when ``None``).
    """

    F: jax.Array
    K: int | None = eqx.field(static=True)

    def __init__(self, F: float | jax.Array = 20.0, K: int | None = None):
        _validate_params(F=F)
        if K is not None:
            _check_k(K)
        self.F = jnp.asarray(F, dtype=float)
        self.K = None if K is None else int(K)

    @property
    def grid(self) -> int | None:
        return self.K

    def default_stepper(self) -> AbstractStepper:
        return RK4()

    def tendency(self, state: Lorenz96State, t, key=None) -> Lorenz96State:
        x = state.x
        return Lorenz96State(x=advection_tendency(x) - x + self.F)

    def initial_state(self, key: jax.Array | None = None, *, K: int | None = None,
                      scale: float = 1.0) -> Lorenz96State:
        """A random state ``F + scale * N(0, 1)`` of size K (K >= 4; default the model's K)."""
        if key is None:
            raise ConfigError("Lorenz96.initial_state needs a key (its initial state is random)")
        K = _size("K (number of large-scale variables)", K, self.K, 4)
        return Lorenz96State(x=self.F + scale * jax.random.normal(key, (K,)))

    def check_state(self, state: Lorenz96State) -> None:
        """Raise a one-line error if the state has the wrong size, K < 4, or holds NaN/inf."""
        _check_x(state, self.K)
        check_finite("initial state", state)


class TwoScaleLorenz96(AbstractModel):
    """The two-scale Lorenz-96 model (Wilks 2005, eqs. 1-2); defaults are Wilks' (h=1, b=10, c=10, F=20).

    Args:
        h: coupling strength; b: spatial-scale ratio; c: time-scale ratio; F: forcing. All non-dimensional
        and differentiable.
        K, J: numbers of large-scale variables and of small-scale variables per large-scale one (static grid;
            taken from the state when ``None``).
    """

    h: jax.Array
    b: jax.Array
    c: jax.Array
    F: jax.Array
    K: int | None = eqx.field(static=True)
    J: int | None = eqx.field(static=True)

    def __init__(self, h=1.0, b=10.0, c=10.0, F=20.0, K: int | None = None, J: int | None = None):
        _validate_params(h=h, b=b, c=c, F=F)
        if is_concrete(b) and np.any(np.asarray(b, dtype=float) == 0):
            raise ConfigError("Lorenz-96 parameter b must be non-zero")
        if K is not None:
            _check_k(K)
        if J is not None:
            check_int_at_least("J (number of small-scale variables per X)", J, 1)
        self.h, self.b, self.c, self.F = (jnp.asarray(v, dtype=float) for v in (h, b, c, F))
        self.K = None if K is None else int(K)
        self.J = None if J is None else int(J)

    @property
    def grid(self) -> tuple[int | None, int | None]:
        return (self.K, self.J)

    def default_stepper(self) -> AbstractStepper:
        return RK4()

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

    def initial_state(self, key: jax.Array | None = None, *, K: int | None = None,
                      J: int | None = None) -> TwoScaleLorenz96State:
        """A random state: X ~ F + N(0, 1), Y ~ 0.1 N(0, 1) (sizes default to the model's K and J)."""
        if key is None:
            raise ConfigError("TwoScaleLorenz96.initial_state needs a key (its initial state is random)")
        K = _size("K (number of large-scale variables)", K, self.K, 4)
        J = _size("J (number of small-scale variables per X)", J, self.J, 1)
        kx, ky = jax.random.split(key)
        return TwoScaleLorenz96State(
            x=self.F + jax.random.normal(kx, (K,)), y=0.1 * jax.random.normal(ky, (K, J))
        )

    def check_state(self, state: TwoScaleLorenz96State) -> None:
        """Raise a one-line error for K < 4, inconsistent shapes or NaN/inf."""
        k = _check_x(state, self.K)
        y = getattr(state, "y", None)
        if y is None or jnp.ndim(y) < 2 or y.shape[-2] != k:
            raise ConfigError(f"y must have shape (K, J) with K = {k}, got "
                            f"{None if y is None else tuple(jnp.shape(y))}")
        if self.J is not None and y.shape[-1] != self.J:
            raise DataError(f"the model has J = {self.J} small-scale variables per X, the state has {y.shape[-1]}")
        check_finite("initial state", state)


def as_one_scale(model: TwoScaleLorenz96) -> Lorenz96:
    """The one-scale model with the same forcing (the coarse model whose missing physics a closure supplies)."""
    return Lorenz96(F=model.F, K=model.K)


__all__ = [
    "Lorenz96", "Lorenz96State", "TwoScaleLorenz96", "TwoScaleLorenz96State", "advection_tendency", "as_one_scale",
]

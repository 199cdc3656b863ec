"""Time steppers: ``step(process, state, t, dt, stepper_state) -> (state, stepper_state)``.

Steppers know nothing about physics; they only call ``process.tendency`` (and ``implicit_solve`` for IMEX).
Multistep methods keep their history in an explicit *stepper state* (created by ``init``), so a stepper is an
immutable pytree and a rollout is a pure function.

References:
    Hairer, Norsett & Wanner (1993), Solving Ordinary Differential Equations I, 2nd ed., Springer
    (RK4: II.1; Adams-Bashforth: III.1).
    Ascher, Ruuth & Wetton (1995), SIAM J. Numer. Anal. 32, 797-823, doi:10.1137/0732037 (IMEX schemes).
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError
from nemic.core.process import (
    AbstractProcess,
    ImplicitExplicit,
    PyTree,
    tree_axpy,
    tree_zeros_like,
)


class AbstractStepper(eqx.Module):
    """Advance a state by one step of size ``dt``."""

    order: ClassVar[int] = 0  # global order of accuracy

    def init(self, process: AbstractProcess, state: PyTree, t: Any, dt: Any) -> Any:
        """Create the stepper state (history of multistep methods); ``None`` for one-step methods."""
        return None

    @abc.abstractmethod
    def step(
        self, process: AbstractProcess, state: PyTree, t: Any, dt: Any, stepper_state: Any
    ) -> tuple[PyTree, Any]:
        """Return ``(state at t + dt, new stepper state)``."""


class ForwardEuler(AbstractStepper):
    """Explicit (forward) Euler: ``x + dt f(x, t)``. First order."""

    order: ClassVar[int] = 1

    def step(self, process, state, t, dt, stepper_state):
        return tree_axpy(dt, process.tendency(state, t), state), stepper_state


class RK4(AbstractStepper):
    """The classical fourth-order Runge-Kutta method (Hairer et al. 1993, Table II.1.2)."""

    order: ClassVar[int] = 4

    def step(self, process, state, t, dt, stepper_state):
        f = process.tendency
        k1 = f(state, t)
        k2 = f(tree_axpy(dt / 2, k1, state), t + dt / 2)
        k3 = f(tree_axpy(dt / 2, k2, state), t + dt / 2)
        k4 = f(tree_axpy(dt, k3, state), t + dt)
        incr = jax.tree_util.tree_map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4)
        return tree_axpy(dt, incr, state), stepper_state


class AB3State(eqx.Module):
    """History of the third-order Adams-Bashforth method: the two previous tendencies and how many exist."""

    f_prev: PyTree
    f_prev2: PyTree
    level: jax.Array  # number of stored tendencies (0, 1 or 2)


class AB3(AbstractStepper):
    """Third-order Adams-Bashforth: ``x + dt (23 f_n - 16 f_{n-1} + 5 f_{n-2}) / 12``.

    The first two steps cannot use three tendencies. ``startup="euler"`` (default) takes a forward-Euler step and
    then an AB2 step, exactly as pyqg does; that start limits the global error to second order in dt.
    ``startup="rk4"`` takes the first two steps with RK4 and keeps the global error third order.
    """

    startup: str = eqx.field(static=True, default="euler")
    order: ClassVar[int] = 3

    def __check_init__(self):
        if self.startup not in ("euler", "rk4"):
            raise ConfigError(f"AB3 startup must be 'euler' or 'rk4', got {self.startup!r}")

    def init(self, process, state, t, dt):
        z = tree_zeros_like(state)
        return AB3State(f_prev=z, f_prev2=z, level=jnp.zeros((), jnp.int32))

    def step(self, process, state, t, dt, stepper_state):
        f = process.tendency(state, t)
        lvl = stepper_state.level
        if self.startup == "euler":
            c0 = jnp.where(lvl == 0, 1.0, jnp.where(lvl == 1, 1.5, 23.0 / 12.0))
            c1 = jnp.where(lvl == 0, 0.0, jnp.where(lvl == 1, -0.5, -16.0 / 12.0))
            c2 = jnp.where(lvl < 2, 0.0, 5.0 / 12.0)
            new = jax.tree_util.tree_map(
                lambda x, a, b, c: x + dt * (c0.astype(x.dtype) * a + c1.astype(x.dtype) * b
                                             + c2.astype(x.dtype) * c),
                state, f, stepper_state.f_prev, stepper_state.f_prev2,
            )
        else:
            def ab3(_):
                return jax.tree_util.tree_map(
                    lambda x, a, b, c: x + dt * (23.0 * a - 16.0 * b + 5.0 * c) / 12.0,
                    state, f, stepper_state.f_prev, stepper_state.f_prev2,
                )

            def rk4(_):
                return RK4().step(process, state, t, dt, None)[0]

            new = jax.lax.cond(lvl < 2, rk4, ab3, None)
        hist = AB3State(f_prev=f, f_prev2=stepper_state.f_prev, level=jnp.minimum(lvl + 1, 2))
        return new, hist


class SemiImplicitEuler(AbstractStepper):
    """IMEX Euler (Ascher, Ruuth & Wetton 1995, forward-backward Euler): explicit terms forward, stiff terms backward.

    ``x_{n+1} = solve(x_n + dt E(x_n, t_n))`` where ``solve`` inverts ``I - dt L`` at ``t_{n+1}``. First order,
    unconditionally stable for the implicit part. The process must be an :class:`ImplicitExplicit`.
    """

    order: ClassVar[int] = 1

    def step(self, process, state, t, dt, stepper_state):
        if not isinstance(process, ImplicitExplicit):
            raise ConfigError(
                "SemiImplicitEuler needs an ImplicitExplicit process (explicit + implicit parts), "
                f"got {type(process).__name__}"
            )
        rhs = tree_axpy(dt, process.explicit.tendency(state, t), state)
        return process.implicit.implicit_solve(rhs, t + dt, dt), stepper_state


class Filtered(AbstractStepper):
    """Apply ``filter_fn(state)`` after every step of ``stepper`` (e.g. pyqg's spectral exponential filter)."""

    stepper: AbstractStepper
    filter_fn: Callable[[PyTree], PyTree]

    def init(self, process, state, t, dt):
        return self.stepper.init(process, state, t, dt)

    def step(self, process, state, t, dt, stepper_state):
        new, ss = self.stepper.step(process, state, t, dt, stepper_state)
        return self.filter_fn(new), ss


STEPPERS: dict[str, type[AbstractStepper]] = {
    "euler": ForwardEuler,
    "rk4": RK4,
    "ab3": AB3,
    "semi_implicit_euler": SemiImplicitEuler,
}


def get_stepper(name: str) -> AbstractStepper:
    """Return a stepper by name (``euler``, ``rk4``, ``ab3``, ``semi_implicit_euler``)."""
    try:
        return STEPPERS[name]()
    except KeyError:
        raise ConfigError(f"unknown stepper {name!r}; choose one of {sorted(STEPPERS)}") from None

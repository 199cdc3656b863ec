"""Time steppers: ``step(process, state, t, dt, stepper_state, key=None) -> (state, stepper_state)``.

Steppers know nothing about physics; they only call ``process.tendency`` (and ``implicit_solve`` for IMEX).
Terms wrapped in :class:`~nemic.core.process.OncePerStep` are applied first, once per step, by forward Euler
(:func:`~nemic.core.process.apply_once_per_step`); the stepper integrates the other terms from there.
Multistep methods keep their history in an explicit *stepper state* (created by ``init``), so a stepper is an
immutable pytree and a rollout is a pure function. The ``key`` of a step is passed unchanged to every stage, so a
stochastic forcing is held constant over the step (as stochastic parameterizations are applied in weather and
climate models, e.g. Arnold et al. 2013, doi:10.1098/rsta.2011.0479).

References:
    Hairer, Norsett & Wanner (1993), Solving Ordinary Differential Equations I, 2nd ed., Springer
    (RK4: II.1; Adams-Bashforth: III.1).
    Ascher, Ruuth & Wetton (1995), SIAM J. Numer. Anal. 32, 797-823, doi:10.1137/0732037 (IMEX schemes).
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError
from nemic.core.process import (
    AbstractProcess,
    ImplicitExplicit,
    PyTree,
    apply_once_per_step,
    tree_axpy,
    tree_zeros_like,
)


class AbstractStepper(eqx.Module):
    """Advance a state by one step of size ``dt``."""

    order: ClassVar[int] = 0  # global order of accuracy

    def init(self, process: AbstractProcess, state: PyTree, t: Any, dt: Any) -> Any:
        """Create the stepper state (history of multistep methods); ``None`` for one-step methods."""
        return None

    def check_process(self, process: AbstractProcess) -> None:
        """Raise a one-line :class:`ConfigError` before any tracing if this stepper cannot step ``process``."""

    @abc.abstractmethod
    def step(
        self, process: AbstractProcess, state: PyTree, t: Any, dt: Any, stepper_state: Any, key: Any = None
    ) -> tuple[PyTree, Any]:
        """Return ``(state at t + dt, new stepper state)``."""


class ForwardEuler(AbstractStepper):
    """Explicit (forward) Euler: ``x + dt f(x, t)``. First order."""

    order: ClassVar[int] = 1

    def step(self, process, state, t, dt, stepper_state, key=None):
        process, state = apply_once_per_step(process, state, t, dt, key)
        return tree_axpy(dt, process.tendency(state, t, key), state), stepper_state


class RK4(AbstractStepper):
    """The classical fourth-order Runge-Kutta method (Hairer et al. 1993, Table II.1.2)."""

    order: ClassVar[int] = 4

    def step(self, process, state, t, dt, stepper_state, key=None):
        process, state = apply_once_per_step(process, state, t, dt, key)

        def f(x, tt):
            return process.tendency(x, tt, key)

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

    def step(self, process, state, t, dt, stepper_state, key=None):
        process, state = apply_once_per_step(process, state, t, dt, key)
        f = process.tendency(state, t, key)
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
                return RK4().step(process, state, t, dt, None, key)[0]

            new = jax.lax.cond(lvl < 2, rk4, ab3, None)
        hist = AB3State(f_prev=f, f_prev2=stepper_state.f_prev, level=jnp.minimum(lvl + 1, 2))
        return new, hist


class SemiImplicitEuler(AbstractStepper):
    """IMEX Euler (Ascher, Ruuth & Wetton 1995, forward-backward Euler): explicit terms forward, stiff terms backward.

    ``x_{n+1} = solve(x_n + dt E(x_n, t_n))`` where ``solve`` inverts ``I - dt L`` at ``t_{n+1}``. First order,
    unconditionally stable for the implicit part. The process must be an :class:`ImplicitExplicit`.
    """

    order: ClassVar[int] = 1

    def check_process(self, process):
        require_imex(process, "SemiImplicitEuler")

    def step(self, process, state, t, dt, stepper_state, key=None):
        process, state = apply_once_per_step(process, state, t, dt, key)
        require_imex(process, "SemiImplicitEuler")
        rhs = tree_axpy(dt, process.explicit.tendency(state, t, key), state)
        return process.implicit.implicit_solve(rhs, t + dt, dt), stepper_state


def require_imex(process: Any, who: str) -> ImplicitExplicit:
    """Raise a one-line :class:`ConfigError` unless ``process`` has an explicit and an implicit part."""
    if not isinstance(process, ImplicitExplicit):
        raise ConfigError(
            f"{who} needs an implicit-explicit process (a model with an implicit part, plus any explicit terms), "
            f"got {type(process).__name__}")
    return process


class IMEXTableau(eqx.Module):
    """A pair of Butcher tableaux of an implicit-explicit Runge-Kutta scheme with an explicit first stage.

    In the layout of dinosaur's ``ImExButcherTableau``: ``a_ex[i-1]`` holds the explicit coefficients of stage
    ``i`` on stages ``0..i-1``; ``a_im[i-1]`` the implicit ones on stages ``0..i`` (its last entry is the
    diagonal, the coefficient of the implicit solve); ``b_ex``, ``b_im`` the weights of the final combination.
    """

    a_ex: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    a_im: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    b_ex: tuple[float, ...] = eqx.field(static=True)
    b_im: tuple[float, ...] = eqx.field(static=True)

    def __check_init__(self):
        s = len(self.b_ex)
        if len(self.b_im) != s or len(self.a_ex) != s - 1 or len(self.a_im) != s - 1:
            raise ConfigError("inconsistent IMEX tableau: need s-1 rows of a_ex and a_im and s weights")
        for i in range(1, s):
            if len(self.a_ex[i - 1]) != i or len(self.a_im[i - 1]) != i + 1:
                raise ConfigError(f"inconsistent IMEX tableau: stage {i} needs {i} explicit and {i + 1} "
                                  "implicit coefficients")


class IMEXRungeKutta(AbstractStepper):
    """Implicit-explicit Runge-Kutta step of ``dx/dt = E(x, t) + L(x, t)`` (E explicit, L implicit).

    Stage ``i`` solves ``y_i - dt a_im[i,i] L(y_i) = x + dt sum_{j<i} (a_ex[i,j] E_j + a_im[i,j] L_j)`` with the
    process's ``implicit_solve``; the step returns ``x + dt sum_j (b_ex[j] E_j + b_im[j] L_j)``. Stage times are
    ``t + c_i dt`` with ``c_i`` the row sums of the explicit tableau. References: Ascher, Ruuth & Spiteri (1997),
    Appl. Numer. Math. 25, 151-167, doi:10.1016/S0168-9274(97)00056-1; the same construction as dinosaur's
    ``imex_runge_kutta``.
    """

    tableau: IMEXTableau
    name: str = eqx.field(static=True, default="imex_rk")
    nominal_order: int = eqx.field(static=True, default=1)

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.nominal_order

    def check_process(self, process):
        require_imex(process, f"the IMEX Runge-Kutta stepper {self.name}")

    def step(self, process, state, t, dt, stepper_state, key=None):
        process, state = apply_once_per_step(process, state, t, dt, key)
        p = require_imex(process, f"the IMEX Runge-Kutta stepper {self.name}")
        tab = self.tableau
        s = len(tab.b_ex)
        ex_f, im_f, c = [], [], [0.0]
        for row in tab.a_ex:
            c.append(sum(row))
        y = state
        for i in range(s):
            if i > 0:
                rhs = state
                for j in range(i):
                    if tab.a_ex[i - 1][j]:
                        rhs = tree_axpy(dt * tab.a_ex[i - 1][j], ex_f[j], rhs)
                    if tab.a_im[i - 1][j]:
                        rhs = tree_axpy(dt * tab.a_im[i - 1][j], im_f[j], rhs)
                diag = tab.a_im[i - 1][i]
                y = p.implicit.implicit_solve(rhs, t + c[i] * dt, diag * dt) if diag else rhs
            need_ex = any(tab.a_ex[k - 1][i] for k in range(i + 1, s)) or tab.b_ex[i]
            need_im = any(tab.a_im[k - 1][i] for k in range(i + 1, s)) or tab.b_im[i]
            ex_f.append(p.explicit.tendency(y, t + c[i] * dt, key) if need_ex else None)
            im_f.append(p.implicit.tendency(y, t + c[i] * dt) if need_im else None)
        out = state
        for j in range(s):
            if tab.b_ex[j]:
                out = tree_axpy(dt * tab.b_ex[j], ex_f[j], out)
            if tab.b_im[j]:
                out = tree_axpy(dt * tab.b_im[j], im_f[j], out)
        return out, stepper_state


#: IMEX-SIL3 (Whitaker & Kar 2013, MWR 141, 3426, doi:10.1175/MWR-D-13-00132.1), the scheme of dinosaur and
#: NeuralGCM: third order for the explicit terms, second order for the implicit ones.
SIL3_TABLEAU = IMEXTableau(
    a_ex=((1 / 3,), (1 / 6, 1 / 2), (1 / 2, -1 / 2, 1.0)),
    a_im=((1 / 6, 1 / 6), (1 / 3, 0.0, 1 / 3), (3 / 8, 0.0, 3 / 8, 1 / 4)),
    b_ex=(1 / 2, -1 / 2, 1.0, 0.0),
    b_im=(3 / 8, 0.0, 3 / 8, 1 / 4),
)

_G = 1.0 - 1.0 / math.sqrt(2.0)
_D = 1.0 - 1.0 / (2.0 * _G)
#: ARS(2,2,2) (Ascher, Ruuth & Spiteri 1997, section 2.6): L-stable, second order, stiffly accurate.
ARS222_TABLEAU = IMEXTableau(
    a_ex=((_G,), (_D, 1.0 - _D)),
    a_im=((0.0, _G), (0.0, 1.0 - _G, _G)),
    b_ex=(_D, 1.0 - _D, 0.0),
    b_im=(0.0, 1.0 - _G, _G),
)


def IMEXSIL3() -> IMEXRungeKutta:
    """The IMEX-SIL3 stepper (order 2 overall: 3 explicit, 2 implicit)."""
    return IMEXRungeKutta(SIL3_TABLEAU, name="imex_sil3", nominal_order=2)


def IMEXARS222() -> IMEXRungeKutta:
    """The ARS(2,2,2) stepper (second order, L-stable implicit part)."""
    return IMEXRungeKutta(ARS222_TABLEAU, name="imex_ars222", nominal_order=2)


class AbstractStepFilter(eqx.Module):
    """A filter applied after a step that sees the state before and after it: ``(before, after) -> after'``.

    This is dinosaur's filter signature (``step_with_filters``), so spectral exponential filters, hyperdiffusion
    filters and Robert-Asselin-like filters that need the old state all fit.
    """

    @abc.abstractmethod
    def __call__(self, before: PyTree, after: PyTree) -> PyTree:
        """The filtered new state."""


class StateFilter(AbstractStepFilter):
    """A filter that only looks at the new state: wraps ``fn(after) -> after'`` (e.g. a spectral filter)."""

    fn: Callable[[PyTree], PyTree]

    def __call__(self, before, after):
        return self.fn(after)


def as_step_filter(f: Any) -> AbstractStepFilter:
    """``f`` as an :class:`AbstractStepFilter` (a plain one-argument callable filters the new state)."""
    if isinstance(f, AbstractStepFilter):
        return f
    if callable(f):
        return StateFilter(f)
    raise ConfigError(f"a step filter must be callable, got {type(f).__name__}")


class Filtered(AbstractStepper):
    """Apply filters after every step of ``stepper``, in order.

    Args:
        stepper: the underlying stepper.
        filters: one filter or a sequence; each an :class:`AbstractStepFilter` ``(before, after) -> after'`` or a
            one-argument callable ``after -> after'`` (e.g. pyqg's spectral exponential filter).
    """

    stepper: AbstractStepper
    filters: tuple[AbstractStepFilter, ...]

    def __init__(self, stepper: AbstractStepper, filters: Any):
        if not isinstance(stepper, AbstractStepper):
            raise ConfigError(f"Filtered needs a stepper, got {type(stepper).__name__}")
        fs = filters if isinstance(filters, (tuple, list)) else (filters,)
        self.stepper = stepper
        self.filters = tuple(as_step_filter(f) for f in fs)

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.stepper.order

    def init(self, process, state, t, dt):
        return self.stepper.init(process, state, t, dt)

    def check_process(self, process):
        self.stepper.check_process(process)

    def step(self, process, state, t, dt, stepper_state, key=None):
        new, ss = self.stepper.step(process, state, t, dt, stepper_state, key)
        for f in self.filters:
            new = f(state, new)
        return new, ss


STEPPERS: dict[str, Callable[[], AbstractStepper]] = {
    "euler": ForwardEuler,
    "rk4": RK4,
    "ab3": AB3,
    "semi_implicit_euler": SemiImplicitEuler,
    "imex_sil3": IMEXSIL3,
    "imex_ars222": IMEXARS222,
}


def get_stepper(name: str) -> AbstractStepper:
    """Return a stepper by name (``euler``, ``rk4``, ``ab3``, ``semi_implicit_euler``, ``imex_sil3``,
    ``imex_ars222``)."""
    try:
        return STEPPERS[name]()
    except KeyError:
        raise ConfigError(f"unknown stepper {name!r}; choose one of {sorted(STEPPERS)}") from None

"""Convergence order of the steppers on problems with closed-form solutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import (AB3, RK4, AbstractImplicitProcess, ConfigError, Filtered, ForwardEuler, FunctionProcess,
                        ImplicitExplicit, SemiImplicitEuler, get_stepper, rollout)


def logistic_exact(t, x0):
    return x0 * jnp.exp(t) / (1 - x0 + x0 * jnp.exp(t))


# non-autonomous and nonlinear: x' = x (1 - x) + cos(t) - ... keep a closed form: logistic plus a time term
# x' = x(1-x) has x(t) = logistic_exact; y' = cos(t) has y = sin(t) + y0 (tests the use of t in stages)
def rhs(state, t):
    x, y = state
    return (x * (1 - x), jnp.cos(t))


def exact(t):
    return (logistic_exact(t, 0.1), jnp.sin(t))


def final_error(stepper, n, T=2.0):
    traj = rollout(FunctionProcess(rhs), stepper, (jnp.asarray(0.1), jnp.asarray(0.0)), dt=T / n, n_steps=n,
                   save_every=n)
    x, y = traj.final
    ex, ey = exact(T)
    return float(jnp.maximum(jnp.abs(x - ex), jnp.abs(y - ey)))


def fitted_order(stepper, ns):
    errs = [final_error(stepper, n) for n in ns]
    slope = np.polyfit(np.log(2.0 / np.asarray(ns)), np.log(errs), 1)[0]
    return slope, errs


@pytest.mark.parametrize("stepper, expected, ns", [
    (ForwardEuler(), 1, [50, 100, 200, 400]),
    (RK4(), 4, [10, 20, 40, 80]),
    (AB3(startup="rk4"), 3, [40, 80, 160, 320]),
    (AB3(startup="euler"), 2, [40, 80, 160, 320]),  # Euler + AB2 start (as pyqg): the first step caps it at 2
])
def test_convergence_order(stepper, expected, ns):
    slope, errs = fitted_order(stepper, ns)
    assert abs(slope - expected) < 0.15, (slope, errs)


def test_ab3_steady_state_is_third_order_after_start():
    # With the history filled from the exact solution, AB3's error is third order; check the coefficients by
    # a polynomial tendency f(t) = t^2, which AB3 integrates exactly (the method is exact for degree <= 2).
    p = FunctionProcess(lambda s, t: t ** 2)
    dt = 0.1
    st = AB3(startup="rk4")
    traj = rollout(p, st, jnp.asarray(0.0), dt=dt, n_steps=30)
    np.testing.assert_allclose(traj.states, traj.t ** 3 / 3, rtol=0, atol=1e-12)


class Decay(AbstractImplicitProcess):
    """L x = -k x, implicit solve (1 + eta k)^-1."""

    k: float

    def tendency(self, state, t, key=None):
        return -self.k * state

    def implicit_solve(self, rhs, t, eta):
        return rhs / (1 + eta * self.k)


def test_semi_implicit_euler_first_order_and_stable_for_stiff_part():
    # x' = -k x + cos(t): exact x = (k cos t + sin t)/(1+k^2) + C e^{-kt}
    k = 50.0
    proc = ImplicitExplicit(explicit=FunctionProcess(lambda s, t: jnp.cos(t)), implicit=Decay(k))

    def exact_(t, x0=1.0):
        part = (k * np.cos(t) + np.sin(t)) / (1 + k * k)
        return part + (x0 - k / (1 + k * k)) * np.exp(-k * t)

    errs = []
    ns = [40, 80, 160, 320]
    for n in ns:
        tr = rollout(proc, SemiImplicitEuler(), jnp.asarray(1.0), dt=2.0 / n, n_steps=n, save_every=n)
        errs.append(abs(float(tr.final) - exact_(2.0)))
    slope = np.polyfit(np.log(2.0 / np.asarray(ns)), np.log(errs), 1)[0]
    assert abs(slope - 1) < 0.2, (slope, errs)
    # dt * k = 5: explicit Euler explodes, the IMEX step stays bounded
    tr = rollout(proc, SemiImplicitEuler(), jnp.asarray(1.0), dt=0.1, n_steps=100)
    assert np.all(np.abs(np.asarray(tr.states)) < 2)
    tr = rollout(proc, ForwardEuler(), jnp.asarray(1.0), dt=0.1, n_steps=100, detect_blowup=False)
    assert not np.all(np.abs(np.asarray(tr.states)) < 2)


def test_semi_implicit_needs_split_process():
    with pytest.raises(ConfigError, match="implicit-explicit"):
        rollout(FunctionProcess(lambda s, t: -s), SemiImplicitEuler(), jnp.ones(2), dt=0.1, n_steps=2)


def test_filtered_applies_filter_after_each_step():
    p = FunctionProcess(lambda s, t: jnp.zeros_like(s))
    tr = rollout(p, Filtered(RK4(), lambda s: 0.5 * s), jnp.ones(3), dt=0.1, n_steps=4)
    np.testing.assert_allclose(tr.states[:, 0], 0.5 ** np.arange(5))


def test_get_stepper_and_bad_names():
    assert isinstance(get_stepper("rk4"), RK4)
    with pytest.raises(ConfigError, match="unknown stepper"):
        get_stepper("leapfrog")
    with pytest.raises(ConfigError, match="startup"):
        AB3(startup="magic")


def test_steppers_jit_vmap_grad():
    p = FunctionProcess(lambda s, t: -s * s)
    for st in (ForwardEuler(), RK4(), AB3()):
        f = jax.jit(lambda x0: rollout(p, st, x0, dt=0.01, n_steps=20).final.sum())
        xs = jnp.linspace(0.1, 1.0, 4)
        vals = jax.vmap(f)(xs)
        grads = jax.vmap(jax.grad(f))(xs)
        # d x(T) / d x0 for x' = -x^2 is 1 / (1 + x0 T)^2
        np.testing.assert_allclose(vals, xs / (1 + xs * 0.2), rtol=2e-3)
        np.testing.assert_allclose(grads, 1 / (1 + xs * 0.2) ** 2, rtol=5e-3)

"""Convergence orders of the IMEX steppers, measured as the slope of log error against log dt.

Problem: a stiff linear diffusion (the implicit part: the 1-D Laplacian on a periodic grid of 16 points, applied
exactly by a diagonal solve in Fourier space, eigenvalues down to -64) plus an explicit, nonlinear and
time-dependent forcing ``0.5 sin(x) + cos(t)``. The reference is the same problem integrated with RK4 at a step 50
times smaller than the smallest tested step, accurate to ~1e-13 at t = 1, far below the tested errors.

References: Ascher, Ruuth & Wetton (1995), doi:10.1137/0732037 (IMEX Euler, order 1); Ascher, Ruuth & Spiteri
(1997), doi:10.1016/S0168-9274(97)00056-1 (ARS(2,2,2), order 2); Whitaker & Kar (2013),
doi:10.1175/MWR-D-13-00132.1 (IMEX-SIL3: explicit part third order, implicit part second).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractImplicitProcess, FunctionProcess, ImplicitExplicit
from nemic.core.rollout import rollout
from nemic.core.steppers import RK4, IMEXARS222, IMEXSIL3, SemiImplicitEuler

N = 16
K = np.fft.fftfreq(N, d=1.0 / N)  # integer wavenumbers
NU = 0.25  # diffusivity: eigenvalues -4 NU k^2, the stiffest -64 (k = 8)


class PeriodicDiffusion(AbstractImplicitProcess):
    """``4 nu d2x/ds2`` on a periodic grid of length 2 pi, applied and inverted exactly in Fourier space: eigenvalues
    ``-4 nu k^2`` (k = 0..8), so ``implicit_solve`` is a diagonal division."""

    nu: jax.Array

    def _eig(self):
        return -4.0 * self.nu * jnp.asarray(K) ** 2

    def tendency(self, state, t, key=None):
        return jnp.fft.ifft(self._eig() * jnp.fft.fft(state)).real

    def implicit_solve(self, rhs, t, eta):
        return jnp.fft.ifft(jnp.fft.fft(rhs) / (1.0 - eta * self._eig())).real


def forcing(x, t):
    return 0.5 * jnp.sin(x) + jnp.cos(t)


def problem():
    return ImplicitExplicit(FunctionProcess(forcing), PeriodicDiffusion(jnp.asarray(NU)))


def x0():
    s = np.linspace(0.0, 2 * np.pi, N, endpoint=False)
    return jnp.asarray(np.sin(s) + 0.5 * np.cos(3 * s) + 0.2 * np.sin(5 * s))


def final(stepper, n, t_end=1.0):
    run = eqx.filter_jit(lambda p, s: rollout(p, stepper, s, dt=t_end / n, n_steps=n, save_every=n).final)
    return np.asarray(run(problem(), x0()))


@pytest.fixture(scope="module")
def reference():
    return final(RK4(), 50 * 256)


@pytest.mark.parametrize("stepper, order", [(SemiImplicitEuler(), 1), (IMEXARS222(), 2), (IMEXSIL3(), 2)],
                         ids=["semi_implicit_euler", "ars222", "sil3"])
def test_imex_convergence_order_is_the_slope_of_log_error_against_log_dt(stepper, order, reference):
    ns = np.array([32, 64, 128, 256])  # dt = 1/32 .. 1/256; |lambda| dt from 2 down to 0.25
    errs = np.array([np.max(np.abs(final(stepper, n) - reference)) for n in ns])
    slope = np.polyfit(np.log(1.0 / ns), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (stepper.name if hasattr(stepper, "name") else stepper, slope, errs)
    assert stepper.order == order
    assert errs[-1] < 1e-2


def test_imex_steppers_are_stable_far_beyond_the_explicit_limit(reference):
    """|lambda| dt = 64: forward Euler on the diffusion would amplify by 63 per step; IMEX stays bounded."""
    for stepper in (SemiImplicitEuler(), IMEXARS222(), IMEXSIL3()):
        out = final(stepper, 1)
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) < 5.0


def test_two_implicit_parts_are_a_one_line_config_error():
    p = problem()
    with pytest.raises(ConfigError, match="at most one implicit part") as e:
        p + PeriodicDiffusion(jnp.asarray(1.0))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at most one implicit part"):
        p + p


def test_adding_explicit_terms_keeps_the_implicit_part_and_steps_with_imex_rk():
    extra = FunctionProcess(lambda x, t: 0.1 * x)
    q = problem() + extra
    assert isinstance(q, ImplicitExplicit) and isinstance(q.implicit, PeriodicDiffusion)
    a = final(IMEXSIL3(), 16)
    run = eqx.filter_jit(lambda p, s: rollout(p, IMEXSIL3(), s, dt=1 / 16, n_steps=16, save_every=16).final)
    b = np.asarray(run(q, x0()))
    assert np.all(np.isfinite(b)) and np.max(np.abs(a - b)) > 1e-3  # the added term acts

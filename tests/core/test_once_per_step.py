"""Process splitting with :class:`OncePerStep`: a term applied once per step by forward Euler before the step.

References: the one-step maps of the linear test equation are the stability polynomials of the methods (Hairer,
Norsett & Wanner 1993, section IV.2): ``1 + z`` (Euler), ``1 + z + z^2/2 + z^3/6 + z^4/24`` (RK4); Lie splitting
``exp(hA) exp(hB)`` of non-commuting matrices is first order (McLachlan & Quispel 2002, Acta Numerica 11, 341,
doi:10.1017/S0962492902000053); the reference solution ``expm(T (A + B))`` is scipy's.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from nemic.core import (
    RK4,
    ConfigError,
    ForwardEuler,
    FunctionProcess,
    IMEXSIL3,
    OncePerStep,
    Sum,
    WhiteNoise,
    apply_once_per_step,
    rollout,
)
from tests.core.test_imex import PeriodicDiffusion

A, B = -0.7, 0.3


def lin(c):
    return FunctionProcess(lambda x, t: c * x)


@pytest.mark.parametrize("stepper,poly", [
    (ForwardEuler(), lambda z: 1 + z),
    (RK4(), lambda z: 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24),
])
def test_one_step_is_euler_then_stepper(stepper, poly):
    """x' = A x + B x with B once per step: x1 = R(A dt) (1 + B dt) x0 exactly."""
    dt, x0 = 0.1, jnp.asarray([1.0, -2.0])
    x1, _ = stepper.step(lin(A) + OncePerStep(lin(B)), x0, 0.0, dt, None)
    np.testing.assert_allclose(np.asarray(x1), poly(A * dt) * (1 + B * dt) * np.asarray(x0), rtol=1e-13)


def test_imex_stepper_splits_too():
    """With an implicit part (periodic diffusion, diagonal in Fourier space) and a once-per-step linear damping,
    one IMEX-SIL3 step equals the step of the diffusion alone from ``(1 + B dt) x0``."""
    diff = PeriodicDiffusion(jnp.asarray(0.25))
    x0 = jnp.sin(jnp.linspace(0.0, 2 * np.pi, 16, endpoint=False)) + 0.3
    split = diff + OncePerStep(lin(B))
    x1, _ = IMEXSIL3().step(split, x0, 0.0, 0.05, None)
    ref, _ = IMEXSIL3().step(diff + lin(0.0), (1 + B * 0.05) * x0, 0.0, 0.05, None)
    np.testing.assert_allclose(np.asarray(x1), np.asarray(ref), rtol=1e-12, atol=1e-14)


def test_lie_splitting_is_first_order():
    """Non-commuting 2x2 matrices, one part per step by Euler, the other by RK4: the error at T = 1 against scipy's
    expm falls like dt (slope 1 within 0.1), while the unsplit RK4 is far more accurate at the same dt."""
    MA = np.array([[-1.0, 2.0], [-2.0, -0.5]])
    MB = np.array([[-0.3, 0.0], [1.0, -0.8]])
    x0 = np.array([1.0, 0.5])
    exact = scipy.linalg.expm(MA + MB) @ x0
    pa = FunctionProcess(lambda x, t: jnp.asarray(MA) @ x)
    pb = FunctionProcess(lambda x, t: jnp.asarray(MB) @ x)
    errs = []
    ns = (20, 40, 80, 160)
    for n in ns:
        xf = rollout(pa + OncePerStep(pb), RK4(), jnp.asarray(x0), dt=1.0 / n, n_steps=n, save_every=n).final
        errs.append(np.linalg.norm(np.asarray(xf) - exact))
    slope = np.polyfit(np.log(1.0 / np.asarray(ns)), np.log(errs), 1)[0]
    assert abs(slope - 1.0) < 0.1, (slope, errs)
    unsplit = rollout(pa + pb, RK4(), jnp.asarray(x0), dt=1.0 / 20, n_steps=20, save_every=20).final
    assert np.linalg.norm(np.asarray(unsplit) - exact) < 1e-3 * errs[0]


def test_stochastic_term_keeps_its_key_share():
    """A stochastic once-per-step term draws the same numbers as it would inside the unsplit sum."""
    x0 = jnp.zeros(5)
    key = jax.random.key(3)
    det = lin(A)
    noisy = Sum((det, WhiteNoise(0.5), OncePerStep(WhiteNoise(2.0))))
    _, x1 = apply_once_per_step(noisy, x0, 0.0, 0.1, key)
    plain = Sum((det, WhiteNoise(0.5), WhiteNoise(2.0)))
    keys = plain._keys(key)
    expected = 0.1 * plain.terms[2].tendency(x0, 0.0, keys[2])
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(expected))
    assert noisy.stochastic and OncePerStep(WhiteNoise(1.0)).stochastic


def test_transparent_outside_steppers_and_without_terms():
    x = jnp.asarray([1.0, 2.0])
    p = lin(A) + OncePerStep(lin(B))
    np.testing.assert_allclose(np.asarray(p.tendency(x, 0.0)), (A + B) * np.asarray(x))
    q = lin(A) + lin(B)
    same, xs = apply_once_per_step(q, x, 0.0, 0.1)
    assert same is q and xs is x


def test_jit_grad_vmap_through_a_split_rollout():
    def final(c, x0):
        p = lin(A) + OncePerStep(FunctionProcess(lambda x, t: c * x))
        return rollout(p, RK4(), x0, dt=0.1, n_steps=10, save_every=10).final.sum()

    g = jax.jit(jax.grad(final))(0.3, jnp.ones(3))
    eps = 1e-6
    fd = (final(0.3 + eps, jnp.ones(3)) - final(0.3 - eps, jnp.ones(3))) / (2 * eps)
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-6)
    batch = jax.vmap(lambda x: final(0.3, x))(jnp.ones((4, 3)))
    assert batch.shape == (4,)
    assert eqx.filter_jit(final)(0.3, jnp.ones(3)).shape == ()


def test_rejects_implicit_or_nested():
    with pytest.raises(ConfigError, match="OncePerStep"):
        OncePerStep(PeriodicDiffusion(jnp.asarray(0.25)))
    with pytest.raises(ConfigError, match="OncePerStep"):
        OncePerStep(OncePerStep(lin(B)))


def test_every_k_steps():
    """every=3: the term acts as x + 3 dt B x at steps 0, 3, 6 ... and not in between; with the core off, 6 steps
    give (1 + 3 B dt)^2 exactly, and the phase follows t / dt (a start at step 1 applies it at steps 3 and 6)."""
    dt, x0 = 0.1, jnp.asarray([1.0, 3.0])
    p = lin(0.0) + OncePerStep(lin(B), every=3)
    xf = rollout(p, ForwardEuler(), x0, dt=dt, n_steps=6, save_every=1)
    np.testing.assert_allclose(np.asarray(xf.final), (1 + 3 * B * dt) ** 2 * np.asarray(x0), rtol=1e-13)
    traj = np.asarray(xf.states)[:, 0]
    np.testing.assert_allclose(traj[1:4], 1 + 3 * B * dt, rtol=1e-13)  # applied at step 0, held through 1 and 2
    late = rollout(p, ForwardEuler(), x0, dt=dt, t0=dt, n_steps=6, save_every=6).final
    np.testing.assert_allclose(np.asarray(late), (1 + 3 * B * dt) ** 2 * np.asarray(x0), rtol=1e-13)
    with pytest.raises(ConfigError, match="every"):
        OncePerStep(lin(B), every=0)

"""Composition closed under implicit-explicit splitting, and the one-line errors of bad compositions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import (RK4, AbstractImplicitProcess, ConfigError, DataError, FunctionProcess, IMEXSIL3,
                        ImplicitExplicit, SemiImplicitEuler, Sum, compose, rollout)
from nemic.core.errors import NemicError
from nemic.models.lorenz96 import Lorenz96, Lorenz96State


class Decay(AbstractImplicitProcess):
    """dx/dt = -k x, solved exactly by the backward-Euler solve x = rhs / (1 + eta k)."""

    k: float

    def tendency(self, state, t, key=None):
        return jax.tree_util.tree_map(lambda x: -self.k * x, state)

    def implicit_solve(self, rhs, t, eta):
        return jax.tree_util.tree_map(lambda x: x / (1 + eta * self.k), rhs)


forcing = FunctionProcess(lambda s, t: jax.tree_util.tree_map(lambda x: jnp.ones_like(x), s))
wave = FunctionProcess(lambda s, t: jax.tree_util.tree_map(lambda x: jnp.cos(t) * jnp.ones_like(x), s))


def test_explicit_terms_fold_into_the_explicit_part():
    m = ImplicitExplicit(forcing, Decay(2.0))
    for combo in (m + wave, wave + m, Decay(2.0) + forcing + wave, compose(forcing, Decay(2.0), wave)):
        assert isinstance(combo, ImplicitExplicit), type(combo)
        assert isinstance(combo.implicit, Decay)
        assert isinstance(combo.explicit, Sum) and len(combo.explicit.terms) == 2
    # still one flat sum after several additions
    assert len((m + wave + wave + wave).explicit.terms) == 4
    assert isinstance(forcing + wave, Sum) and not isinstance(forcing + wave, ImplicitExplicit)


def test_imex_composite_steps_and_matches_the_analytic_solution():
    """dx/dt = -k x + 1: x(t) = 1/k + (x0 - 1/k) exp(-k t); SIL3 (second order) at dt = 0.002: error ~5e-7."""
    k, x0, T = 2.0, 3.0, 1.0
    model = Decay(k) + forcing
    tr = rollout(model, IMEXSIL3(), jnp.asarray([x0]), dt=0.002, n_steps=500)
    exact = 1 / k + (x0 - 1 / k) * np.exp(-k * T)
    np.testing.assert_allclose(tr.final[0], exact, rtol=1e-6)
    tr1 = rollout(model, SemiImplicitEuler(), jnp.asarray([x0]), dt=0.01, n_steps=100)
    np.testing.assert_allclose(tr1.final[0], exact, rtol=2e-2)


def test_zero_correction_is_bit_for_bit():
    zero = FunctionProcess(lambda s, t: jax.tree_util.tree_map(jnp.zeros_like, s))
    base = rollout(Decay(2.0) + forcing, IMEXSIL3(), jnp.asarray([3.0, 1.0]), dt=0.05, n_steps=40)
    hyb = rollout(Decay(2.0) + forcing + zero, IMEXSIL3(), jnp.asarray([3.0, 1.0]), dt=0.05, n_steps=40)
    np.testing.assert_array_equal(base.states, hyb.states)


def test_two_implicit_parts_is_a_one_line_error():
    with pytest.raises(ConfigError, match="at most one implicit part") as e:
        Decay(1.0) + forcing + Decay(2.0)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at most one implicit part"):
        ImplicitExplicit(forcing, Decay(1.0)) + ImplicitExplicit(wave, Decay(2.0))
    with pytest.raises(ConfigError, match="implicit"):
        Sum((forcing, Decay(1.0)))
    with pytest.raises(ConfigError, match="only processes"):
        compose(forcing, 3.0)


def test_tendency_structure_mismatch_is_a_one_line_error():
    bad = FunctionProcess(lambda s, t: Lorenz96State(x=jnp.zeros(5)))
    with pytest.raises(DataError, match="FunctionProcess.tendency returns .* shape") as e:
        rollout(Lorenz96(8.0) + bad, RK4(), Lorenz96State(x=jnp.ones(8)), dt=0.01, n_steps=2)
    assert "\n" not in str(e.value)
    wrong_tree = FunctionProcess(lambda s, t: {"x": s.x})
    with pytest.raises(DataError, match="structure"):
        rollout(wrong_tree, RK4(), Lorenz96State(x=jnp.ones(8)), dt=0.01, n_steps=2)


@pytest.mark.parametrize("state", [3.0, [1.0, 2.0], jnp.arange(4), None])
def test_states_that_cannot_be_stepped(state):
    with pytest.raises(NemicError):
        rollout(Lorenz96(8.0), RK4(), state, dt=0.01, n_steps=2)


def test_wrong_size_state_for_a_fixed_grid():
    with pytest.raises(DataError, match="K = 8"):
        rollout(Lorenz96(8.0, K=8), RK4(), Lorenz96State(x=jnp.ones(6)), dt=0.01, n_steps=2)


def test_model_plus_terms_keeps_the_models_default_stepper():
    from nemic.core import simulate
    from nemic.models.ebm import DiffusiveEBM

    ebm = DiffusiveEBM(num_lat=12)
    combo = ebm + forcing
    assert isinstance(combo, ImplicitExplicit)
    assert type(combo.default_stepper()) is type(ebm.default_stepper())
    s0 = ebm.initial_state()
    a = simulate(combo, None, s0, dt=86400.0, n_steps=4)
    b = simulate(combo, ebm.default_stepper(), s0, dt=86400.0, n_steps=4)
    np.testing.assert_array_equal(a.states.Ts, b.states.Ts)
    with pytest.raises(ConfigError, match="no default stepper"):
        simulate(Decay(1.0) + forcing, None, jnp.ones(2), dt=0.1, n_steps=2)

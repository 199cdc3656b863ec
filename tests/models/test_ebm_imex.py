"""The EBM on the one model API: ``ebm + nudging + correction`` composes with ``+`` into an implicit-explicit process
that SemiImplicitEuler and the IMEX Runge-Kutta steppers step with no special code; parameters held once; the
IMEX orders measured on the EBM itself; a zero correction changes nothing; attributes round-trip."""

import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.core.process import FunctionProcess, ImplicitExplicit, Sum
from nemic.core.rollout import rollout, simulate
from nemic.core.steppers import IMEXARS222, IMEXSIL3, SemiImplicitEuler
from nemic.models.ebm import SECONDS_PER_YEAR, DiffusiveEBM, EBMState, LatitudeGrid, MoistDiffusion
from nemic.processes.neural import NeuralTendency
from nemic.processes.nudging import Nudging

DAY = 86400.0
DT = SECONDS_PER_YEAR / 90


class ColumnNet(eqx.Module):
    """A small MLP correction of the heating [K s-1] from the temperature profile (num_lat,) [degC]."""

    mlp: eqx.nn.MLP

    def __call__(self, Ts):
        return 1e-7 * self.mlp(Ts / 30.0)


def correction(num_lat, key, zero=False):
    mlp = eqx.nn.MLP(num_lat, num_lat, 8, 1, activation=jnp.tanh, key=key)
    if zero:
        mlp = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                          (jnp.zeros_like(mlp.layers[-1].weight), jnp.zeros_like(mlp.layers[-1].bias)))
    return NeuralTendency(ColumnNet(mlp), inputs="Ts")


@pytest.fixture(scope="module")
def setup():
    m = DiffusiveEBM(12, albedo_width=2.0)
    truth = m.with_params(D=0.8, A=205.0)  # a "truth" with other parameters to nudge toward
    ref = rollout(truth, truth.default_stepper(), truth.initial_state(), dt=DT, n_steps=40, save_every=2)
    return m, ref


def test_ebm_plus_nudging_plus_correction_is_imex_and_steps_with_every_imex_stepper(setup):
    m, ref = setup
    hybrid = m + Nudging(ref, 20 * DAY) + correction(12, jax.random.PRNGKey(0))
    assert isinstance(hybrid, ImplicitExplicit) and isinstance(hybrid.explicit, Sum)
    assert hybrid.implicit is m.implicit and hybrid.explicit.terms[0] is m.explicit
    for stepper in (SemiImplicitEuler(), IMEXSIL3(), IMEXARS222()):
        run = eqx.filter_jit(lambda p, s: rollout(p, stepper, s, dt=DT, n_steps=40, save_every=40).final.Ts)
        T = run(hybrid, m.initial_state())
        T_free = run(m, m.initial_state())
        T_ref = ref.final.Ts
        assert np.all(np.isfinite(T))
        # nudging pulls the run toward the truth
        assert float(jnp.max(jnp.abs(T - T_ref))) < float(jnp.max(jnp.abs(T_free - T_ref)))


def test_grad_through_imex_rollout_reaches_network_and_physics_parameters_once(setup):
    m, ref = setup
    hybrid = m + Nudging(ref, 20 * DAY) + correction(12, jax.random.PRNGKey(1))

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(p):
        return jnp.sum(rollout(p, IMEXSIL3(), m.initial_state(), dt=DT, n_steps=20, save_every=20,
                               checkpoint=True).final.Ts ** 2)

    g = grad(hybrid)
    net_g = jax.tree_util.tree_leaves(g.explicit.terms[2])
    assert all(np.all(np.isfinite(x)) for x in net_g) and max(float(jnp.max(jnp.abs(x))) for x in net_g) > 0
    assert float(g.implicit.D_over_C) != 0.0 and float(g.explicit.terms[0].A) != 0.0
    # each physics parameter is one leaf of the hybrid: the model's 15 leaves + the correction's + the nudging's
    n_model = len(jax.tree_util.tree_leaves(m))
    n_extra = sum(len(jax.tree_util.tree_leaves(t)) for t in hybrid.explicit.terms[1:])
    assert n_model == 15 and len(jax.tree_util.tree_leaves(hybrid)) == n_model + n_extra
    # and a finite difference in D through with_params agrees with the gradient
    f = jax.jit(lambda D: jnp.sum(rollout(m.with_params(D=D) + Nudging(ref, 20 * DAY), IMEXSIL3(),
                                          m.initial_state(), dt=DT, n_steps=20, save_every=20).final.Ts))
    gD = jax.grad(f)(0.555)
    fd = (f(0.555 + 1e-6) - f(0.555 - 1e-6)) / 2e-6
    assert abs(float(gD) - float(fd)) < 1e-5 * abs(float(fd))


def _zero_correction_runs(stepper):
    m = DiffusiveEBM(12, insolation_type="daily", albedo_width=2.0)
    run = eqx.filter_jit(lambda p: rollout(p, stepper, m.initial_state(), dt=DT, n_steps=90, save_every=9).states.Ts)
    return np.asarray(run(m)), np.asarray(run(m + correction(12, jax.random.PRNGKey(2), zero=True)))


@pytest.mark.parametrize("stepper", [SemiImplicitEuler(), IMEXARS222()], ids=["sie", "ars222"])
def test_zero_initialised_correction_reproduces_the_physics_bit_for_bit(stepper):
    a, b = _zero_correction_runs(stepper)
    assert np.array_equal(a, b)


def test_zero_correction_under_sil3_differs_only_by_fma_contraction():
    """Under IMEX-SIL3, XLA's CPU backend fuses the four-stage update differently once a correction term is
    present and contracts another set of multiply-adds into FMAs: the runs then differ in the last bit (~1e-14 K
    after 90 steps; see :mod:`nemic.processes.neural`). With FMA off (``--xla_cpu_max_isa=SSE4_2``, a fresh
    process) they are identical."""
    a, b = _zero_correction_runs(IMEXSIL3())
    assert np.max(np.abs(a - b)) < 1e-12


@pytest.mark.slow  # a fresh Python process with FMA disabled: ~20 s on 2 shared cores
def test_zero_correction_under_sil3_without_fma_is_bit_for_bit():
    code = ("import jax; jax.config.update('jax_enable_x64', True); import sys, numpy as np; "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_ebm_imex as T; "
            "from nemic.core.steppers import IMEXSIL3; a, b = T._zero_correction_runs(IMEXSIL3()); "
            "print('EQUAL' if np.array_equal(a, b) else 'DIFFER', np.max(np.abs(a - b)))")
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=SSE4_2").strip(),
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("EQUAL"), out.stdout


@pytest.mark.parametrize("stepper, order", [(SemiImplicitEuler(), 1), (IMEXARS222(), 2), (IMEXSIL3(), 2)],
                         ids=["sie", "ars222", "sil3"])
def test_imex_orders_on_the_ebm_against_a_fine_step_reference(stepper, order):
    """The EBM (climlab's parameters, smooth albedo; the diffusion's |lambda| dt is ~1 at the largest step) plus a
    smooth explicit forcing that varies over the 60 days; reference: the same stepper at a step 64 times smaller.
    Measured slopes: 1.03 (semi-implicit Euler), 2.05 (ARS222), 1.90 (SIL3)."""
    m = DiffusiveEBM(16, albedo_width=3.0)
    forcing = FunctionProcess(
        lambda s, t: EBMState(Ts=2e-6 * jnp.cos(2 * jnp.pi * t / (60 * DAY)) * jnp.ones_like(s.Ts)))
    p = m + forcing
    t_end = 60 * DAY

    def final(n):
        return np.asarray(eqx.filter_jit(lambda p: rollout(p, stepper, m.initial_state(), dt=t_end / n, n_steps=n,
                                                           save_every=n).final.Ts)(p))

    ref = final(64 * 128)
    ns = np.array([16, 32, 64, 128])
    errs = np.array([np.max(np.abs(final(n) - ref)) for n in ns])
    slope = np.polyfit(np.log(1.0 / ns), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (slope, errs)


def test_two_implicit_parts_is_a_one_line_config_error():
    m = DiffusiveEBM(8)
    moist = MoistDiffusion(D=jnp.asarray(0.3), heat_capacity=m.heat_capacity, relative_humidity=jnp.asarray(0.8),
                           num_lat=8, grid=m.grid)
    for bad in (lambda: m + moist, lambda: m + m, lambda: moist + m):
        with pytest.raises(ConfigError, match="at most one implicit part") as e:
            bad()
        assert "\n" not in str(e.value)


def test_model_api_attrs_roundtrip_initial_state_default_stepper_and_bad_states(tmp_path):
    import xarray as xr

    m = DiffusiveEBM(24, grid="lat", insolation_type="annual", D=0.7, water_depth=5.0, albedo_width=1.5)
    assert m.grid == LatitudeGrid(24, "lat") and hash(m.grid) == hash(LatitudeGrid(24, "lat"))
    ds = xr.Dataset(attrs=m.to_attrs("ebm_"))
    ds.to_netcdf(tmp_path / "m.nc", engine="h5netcdf")
    back = DiffusiveEBM.from_attrs(xr.open_dataset(tmp_path / "m.nc", engine="h5netcdf").attrs, "ebm_")
    assert back.grid == m.grid and back.insolation_type == "annual"
    for a, b in zip(jax.tree_util.tree_leaves(m), jax.tree_util.tree_leaves(back)):
        assert np.allclose(a, b, rtol=1e-15, atol=0)
    assert isinstance(m.default_stepper(), SemiImplicitEuler)
    assert m.initial_state(jax.random.PRNGKey(0)).Ts.shape == (24,)
    with pytest.raises(ConfigError, match="Ts="):
        m.initial_state(jnp.zeros(24))
    tr = simulate(m, None, m.initial_state(), dt=DT, n_steps=10, save_every=5)  # the default stepper
    assert tr.states.Ts.shape == (3, 24)
    with pytest.raises(DataError, match="shape"):
        simulate(m, None, EBMState(Ts=jnp.zeros(23)), dt=DT, n_steps=1)
    # with_params keeps D when only the heat capacity changes
    m2 = m.with_params(water_depth=20.0)
    assert np.isclose(float(m2.D), 0.7, rtol=1e-14) and float(m2.heat_capacity) == 4 * float(m.heat_capacity)

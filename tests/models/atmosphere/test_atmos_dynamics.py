"""The atmosphere's dynamics against dinosaur itself and against invariants: rest stays at rest, the adapter
reproduces dinosaur's own Held-Suarez run step for step, the dry-mass fixer holds the dry mass, a blow-up is
reported with its step and variable. Each test compiles a T21 L8 IMEX-SIL3 step (tens of seconds): all are listed
in tests/slow_tests.txt."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dinosaur import held_suarez as dinosaur_hs
from dinosaur import primitive_equations as dinosaur_pe
from dinosaur import time_integration as ti

from nemic.core import BlowUpError, FunctionProcess, rollout, simulate
from nemic.models.atmosphere import (
    AtmosphereState,
    ColumnPhysics,
    ColumnTendencies,
    HeldSuarez,
    PrimitiveEquations,
    global_mean_dry_surface_pressure,
)


def _last(traj):
    return jax.tree_util.tree_map(lambda x: x[-1], traj.states)


def test_resting_isothermal_atmosphere_stays_at_rest():
    model = PrimitiveEquations()
    s0 = model.initial_state(temperature=260.0, surface_humidity=0.01)  # uniform T, p_s and q(sigma): at rest
    traj = simulate(model, None, s0, dt=model.dt, n_steps=72, save_every=72, observe=model.observe)  # 1 day
    f = _last(traj)
    assert float(jnp.max(jnp.abs(f.eastward_wind))) < 1e-8
    assert float(jnp.max(jnp.abs(f.northward_wind))) < 1e-8
    np.testing.assert_allclose(f.air_temperature, 260.0, atol=1e-9)
    np.testing.assert_allclose(f.surface_air_pressure, 1e5, rtol=1e-10)
    np.testing.assert_allclose(f.specific_humidity, traj.states.specific_humidity[0], atol=1e-14)


class _HeldSuarezWithTracers(ti.ExplicitODE):
    """dinosaur's Held-Suarez forcing with a zero tendency for the tracers (dinosaur's forcing returns none, and
    its compose_equations needs matching structures)."""

    def __init__(self, forcing):
        self.forcing = forcing

    def explicit_terms(self, state):
        out = self.forcing.explicit_terms(state)
        return dataclasses.replace(out, tracers={k: jnp.zeros_like(v) for k, v in state.tracers.items()})


def test_adapter_reproduces_dinosaurs_own_held_suarez_run_over_100_steps():
    model = PrimitiveEquations()
    g = model.grid
    s0 = model.initial_state(jax.random.key(3), perturbation=5e3, surface_humidity=0.015)
    n = 100
    ours = _last(jax.jit(lambda s: rollout(model + HeldSuarez(g), model.default_stepper(), s, dt=model.dt,
                                           n_steps=n, save_every=n))(s0))
    # dinosaur driven directly: its equations, its SIL3 stepper, its filters, in its nondimensional time
    t_ref = np.full((g.layers,), g.reference_temperature)
    eq = dinosaur_pe.PrimitiveEquationsSigma(t_ref, np.zeros(g.horizontal.modal_shape), g.coords, g.specs,
                                             humidity_key="specific_humidity")
    forcing = _HeldSuarezWithTracers(dinosaur_hs.HeldSuarezForcingSigma(g.coords, g.specs, t_ref))

    def dinosaur_run(dt):
        step = ti.step_with_filters(
            ti.imex_rk_sil3(ti.compose_equations([eq, forcing]), dt),
            [ti.exponential_step_filter(g.horizontal, dt, tau=dt / model.filter_attenuation, order=18),
             ti.horizontal_diffusion_step_filter(g.horizontal, dt, model.hyperdiffusion_tau * g.factor("s"),
                                                 order=2)])
        return model.observe(AtmosphereState.from_dinosaur(jax.jit(ti.repeated(step, n))(s0.to_dinosaur())))

    dt = model.dt * g.factor("s")
    ref = dinosaur_run(dt)
    # the size of round-off over these 100 steps: dinosaur against itself with dt one ulp larger
    ref_ulp = dinosaur_run(float(np.nextafter(dt, 1.0)))
    ours = model.observe(ours)
    assert float(jnp.max(jnp.abs(ref.eastward_wind))) > 0.5  # the forcing has spun up a circulation
    for name in ("air_temperature", "eastward_wind", "northward_wind", "specific_humidity", "surface_air_pressure"):
        x, y, z = getattr(ours, name), getattr(ref, name), getattr(ref_ulp, name)
        diff, roundoff = float(jnp.max(jnp.abs(x - y))), float(jnp.max(jnp.abs(z - y)))
        print(f"{name}: max |nemic - dinosaur| = {diff:.3e}, dinosaur's own 1-ulp sensitivity {roundoff:.3e}")
        # nemic's time scaling (seconds) rounds differently from dinosaur's units: a difference of the size of
        # dinosaur's own sensitivity to a 1-ulp change of its time step, or of a few ulps of the log surface
        # pressure (about 45 in dinosaur's units): measured 8e-13 K, 6e-14 m/s, 2e-17 kg/kg, 6e-9 Pa (6e-14)
        assert diff <= 10 * roundoff + 1e-13 * float(jnp.max(jnp.abs(y))), name
        assert diff <= 1e-7 * float(jnp.max(jnp.abs(y - jnp.mean(y)))), name


def _moistening(c):
    zero = jnp.zeros_like(c.temperature)
    return ColumnTendencies(zero, jnp.full_like(c.temperature, 1e-7), zero, zero, jnp.zeros(()))


def test_dry_mass_fixer_holds_global_dry_mass_to_round_off():
    plain = PrimitiveEquations()
    fixed = PrimitiveEquations(fix_dry_mass=True)
    g = plain.grid
    s0 = plain.initial_state(jax.random.key(0), perturbation=5e3, surface_humidity=0.01)
    m0 = float(global_mean_dry_surface_pressure(g, s0))
    physics = HeldSuarez(g) + ColumnPhysics(g, _moistening)  # moistening at constant p_s removes dry mass
    drift = {}
    for name, model in (("plain", plain), ("fixed", fixed)):
        traj = simulate(model + physics, None, s0, dt=model.dt, n_steps=48, save_every=8)
        states = [jax.tree_util.tree_map(lambda x, i=i: x[i], traj.states) for i in range(len(traj.t))]
        masses = np.array([float(global_mean_dry_surface_pressure(g, s)) for s in states])
        drift[name] = np.max(np.abs(masses - m0)) / m0
    print(f"relative dry-mass drift over 16 h: without fixer {drift['plain']:.3e}, with fixer {drift['fixed']:.3e}")
    assert drift["plain"] > 1e-5  # 1e-7 kg/kg/s over 16 h: ~6e-3 kg/kg more water in every column
    assert drift["fixed"] < 1e-12


def test_blowup_names_the_step_and_the_variable():
    model = PrimitiveEquations(moist=False)  # humidity a passive tracer: a NaN in it stays in it
    dt = model.dt

    def poison(state, t):
        z = jax.tree_util.tree_map(jnp.zeros_like, state)
        return dataclasses.replace(z, specific_humidity=jnp.where(t >= 2.5 * dt, jnp.nan, 0.0)
                                   * jnp.ones_like(state.specific_humidity))

    s0 = model.initial_state()
    with pytest.raises(BlowUpError) as info:
        simulate(model + FunctionProcess(poison), None, s0, dt=dt, n_steps=6, save_every=1)
    e = info.value
    assert e.step == 3 and e.variable == "specific_humidity"
    assert "\n" not in str(e) and "specific_humidity" in str(e)
    assert len(e.trajectory.t) == 3  # the initial state and the two finite steps are kept

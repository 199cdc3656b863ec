"""Tests of the diffusive EBM against analytic solutions (North 1975), conservation, convergence and autodiff."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from numpy.polynomial import legendre as npleg
from scipy.optimize import brentq
from scipy.special import eval_legendre

from nemic.core.errors import ConfigError
from nemic.core.rollout import rollout
from nemic.core.steppers import SemiImplicitEuler
from nemic.models.ebm import (
    SECONDS_PER_YEAR,
    DiffusiveEBM,
    EBMState,
    MeridionalDiffusion,
    global_mean,
    ice_albedo,
)

def run_years(m, state=None, years=1.0, dt=None, checkpoint=False):
    """Run the model with its default stepper for ``years`` (timestep ``dt`` [s], default a 90th of a year) and
    return the final state (pure: jit/vmap/grad through it)."""
    state = m.initial_state() if state is None else state
    dt = m.default_timestep if dt is None else dt
    n = int(round(years * SECONDS_PER_YEAR / dt))
    return rollout(m, m.default_stepper(), state, dt=dt, n_steps=n, save_every=n, checkpoint=checkpoint).final


P = dict(S0=1365.2, s2=-0.48, A=210.0, B=2.0, D=0.555, a0=0.3, a2=0.078, ai=0.62, Tf=-10.0)


def _equilibrate(m, years=80, T0=None):
    run = eqx.filter_jit(lambda m, s: run_years(m, s, years))
    return run(m, m.initial_state(Ts=T0))


# ---------------------------------------------------------------- analytic references (independent of the model)
def ice_free_legendre_solution(x):
    """T = sum_n f_n P_n / (B + n(n+1) D) with f_n the Legendre coefficients of S0/4(1+s2 P2)(1-a0-a2 P2) - A."""
    q = npleg.legmul([1.0, 0.0, P["s2"]], [1.0 - P["a0"], 0.0, -P["a2"]]) * P["S0"] / 4
    q[0] -= P["A"]
    n = np.arange(len(q))
    return npleg.legval(x, q / (P["B"] + n * (n + 1) * P["D"]))


def north_ice_edges(lat_lo=5.0, lat_hi=87.0, n_bracket=60, nmax=400):
    """Ice-edge latitudes of the step-albedo EBM from North's (1975) Legendre-series solution: roots of
    T(x_s; x_s) = Tf, with the series coefficients computed by Gauss quadrature split at x_s."""
    ns = np.arange(0, nmax + 1, 2)
    xg, wg = np.polynomial.legendre.leggauss(300)

    def T_at_edge(xs):
        f = np.zeros(len(ns))
        for lo, hi in ((0.0, xs), (xs, 1.0)):
            x, w = 0.5 * (hi - lo) * xg + 0.5 * (hi + lo), 0.5 * (hi - lo) * wg
            q = P["S0"] / 4 * (1 + P["s2"] * 0.5 * (3 * x**2 - 1))
            alb = np.where(x < xs, P["a0"] + P["a2"] * 0.5 * (3 * x**2 - 1), P["ai"])
            f += (2 * ns + 1) * (eval_legendre(ns[:, None], x) @ (w * (q * (1 - alb) - P["A"])))
        return np.sum(f / (P["B"] + ns * (ns + 1) * P["D"]) * eval_legendre(ns, xs)) - P["Tf"]

    grid = np.sin(np.deg2rad(np.linspace(lat_lo, lat_hi, n_bracket)))
    vals = [T_at_edge(v) for v in grid]
    return [np.degrees(np.arcsin(brentq(T_at_edge, a, b, xtol=1e-13)))
            for a, b, va, vb in zip(grid[:-1], grid[1:], vals[:-1], vals[1:]) if va * vb < 0]


# ---------------------------------------------------------------- analytic solutions
def test_ice_free_equilibrium_matches_legendre_series_with_second_order_convergence():
    errs, ns = [], [15, 30, 60, 120]
    for n in ns:
        m = DiffusiveEBM(n, Tf=-1000.0)  # no ice anywhere
        T = np.asarray(_equilibrate(m, years=40).Ts)
        errs.append(np.max(np.abs(T - ice_free_legendre_solution(np.asarray(m.x)))))
    slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert errs[-1] < 2e-3, errs
    assert -2.3 < slope < -1.7, (slope, errs)


def test_north_ice_cap_edge_converges_to_analytic_74_8_degrees():
    roots = north_ice_edges(70.0, 80.0, 3)  # the stable edge; the full scan also finds 13.8 and 83.6 (unstable)
    stable = [r for r in roots if 70 < r < 80]
    assert len(stable) == 1 and abs(stable[0] - 74.8) < 0.1, roots
    edge_ref = stable[0]
    errs = []
    for n, width in [(90, 2.0), (180, 1.0), (360, 0.5), (720, 0.25)]:
        m = DiffusiveEBM(n, grid="lat", albedo_width=width)
        s = _equilibrate(m, years=120, T0=20 - 40 * np.asarray(m.x) ** 2)
        errs.append(abs(float(m.diagnostics(s)["ice_edge"]) - edge_ref))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.05, errs


# ---------------------------------------------------------------- the diffusion operator
@pytest.mark.parametrize("grid", ["sin", "lat"])
def test_diffusion_conserves_energy_and_solves_its_implicit_system(grid):
    m = DiffusiveEBM(37, grid=grid)
    T = jax.random.normal(jax.random.PRNGKey(0), (37,)) * 20
    diff = m.implicit
    tend = diff.tendency(EBMState(Ts=T), 0.0).Ts
    w = m.weights
    assert abs(float(jnp.sum(w * tend))) < 1e-13 * float(jnp.sum(w * jnp.abs(tend)))
    eta = 3e6
    x = diff.implicit_solve(EBMState(Ts=T), 0.0, eta).Ts
    resid = x - eta * diff.tendency(EBMState(Ts=x), 0.0).Ts - T
    assert float(jnp.max(jnp.abs(resid))) < 1e-10
    assert abs(float(global_mean(x, w) - global_mean(T, w))) < 1e-11  # implicit step conserves too


def test_diffusion_many_steps_conserves_global_mean():
    m = DiffusiveEBM(45, D=5.0)
    # pure diffusion: radiation off by A=B=0 and S0=0
    m = m.with_params(S0=0.0, A=0.0, B=0.0)
    T0 = 12 - 40 * m.x**2 + jnp.sin(7 * m.x)
    T1 = eqx.filter_jit(lambda m, s: run_years(m, s, 30))(m, m.initial_state(Ts=T0)).Ts
    assert abs(float(global_mean(T1, m.weights) - global_mean(T0, m.weights))) < 1e-11


# ---------------------------------------------------------------- time convergence
def test_semi_implicit_euler_converges_first_order_in_time():
    m = DiffusiveEBM(18, insolation_type="daily", albedo_width=3.0)
    s0 = m.initial_state()

    def run(n):
        return eqx.filter_jit(lambda m: run_years(m, s0, 0.5, dt=0.5 * SECONDS_PER_YEAR / n).Ts)(m)

    ref = run(16384)
    ns = np.array([32, 64, 128, 256])
    errs = [float(jnp.max(jnp.abs(run(n) - ref))) for n in ns]
    slope = np.polyfit(np.log(1.0 / ns), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1, (slope, errs)


# ---------------------------------------------------------------- autodiff and transformations
def test_check_grads_through_integration():
    def f(p):
        m = DiffusiveEBM(8, A=p[0], B=p[1], D=p[2], a0=p[3], albedo_width=2.0, insolation_type="daily")
        return run_years(m, years=0.05, dt=SECONDS_PER_YEAR / 100).Ts

    check_grads(jax.jit(f), (jnp.array([210.0, 2.0, 0.555, 0.3]),), order=1, modes=["fwd", "rev"], atol=1e-5,
                rtol=1e-5)


def test_check_grads_of_processes_and_implicit_solve():
    m = DiffusiveEBM(6, albedo_width=2.0)
    T = jnp.linspace(-30.0, 25.0, 6)

    def rad(T, a0):
        return m.with_params(a0=a0).explicit.tendency(EBMState(Ts=T), 0.0).Ts

    def solve(T, D, eta):
        return MeridionalDiffusion.from_diffusivity(D, m.heat_capacity, m.grid).implicit_solve(
            EBMState(Ts=T), 0.0, eta).Ts

    check_grads(jax.jit(rad), (T, jnp.asarray(0.3)), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(solve), (T, jnp.asarray(0.5), jnp.asarray(4e5)), order=1, modes=["fwd", "rev"], rtol=1e-5)
    check_grads(lambda T, w: ice_albedo(T, m.x, 0.3, 0.078, 0.62, -10.0, w), (T, jnp.asarray(2.0)), order=1)


def test_jit_vmap_grad_of_public_objects():
    m = DiffusiveEBM(12, albedo_width=1.0)

    def gmt(D):
        mm = m.with_params(D=D)
        return global_mean(run_years(mm, years=2.0).Ts, mm.weights)

    Ds = jnp.array([0.3, 0.555, 0.9])
    v = jax.jit(jax.vmap(gmt))(Ds)
    g = jax.jit(jax.vmap(jax.grad(gmt)))(Ds)
    eps = 1e-5
    fd = (jax.vmap(gmt)(Ds + eps) - jax.vmap(gmt)(Ds - eps)) / (2 * eps)
    assert v.shape == (3,) and np.allclose(g, fd, rtol=1e-5, atol=1e-8)
    # diagnostics and the process under jit + vmap over states
    states = EBMState(Ts=jnp.stack([m.initial_state().Ts + k for k in range(3)]))
    d = jax.jit(jax.vmap(lambda s: m.diagnostics(s)["ice_edge"]))(states)
    assert d.shape == (3,) and np.all(np.diff(np.asarray(d)) > 0)  # warmer -> ice edge further poleward
    step = jax.jit(lambda s: SemiImplicitEuler().step(m, s, 0.0, 1e5, None)[0])
    assert step(m.initial_state()).Ts.shape == (12,)


def test_co2_doubling_warms_by_forcing_over_feedback_when_ice_free():
    m = DiffusiveEBM(30, Tf=-1000.0)
    m2 = m.with_params(co2_ratio=2.0)
    dT = global_mean(_equilibrate(m2, 40).Ts - _equilibrate(m, 40).Ts, m.weights)
    assert abs(float(dT) - 5.35 * np.log(2) / 2.0) < 1e-6  # no ice feedback: dT = F/B exactly


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, msg", [
    (dict(water_depth=-1.0), "water_depth"), (dict(D=-0.1), "D"), (dict(a0=1.2), "a0"), (dict(ai=-0.1), "ai"),
    (dict(a0=0.95, a2=0.2), "warm albedo"), (dict(num_lat=1), "num_lat"), (dict(grid="cubed"), "grid"),
    (dict(insolation_type="hourly"), "insolation_type"), (dict(albedo_width=-1.0), "albedo_width"),
    (dict(A=float("nan")), "finite"),
])
def test_bad_parameters_raise_one_line_config_errors(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        DiffusiveEBM(**kw)


def test_bad_state_and_params():
    m = DiffusiveEBM(10)
    with pytest.raises(ConfigError, match="shape"):
        m.initial_state(Ts=jnp.zeros(11))
    with pytest.raises(ConfigError, match="unknown"):
        m.with_params(K=1.0)
    with pytest.raises(ConfigError, match="D"):
        m.with_params(D=-1.0)


def test_newton_steady_states_reproduce_all_three_north_ice_edges_with_their_stability():
    """North's step-albedo series has a stable edge (74.8 deg) and two unstable ones (13.8 deg: large ice cap,
    83.6 deg: small ice cap); Newton's method on the smooth-albedo model finds all three, and the sign of the
    Jacobian's largest eigenvalue says which are stable."""
    roots = north_ice_edges(5.0, 87.0, 30)
    assert len(roots) == 3, roots
    m = DiffusiveEBM(180, grid="lat", albedo_width=0.5)
    x = np.asarray(m.x)
    found = {}
    for T0 in (-5 - 60 * x**2, 20 - 80 * x**2, 10 - 20 * x**2):
        s, info = m.steady_state(m.initial_state(Ts=T0))
        assert info["converged"] and info["residual"] < 1e-8
        found[round(float(m.diagnostics(s)["ice_edge"]), 3)] = (info["max_growth_rate"], s)
    edges = sorted(found)
    assert len(edges) == 3
    for edge, root, tol in zip(edges, roots, (0.05, 0.15, 1.0)):  # the small cap spans few cells: coarser
        assert abs(edge - root) < tol, (edges, roots)
    growth = [found[e][0] for e in edges]
    assert growth[0] > 0 and growth[1] < 0 and growth[2] > 0
    # the stable one is also what time integration converges to
    T_int = _equilibrate(m, years=150, T0=20 - 80 * x**2).Ts
    assert float(jnp.max(jnp.abs(T_int - found[edges[1]][1].Ts))) < 1e-6

"""EBM experiments: equilibrium, CO2 doubling and the snowball hysteresis against North's analytic results."""

import numpy as np
import pytest
from scipy.special import eval_legendre

from nemic.core.errors import ConfigError
from nemic.core.rollout import rollout
from nemic.experiments import ebm as X
from nemic.models.ebm import DiffusiveEBM

A, B, D, a0, a2, ai, Tf, s2 = 210.0, 2.0, 0.555, 0.3, 0.078, 0.62, -10.0, -0.48


def _T_per_unit_S0(xs, nmax=200):
    """Temperature at the ice edge x_s per unit S0 (A = 0) of the step-albedo EBM (North 1975 Legendre series)."""
    ns = np.arange(0, nmax + 1, 2)
    xg, wg = np.polynomial.legendre.leggauss(200)
    f = np.zeros(len(ns))
    for lo, hi in ((0.0, xs), (xs, 1.0)):
        x, w = 0.5 * (hi - lo) * xg + 0.5 * (hi + lo), 0.5 * (hi - lo) * wg
        p2 = 0.5 * (3 * x**2 - 1)
        alb = np.where(x < xs, a0 + a2 * p2, ai)
        f += (2 * ns + 1) * (eval_legendre(ns[:, None], x) @ (w * 0.25 * (1 + s2 * p2) * (1 - alb)))
    return np.sum(f / (B + ns * (ns + 1) * D) * eval_legendre(ns, xs))


def analytic_fold_and_melt():
    """S0 at which the ice-cap branch ends (the minimum over x_s of S0(x_s) = (Tf + A/B)/T_unit(x_s)) and S0 at
    which a snowball's equator reaches Tf (all-ice albedo: T(0) = f0/B + f2 P2(0)/(B + 6D))."""
    xs = np.sin(np.deg2rad(np.linspace(10, 60, 101)))
    fold = np.min([(Tf + A / B) / _T_per_unit_S0(v) for v in xs])
    unit_eq = 0.25 * (1 - ai) / B - 0.5 * 0.25 * (1 - ai) * s2 / (B + 6 * D)
    return fold, (Tf + A / B) / unit_eq


def test_hysteresis_transitions_match_north_analytic_fold_and_melt():
    fold, melt = analytic_fold_and_melt()
    assert 1255 < fold < 1262 and 1830 < melt < 1840  # about 1259.0 and 1834.8 W m-2
    m = DiffusiveEBM(180, grid="lat", albedo_width=0.5)
    ds = X.hysteresis(m, np.arange(1230.0, 1301.0, 2.0), years_per_value=30)
    # the warm branch collapses into the snowball between snowball_S0 and snowball_S0 + 2
    assert fold - 6 < ds.attrs["snowball_S0"] < fold, (ds.attrs, fold)
    assert np.all(ds.ice_edge.sel(branch="up").values == 0.0)  # no way back at these S0: hysteresis
    # melting a snowball (step albedo so that the all-ice albedo is exactly ai)
    m0 = DiffusiveEBM(90, grid="lat", albedo_width=0.0)
    ds2 = X.hysteresis(m0, np.arange(1800.0, 1871.0, 2.0), years_per_value=30, start="cold")
    assert melt <= ds2.attrs["deglaciation_S0"] < melt + 2, (ds2.attrs, melt)
    assert np.all(ds2.ice_edge.sel(branch="down").values > 0.0)  # once thawed it stays thawed down to 1800


def test_equilibrium_and_co2_doubling():
    m = DiffusiveEBM(60, albedo_width=1.0)
    state, years = X.equilibrium(m, tol=1e-7)
    ds = X.equilibrium_dataset(m, state)
    # energy balance at equilibrium: global-mean ASR = OLR
    w = m.weights
    assert abs(float(((ds.ASR - ds.OLR) * np.asarray(w)).sum()) / 2) < 1e-4
    assert ds.heat_transport.values[0] == 0 and ds.heat_transport.values[-1] == 0
    assert ds.heat_transport.sel(lat_edges=45, method="nearest") > 0  # poleward in the north
    r = X.co2_doubling(m)
    assert abs(r["forcing_W_m2"] - 5.35 * np.log(2)) < 1e-12
    # the ice-albedo feedback amplifies the no-feedback response F/B
    assert r["delta_global_mean_Ts"] > r["no_feedback_delta_T"]
    assert r["ice_edge_forced"] > r["ice_edge_control"]


def test_bad_sweeps_are_rejected():
    m = DiffusiveEBM(10)
    with pytest.raises(ConfigError, match="at least 2"):
        X.hysteresis(m, [])
    with pytest.raises(ConfigError, match="at least 2"):
        X.hysteresis(m, [1365.0])
    with pytest.raises(ConfigError, match="finite"):
        X.hysteresis(m, [1300.0, float("nan")])


def test_unstable_timestep_stops_with_a_clear_message():
    from nemic.core.errors import BlowUpError

    m = DiffusiveEBM(10, water_depth=0.05)  # C = 2.1e5 J m-2 K-1: explicit radiation needs dt << 2C/B = 2.1e5 s
    with pytest.raises(BlowUpError, match="2 C / B"):
        X.equilibrium(m, dt=3.5e5, chunk_years=1.0)


def test_checkpointed_and_plain_gradients_agree():
    import jax

    m = DiffusiveEBM(12, albedo_width=2.0)

    def loss(D, checkpoint):
        mm = m.with_params(D=D)
        n = 3 * 90
        return rollout(mm, mm.default_stepper(), mm.initial_state(), dt=mm.default_timestep, n_steps=n,
                       save_every=n, checkpoint=checkpoint).final.Ts.sum()

    g1 = jax.jit(jax.grad(lambda D: loss(D, False)))(0.555)
    g2 = jax.jit(jax.grad(lambda D: loss(D, True)))(0.555)
    assert np.allclose(g1, g2, rtol=1e-12)

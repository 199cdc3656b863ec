"""The EBM and its insolation compared with independent references: climlab (same parameters) and quadrature."""

import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from nemic.core.rollout import rollout
from nemic.models.ebm import DiffusiveEBM, annual_mean_insolation, daily_insolation, global_mean


def simulate_final(m, years):
    """Ts after ``years`` with the model's default stepper (semi-implicit Euler) and timestep (1/90 year)."""
    n = int(round(years * 90))
    return rollout(m, m.default_stepper(), m.initial_state(), dt=m.default_timestep, n_steps=n, save_every=n).final.Ts


def import_climlab():
    """Import climlab (a test dependency) without its warnings about optional Fortran extensions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("climlab")


def test_equilibrium_matches_climlab_on_the_same_grid_and_timestep():
    climlab = import_climlab()
    m = DiffusiveEBM(90, grid="lat")
    T = eqx.filter_jit(lambda m: simulate_final(m, 30))(m)
    c = climlab.EBM(num_lat=90)
    c.integrate_years(30, verbose=False)
    assert np.allclose(np.asarray(m.lat), np.asarray(c.lat))
    # same scheme; the two discretisations of the diffusion differ at O(dlat^2): tolerance 0.01 K
    assert np.max(np.abs(np.asarray(T) - np.asarray(c.Ts)[:, 0])) < 0.01


def test_daily_insolation_matches_climlab():
    import_climlab()
    from climlab.solar.insolation import daily_insolation as cl_daily

    lat = np.linspace(-89.5, 89.5, 37)
    days = np.linspace(0, 365, 53)
    ours = np.asarray(daily_insolation(lat[:, None], days[None, :]))
    orb = {"ecc": 0.017236, "long_peri": 281.37, "obliquity": 23.446}
    theirs = np.stack([np.asarray(cl_daily(lat, d, orb=orb, S0=1365.2)) for d in days], axis=1)
    # climlab uses Berger's series for the solar longitude, we solve Kepler's equation: O(e^3) ~ 1e-5 apart
    assert np.max(np.abs(ours - theirs)) < 0.5, np.max(np.abs(ours - theirs))


@pytest.mark.parametrize("obliquity, ecc", [(23.446, 0.017236), (0.0, 0.0), (45.0, 0.05)])
def test_annual_mean_insolation_matches_quadrature_formula(obliquity, ecc):
    """Q(phi) = S0/(2 pi^2 sqrt(1-e^2)) int_0^{2pi} sqrt(1 - (sin phi cos b - cos phi sin b sin g)^2) dg
    (McGehee & Lehman 2012, doi:10.1137/10079879X), evaluated with scipy.integrate.quad."""
    S0, b = 1365.2, np.deg2rad(obliquity)
    lats = np.array([-80.0, -45.0, 0.0, 10.0, 33.3, 66.0, 89.0])
    ref = [S0 / (2 * np.pi**2 * np.sqrt(1 - ecc**2)) * quad(
        lambda g: np.sqrt(max(0.0, 1 - (np.sin(p) * np.cos(b) - np.cos(p) * np.sin(b) * np.sin(g)) ** 2)),
        0, 2 * np.pi, limit=200)[0] for p in np.deg2rad(lats)]
    ours = np.asarray(annual_mean_insolation(lats, S0, ecc, obliquity, 281.37, n_samples=2000))
    assert np.max(np.abs(ours - ref)) < 0.05, (ours, ref)


def test_p2_and_exact_annual_mean_runs_agree_in_global_mean():
    m1 = DiffusiveEBM(45, insolation_type="p2")
    m2 = DiffusiveEBM(45, insolation_type="annual")
    q1, q2 = m1.explicit.insolation_at(0.0), m2.explicit.insolation_at(0.0)
    # both integrate to S0/4 (exact annual mean: S0/(4 sqrt(1-e^2))); cell-centre values on 45 cells carry the
    # midpoint-rule error S0/4 * |s2| * 3/2 * dx^2/12 / ... ~ 0.04 W m-2
    assert abs(float(global_mean(q1, m1.weights)) - 1365.2 / 4) < 0.1
    assert abs(float(global_mean(q2, m2.weights)) - 1365.2 / 4 / np.sqrt(1 - 0.017236**2)) < 0.1
    assert float(jnp.max(jnp.abs(q1 - q2))) < 12.0  # the two-term fit is good to ~3 %

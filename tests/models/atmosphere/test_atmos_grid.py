"""The atmosphere's grid, units, states and CF output, checked against analytic values and NumPy's
Gauss-Legendre nodes (fast: no time step is compiled)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import ConfigError, DataError, simulate
from nemic.core.rollout import Trajectory
from nemic.io.output import to_xarray
from nemic.models.atmosphere import (
    AtmosphereFields,
    AtmosphereGrid,
    HeldSuarez,
    PrimitiveEquations,
    global_mean_dry_surface_pressure,
)

OMEGA = 7.292e-5
RADIUS = 6.37122e6


@pytest.fixture(scope="module")
def model():
    return PrimitiveEquations()


def test_default_grid_is_t21_l8_on_gauss_legendre_nodes(model):
    g = model.grid
    assert (g.truncation, g.layers) == (21, 8)
    assert g.nodal_shape == (8, 32, 64)
    x, _ = np.polynomial.legendre.leggauss(32)
    np.testing.assert_allclose(np.sin(np.deg2rad(g.lat)), np.sort(x), atol=1e-13)
    np.testing.assert_allclose(g.lon, np.arange(64) * 360 / 64, atol=1e-12)
    np.testing.assert_allclose(g.sigma, (np.arange(8) + 0.5) / 8)
    np.testing.assert_allclose(g.area_weights.sum(), 1.0)
    # the time unit of dinosaur's scales is 1 / (2 Omega)
    np.testing.assert_allclose(g.time_scale, 1 / (2 * OMEGA), rtol=1e-12)


def test_modal_nodal_round_trip_and_analytic_wind(model):
    g = model.grid
    lat = np.deg2rad(g.lat)[:, None]
    lon = np.deg2rad(g.lon)[None, :]
    # a band-limited field (spherical harmonics of degree <= 3) survives nodal -> modal -> nodal
    f = np.sin(lat) ** 3 + np.cos(lat) ** 2 * np.sin(lat) * np.cos(2 * lon) + 1.0
    np.testing.assert_allclose(g.to_nodal(g.to_modal(jnp.asarray(f))), f, atol=1e-12)
    # solid-body rotation u = U cos(lat): relative vorticity 2 U sin(lat) / a, no divergence
    u0 = 20.0
    u = np.broadcast_to(u0 * np.cos(lat), (8, 32, 64))
    v = np.zeros_like(u)
    vort, div = g.vorticity_divergence(jnp.asarray(u), jnp.asarray(v))
    zeta = g.to_nodal(vort) * 2 * OMEGA  # vorticity is in units of 2 Omega
    np.testing.assert_allclose(zeta, np.broadcast_to(2 * u0 * np.sin(lat) / RADIUS, u.shape), atol=1e-15)
    np.testing.assert_allclose(g.to_nodal(div), 0.0, atol=1e-12)  # nondimensional; vorticity is ~1e-2 here
    uu, vv = g.winds(vort, div)
    np.testing.assert_allclose(uu, u, atol=1e-10)
    np.testing.assert_allclose(vv, 0.0, atol=1e-10)


def test_initial_state_is_isothermal_at_rest_in_si(model):
    s = model.initial_state(temperature=250.0, surface_pressure=9.5e4, surface_humidity=0.01)
    f = model.observe(s)
    np.testing.assert_allclose(f.air_temperature, 250.0, atol=1e-9)
    # dinosaur's Legendre basis is accurate to ~5e-13 and log(p_s) is ~45 in its units: 1e-10 relative in p_s
    np.testing.assert_allclose(f.surface_air_pressure, 9.5e4, rtol=1e-10)
    np.testing.assert_allclose(f.eastward_wind, 0.0, atol=1e-12)
    np.testing.assert_allclose(f.specific_humidity[:, 5, 7], 0.01 * model.grid.sigma ** 3, atol=1e-14)
    # dry-air surface pressure: p_s (1 - sum_k q_k dsigma_k), here with sum_k sigma_k^3 / 8 at sigma = (k + 1/2)/8
    col = np.sum(0.01 * ((np.arange(8) + 0.5) / 8) ** 3) / 8
    np.testing.assert_allclose(global_mean_dry_surface_pressure(model.grid, s), 9.5e4 * (1 - col), rtol=1e-10)
    # from_fields inverts observe
    back = model.from_fields(f)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(s)):
        np.testing.assert_allclose(a, b, atol=1e-10 * max(1.0, float(jnp.abs(b).max())))


def test_cf_output_on_time_level_lat_lon(model):
    s = model.initial_state(jax.random.key(1), perturbation=2e3)
    fields = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), model.observe(s))
    ds = to_xarray(Trajectory(t=jnp.array([0.0, 1200.0]), states=fields, blowup_step=jnp.array(-1)),
                   coords=model.coords(), attrs=model.to_attrs())
    want = {"air_temperature": "K", "eastward_wind": "m s-1", "northward_wind": "m s-1",
            "specific_humidity": "kg kg-1"}
    for name, units in want.items():
        assert ds[name].dims == ("time", "level", "lat", "lon")
        assert ds[name].attrs["standard_name"] == name and ds[name].attrs["units"] == units
    assert ds["surface_air_pressure"].dims == ("time", "lat", "lon")
    assert ds["surface_air_pressure"].attrs["units"] == "Pa"
    assert "precipitation_flux" not in ds  # no physics process gave one
    assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["units"] == "degrees_east"
    assert ds["time"].attrs["units"] == "s"
    assert ds.attrs["nemic_model"] == "PrimitiveEquations" and ds.attrs["truncation"] == 21
    rebuilt = PrimitiveEquations.from_attrs(ds.attrs)
    assert rebuilt.params() == model.params()


def test_held_suarez_equilibrium_temperature_is_the_paper_formula(model):
    hs = HeldSuarez(model.grid)
    ps = np.full((32, 64), 1e5)
    teq = np.asarray(hs.equilibrium_temperature(ps))
    phi = np.deg2rad(model.grid.lat)[None, :, None]
    p = model.grid.sigma[:, None, None] * 1e5
    ref = np.maximum(200.0, (315.0 - 60.0 * np.sin(phi) ** 2 - 10.0 * np.log(p / 1e5) * np.cos(phi) ** 2)
                     * (p / 1e5) ** (2 / 7))
    np.testing.assert_allclose(teq, np.broadcast_to(ref, teq.shape), rtol=1e-12)


def test_bad_input_one_line_errors(model):
    with pytest.raises(ConfigError, match="unsupported truncation T20"):
        PrimitiveEquations(truncation=20)
    with pytest.raises(ConfigError, match="layers"):
        AtmosphereGrid(21, 1)
    other = PrimitiveEquations(layers=5).initial_state()
    with pytest.raises(DataError, match="5 levels but the grid has 8"):
        simulate(model, None, other, dt=model.dt, n_steps=1)
    with pytest.raises(DataError, match="5 levels but the grid has 8"):  # also with terms added to the core
        simulate(model + HeldSuarez(model.grid), None, other, dt=model.dt, n_steps=1)
    s = model.initial_state()
    bad = s.__class__(s.vorticity.at[0, 0, 0].set(jnp.nan), s.divergence, s.temperature_variation,
                      s.log_surface_pressure, s.specific_humidity)
    with pytest.raises(DataError) as info:
        simulate(model, None, bad, dt=model.dt, n_steps=1)
    assert "\n" not in str(info.value) and "vorticity" in str(info.value)
    with pytest.raises(ConfigError, match="needs key"):
        model.initial_state(perturbation=1e3)
    with pytest.raises(DataError, match="AtmosphereState"):
        model.check_state(AtmosphereFields(*(jnp.zeros(3),) * 5))

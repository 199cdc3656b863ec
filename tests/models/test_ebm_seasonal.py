"""Seasonal EBM: climatology energy balance, insolation under jit/vmap/grad, and what a seasonal cycle identifies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.experiments import ebm as X
from nemic.models.ebm import (
    DiffusiveEBM,
    annual_mean_insolation,
    daily_insolation,
    heat_transport,
    solar_longitude,
)
from nemic.train.calibration import identifiability


def test_seasonal_climatology_is_in_energy_balance_and_lags_the_sun():
    m = DiffusiveEBM(24, insolation_type="daily", albedo_width=2.0)
    ds = X.seasonal_climatology(m, spinup_years=20, steps_per_year=180)
    w = np.asarray(m.weights)
    net = float(((ds.ASR_annual - ds.OLR_annual) * w).sum() / w.sum())
    assert abs(net) < 0.02  # W m-2, after spin-up the annual mean budget closes (diffusion integrates to zero)
    # northern high latitudes: warmest 1-4 months after the June solstice (a 10 m slab lags the sun by up to
    # atan(omega C / B) ~ 80 deg of phase), coldest 1-4 months after the December solstice
    north = ds.Ts.isel(lat=-2).values
    assert int(np.argmax(north)) + 1 in (7, 8, 9, 10) and int(np.argmin(north)) + 1 in (1, 2, 3, 4)
    assert float(ds.Ts_amplitude.isel(lat=-1)) > 5 * float(ds.Ts_amplitude.isel(lat=12))
    with pytest.raises(ConfigError, match="daily"):
        X.seasonal_climatology(DiffusiveEBM(10))


def test_insolation_functions_under_jit_vmap_grad():
    # solar longitude is 0 at the vernal equinox (day 80) and 90 deg about 93 days later
    lam, _ = solar_longitude(jnp.array([80.0, 172.0]))
    assert abs(float(lam[0])) < 1e-12 and abs(float(jnp.rad2deg(lam[1])) - 90) < 1.5
    days = jnp.linspace(0, 365, 12)
    q = jax.jit(jax.vmap(lambda d: daily_insolation(jnp.array([-60.0, 0.0, 60.0]), d)))(days)
    assert q.shape == (12, 3) and bool(jnp.all(q >= 0))
    # grad of the polar annual mean wrt obliquity: S0 cos(eps)/(pi sqrt(1-e^2)) (Q_pole = S0 sin(eps)/(pi ...))
    g = jax.grad(lambda eps: annual_mean_insolation(jnp.array(89.999), obliquity=eps, n_samples=2000))(23.446)
    expected = 1365.2 * np.cos(np.deg2rad(23.446)) / (np.pi * np.sqrt(1 - 0.017236**2)) * np.pi / 180
    assert abs(float(g) - expected) < 1e-2 * expected
    T = jnp.stack([jnp.linspace(-20, 25, 10), jnp.linspace(-10, 30, 10)])
    ht = jax.jit(jax.vmap(lambda t: heat_transport(t, 0.555, 10)))(T)
    assert ht.shape == (2, 11) and np.all(np.asarray(ht[:, 1:-1]) < 0)  # warm north: transport southward


def test_seasonal_cycle_identifies_heat_capacity_that_an_equilibrium_cannot():
    names = ["water_depth", "D"]
    seasonal = DiffusiveEBM(12, insolation_type="daily", albedo_width=4.0)
    f_s, _ = X.ebm_forward(seasonal, names, targets=("Ts_seasonal",), years=3, dt=86400.0 * 365.2422 / 120)
    f_a, _ = X.ebm_forward(DiffusiveEBM(12, albedo_width=4.0), names, targets=("Ts",), years=30)
    ident_s = identifiability(f_s, np.ones(2), 0.3, names)
    ident_a = identifiability(f_a, np.ones(2), 0.3, names)
    assert "water_depth" not in ident_s["poorly_identified"]
    assert "water_depth" in ident_a["poorly_identified"]  # the equilibrium does not depend on heat capacity

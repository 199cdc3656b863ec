"""Held-Suarez forcing (Held & Suarez 1994, BAMS 75, 1825, doi:10.1175/1520-0477(1994)075<1825:APFTIO>2.0.CO;2)
as a nemic process: dinosaur's ``held_suarez.HeldSuarezForcingSigma`` with its coefficients as SI array leaves.

Newtonian relaxation of temperature towards a zonally symmetric radiative-equilibrium profile
``T_eq = max(T_min, (p/p0)^kappa (T_max - dT_y sin^2(phi) - dTheta_z log(p/p0) cos^2(phi)))`` at the rate
``k_T = k_a + (k_s - k_a) max(0, (sigma - sigma_b)/(1 - sigma_b)) cos^4(phi)``, and Rayleigh drag of the winds in
the boundary layer at ``k_v = k_f max(0, (sigma - sigma_b)/(1 - sigma_b))``. Humidity and surface pressure have
no tendency.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from dinosaur import held_suarez, scales

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractProcess
from nemic.models.atmosphere.grid import SECONDS_PER_DAY, AtmosphereGrid
from nemic.models.atmosphere.state import AtmosphereState

_PARAMS = ("kf", "ka", "ks", "minT", "maxT", "dTy", "dThz")


@functools.cache
def _dinosaur_forcing(grid: AtmosphereGrid, sigma_b: float, p0: float) -> held_suarez.HeldSuarezForcingSigma:
    t_ref = np.full((grid.layers,), grid.reference_temperature * grid.factor("K"))
    return held_suarez.HeldSuarezForcingSigma(grid.coords, grid.specs, t_ref, p0=p0 * scales.units.pascal,
                                              sigma_b=sigma_b)


class HeldSuarez(AbstractProcess):
    """The Held-Suarez (1994) forcing on a :class:`AtmosphereGrid`, with the paper's defaults.

    Args:
        grid: the atmosphere's grid.
        kf [s-1]: boundary-layer Rayleigh drag (1/day). ka, ks [s-1]: Newtonian cooling in the free atmosphere
            (1/40 days) and at the surface on the equator (1/4 days). minT, maxT [K]: bounds of the equilibrium
            temperature (200, 315). dTy [K]: its equator-pole difference (60). dThz [K]: its static stability
            (10). sigma_b: top of the boundary layer (0.7, static). p0 [Pa]: reference pressure (1e5, static).

    The coefficients are array leaves, so ``jax.grad`` reaches them (calibration of the forcing).
    """

    grid: AtmosphereGrid = eqx.field(static=True)
    kf: jax.Array
    ka: jax.Array
    ks: jax.Array
    minT: jax.Array
    maxT: jax.Array
    dTy: jax.Array
    dThz: jax.Array
    sigma_b: float = eqx.field(static=True, default=0.7)
    p0: float = eqx.field(static=True, default=1e5)

    def __init__(self, grid: AtmosphereGrid, *, kf=1.0 / SECONDS_PER_DAY, ka=1.0 / (40 * SECONDS_PER_DAY),
                 ks=1.0 / (4 * SECONDS_PER_DAY), minT=200.0, maxT=315.0, dTy=60.0, dThz=10.0, sigma_b: float = 0.7,
                 p0: float = 1e5):
        if not isinstance(grid, AtmosphereGrid):
            raise ConfigError(f"HeldSuarez needs an AtmosphereGrid (model.grid), got {type(grid).__name__}")
        if not 0.0 <= sigma_b < 1.0 or p0 <= 0:
            raise ConfigError(f"HeldSuarez needs 0 <= sigma_b < 1 and p0 > 0, got {sigma_b}, {p0}")
        self.grid = grid
        for name, v in zip(_PARAMS, (kf, ka, ks, minT, maxT, dTy, dThz)):
            setattr(self, name, jnp.asarray(v, float))
        self.sigma_b = float(sigma_b)
        self.p0 = float(p0)

    def dinosaur_forcing(self) -> held_suarez.HeldSuarezForcingSigma:
        """dinosaur's forcing object with this process's coefficients (nondimensionalised) set on it."""
        g = self.grid
        base = _dinosaur_forcing(g, self.sigma_b, self.p0)
        hs = object.__new__(held_suarez.HeldSuarezForcingSigma)
        hs.__dict__.update(base.__dict__)
        per_time = 1.0 / g.factor("s")
        hs.kf, hs.ka, hs.ks = self.kf * per_time, self.ka * per_time, self.ks * per_time
        k = g.factor("K")
        hs.minT, hs.maxT, hs.dTy, hs.dThz = self.minT * k, self.maxT * k, self.dTy * k, self.dThz * k
        return hs

    def tendency(self, state: AtmosphereState, t: Any, key: Any = None) -> AtmosphereState:
        out = self.dinosaur_forcing().explicit_terms(state.to_dinosaur())
        s = self.grid.factor("s")
        return jax.tree_util.tree_map(
            lambda x: x * s,
            AtmosphereState(out.vorticity, out.divergence, out.temperature_variation, out.log_surface_pressure,
                            jnp.zeros_like(state.specific_humidity)))

    def equilibrium_temperature(self, surface_pressure: Any) -> jax.Array:
        """Radiative-equilibrium temperature [K] on (level, lat, lon) for a nodal surface pressure [Pa] (lat, lon)."""
        g = self.grid
        ps = jnp.swapaxes(jnp.asarray(surface_pressure), -1, -2) * g.factor("Pa")
        return jnp.swapaxes(self.dinosaur_forcing().equilibrium_temperature(ps), -1, -2) / g.factor("K")

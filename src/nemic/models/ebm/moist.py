"""Moist energy balance model: diffusion of near-surface moist static energy (Hwang & Frierson 2010).

The meridional transport diffuses the moist static energy ``h = c_p T + L_v q`` with ``q = r q_sat(T)`` instead of
``c_p T``. Written in temperature units, the flux is ``-D (1 - x^2) d/dx [T + (L_v r / c_p) q_sat(T)]`` [W m-2 per
unit x], so the latent part enhances the transport where it is warm (Frierson, Held & Zurita-Gotor 2007).

References:
    Hwang, Y.-T. & Frierson, D. M. W. (2010), Increasing atmospheric poleward energy transport with global warming,
        Geophys. Res. Lett. 37, L24807, doi:10.1029/2010GL045440.
    Frierson, Held & Zurita-Gotor (2007), A gray-radiation aquaplanet moist GCM. Part II, J. Atmos. Sci. 64,
        1680-1693, doi:10.1175/JAS3913.1.
    Bolton, D. (1980), The computation of equivalent potential temperature, Mon. Wea. Rev. 108, 1046-1053
        (saturation vapour pressure ``6.112 exp(17.67 T/(T + 243.5))`` hPa, T in degC).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.process import AbstractImplicitProcess, ImplicitExplicit
from nemic.models.ebm.model import DiffusiveEBM, EBMState, _diffusion_coefficients

LATENT_HEAT = 2.5e6  # J kg-1
CP_AIR = 1004.0  # J kg-1 K-1
SURFACE_PRESSURE = 1000.0  # hPa


def saturation_specific_humidity(T, p=SURFACE_PRESSURE):
    """Saturation specific humidity [kg kg-1] at temperature T [degC] and pressure p [hPa] (Bolton 1980)."""
    es = 6.112 * jnp.exp(17.67 * T / (T + 243.5))
    return 0.622 * es / p


def moist_static_energy_temperature(T, relative_humidity=0.8):
    """Moist static energy divided by c_p: ``T + (L_v r / c_p) q_sat(T)`` [K-equivalent, offset degC]."""
    return T + LATENT_HEAT * relative_humidity / CP_AIR * saturation_specific_humidity(T)


class MoistDiffusion(AbstractImplicitProcess):
    """Diffusion of moist static energy, ``(D/C) d/dx[(1-x^2) dh/dx]``, ``h = T + (L r/c_p) q_sat(T)`` [K s-1].

    Flux form on the cell edges (zero flux at the poles: energy is conserved exactly). ``implicit_solve`` is
    linearly implicit: the moist enhancement of each edge, the secant ``dh/dT`` between its two cells, is frozen at
    the right-hand side and the resulting tridiagonal system is solved exactly (O(num_lat)), which keeps large
    timesteps stable. Attributes: D [W m-2 K-1], heat_capacity [J m-2 K-1], relative_humidity, and the grid.
    """

    D: jax.Array
    heat_capacity: jax.Array
    relative_humidity: jax.Array
    num_lat: int = eqx.field(static=True)
    grid: str = eqx.field(static=True, default="sin")

    def _base(self):
        lo, up = _diffusion_coefficients(self.num_lat, self.grid)
        k = self.D / self.heat_capacity
        return k * jnp.asarray(lo), k * jnp.asarray(up)

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        h = moist_static_energy_temperature(state.Ts, self.relative_humidity)
        lo, up = self._base()
        dh = jnp.diff(h)
        z = jnp.zeros(1, h.dtype)
        return EBMState(Ts=up * jnp.concatenate([dh, z]) - lo * jnp.concatenate([z, dh]))

    def _edge_factor(self, T):
        """Secant dh/dT on the interior edges (num_lat-1,)."""
        h = moist_static_energy_temperature(T, self.relative_humidity)
        dT, dh = jnp.diff(T), jnp.diff(h)
        Tm = 0.5 * (T[1:] + T[:-1])
        deriv = jax.vmap(jax.grad(lambda s: moist_static_energy_temperature(s, self.relative_humidity)))(Tm)
        small = jnp.abs(dT) < 1e-6
        return jnp.where(small, deriv, dh / jnp.where(small, 1.0, dT))

    def implicit_solve(self, rhs: EBMState, t: Any, eta: Any) -> EBMState:
        lo, up = self._base()
        f = self._edge_factor(rhs.Ts)
        one = jnp.ones(1, f.dtype)
        lo = lo * jnp.concatenate([one, f])
        up = up * jnp.concatenate([f, one])
        dl = (-eta * lo).at[0].set(0.0)
        du = (-eta * up).at[-1].set(0.0)
        d = 1.0 + eta * (lo + up)
        x = jax.lax.linalg.tridiagonal_solve(dl, d, du, rhs.Ts[:, None])[:, 0]
        return EBMState(Ts=x)


def moist_ebm_process(model: DiffusiveEBM, *, D=0.3, relative_humidity=0.8) -> ImplicitExplicit:
    """The moist EBM: ``model``'s radiation (explicit) with moist-static-energy diffusion (implicit) instead of its
    dry diffusion. ``D`` [W m-2 K-1] is the moist diffusivity (0.3 gives a global-mean temperature close to the dry EBM's
    with D = 0.555 at present climate)."""
    moist = MoistDiffusion(D=jnp.asarray(D, float), heat_capacity=model.heat_capacity,
                           relative_humidity=jnp.asarray(relative_humidity, float), num_lat=model.num_lat,
                           grid=model.grid)
    return ImplicitExplicit(explicit=model.radiation(), implicit=moist)

"""Fixers for long runs of the hybrid atmosphere: non-negative humidity and the global balance of the learned
physics.

Offline-trained column physics has small systematic errors that a free run integrates: with the shipped network
the global mean temperature falls by 21 K and the column water by 75-95 % within about 100 days (docs/atmosphere.md,
"Long runs and climate"). :class:`GlobalBalance` removes the two global imbalances that drive such drifts: the
mass-weighted global mean of the learned heating (in a statistically steady climate the physics neither heats nor
cools the atmosphere as a whole, up to the small frictional heating) and the global mean of the column moisture
tendency (global precipitation equals global evaporation). It constrains the global means only; the spatial
pattern of the heating and moistening is the network's.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp

from nemic.core.process import AbstractProcess
from nemic.core.steppers import AbstractStepFilter
from nemic.models.atmosphere import AtmosphereFields, AtmosphereState, ColumnPhysics, fields_from_state

__all__ = ["NonNegativeHumidity", "GlobalBalance", "EnergyFixer"]

CP = 1004.0  # J kg-1 K-1, specific heat of dry air at constant pressure (SPEEDY's value)
GRAVITY = 9.81  # m s-2


class NonNegativeHumidity(AbstractStepFilter):
    """Set negative specific humidity to zero on the Gaussian grid after each step and rescale the humidity
    everywhere by one factor so that the global, sigma-weighted water ``sum_k dsigma_k <q_k>`` is what the step
    left (the borrowing of a global "hole filler"; Rasch & Williamson 1990, QJRMS 116, 1071,
    doi:10.1002/qj.49711649504, discuss such fixers). A band-limited spectral field cannot be exactly
    non-negative, so small negatives come back through the truncation; the clipping keeps them from growing."""

    grid: Any = eqx.field(static=True)

    def __call__(self, before, after):
        g = self.grid
        q = g.to_nodal(after.specific_humidity)
        dsig = jnp.asarray(g.layer_thickness, q.dtype)[:, None, None]
        w = jnp.asarray(g.area_weights, q.dtype)
        total = jnp.sum(q * dsig * w)
        qc = jnp.maximum(q, 0.0)
        clipped = jnp.sum(qc * dsig * w)
        scale = jnp.where(clipped > 0, jnp.maximum(total, 0.0) / jnp.where(clipped > 0, clipped, 1.0), 1.0)
        return eqx.tree_at(lambda s: s.specific_humidity, after, g.to_modal(qc * scale))


class GlobalBalance(AbstractProcess):
    """Column physics whose global-mean heating and moistening are removed at every evaluation.

    With ``m = p_s dsigma_k w_ij`` (mass weights, ``w`` the Gaussian area weights) and the network's nodal
    tendencies ``dT``, ``dq``:

    * ``dT <- dT - sum(m dT) / sum(m)`` (zero net heating of the whole atmosphere);
    * ``dq <- dq - c q+`` with ``c = sum(m dq) / sum(m q+)``, ``q+ = max(q, 0)`` (zero change of the global water,
      taken where the water is, as the network's own column budget does);
    * precipitation (a diagnostic) is scaled by ``<E> / <P>`` so that its global mean equals the evaporation's.

    Winds are unchanged. Args: ``physics``: the :class:`ColumnPhysics` of the hybrid.
    """

    physics: ColumnPhysics

    def _columns(self, state: AtmosphereState, t: Any):
        """The nodal fields and the column outputs before balancing (a hook: stochastic versions perturb them)."""
        return self.physics.columns(state, t)

    def _balanced(self, state: AtmosphereState, t: Any):
        p = self.physics
        g = p.grid
        fields, out = self._columns(state, t)
        dT, dq = p._nodal(out.temperature), p._nodal(out.specific_humidity)
        m = (fields.surface_air_pressure[None] * jnp.asarray(g.layer_thickness, dT.dtype)[:, None, None]
             * jnp.asarray(g.area_weights, dT.dtype)[None])
        dT = dT - jnp.sum(m * dT) / jnp.sum(m)
        qp = jnp.maximum(fields.specific_humidity, 0.0)
        dq = dq - jnp.sum(m * dq) / jnp.maximum(jnp.sum(m * qp), 1e-30) * qp
        nlat, nlon = g.nodal_shape[1:]
        precip = out.precipitation.reshape(nlat, nlon)
        if out.evaporation is not None:
            w = jnp.asarray(g.area_weights, precip.dtype)
            e = out.evaporation.reshape(nlat, nlon)
            precip = precip * jnp.sum(w * e) / jnp.maximum(jnp.sum(w * precip), 1e-30)
        return fields, out, dT, dq, precip

    def tendency(self, state: AtmosphereState, t: Any, key: Any = None) -> AtmosphereState:
        p = self.physics
        g = p.grid
        _, out, dT, dq, _ = self._balanced(state, t)
        dvort, ddiv = g.wind_tendency_to_modal(p._nodal(out.eastward_wind), p._nodal(out.northward_wind))
        return AtmosphereState(dvort, ddiv, g.to_modal(dT * g.factor("K")),
                               jnp.zeros_like(state.log_surface_pressure), g.to_modal(dq))

    def observe(self, state: AtmosphereState, t: Any) -> AtmosphereFields:
        """Nodal SI fields with the balanced ``precipitation_flux``."""
        fields, _, _, _, precip = self._balanced(state, t)
        return eqx.tree_at(lambda f: f.precipitation_flux, fields, precip, is_leaf=lambda x: x is None)


def total_energy(grid: Any, state: AtmosphereState) -> Any:
    """Global dry static + kinetic energy ``sum_k,ij p_s dsigma_k w_ij (c_p T + |v|^2 / 2) / g`` per unit area
    [J m-2] (``w`` the Gaussian area weights, summing to 1)."""
    f = fields_from_state(grid, state)
    m = (f.surface_air_pressure[None] * jnp.asarray(grid.layer_thickness, f.air_temperature.dtype)[:, None, None]
         * jnp.asarray(grid.area_weights, f.air_temperature.dtype)[None]) / GRAVITY
    e = CP * f.air_temperature + 0.5 * (f.eastward_wind ** 2 + f.northward_wind ** 2)
    return jnp.sum(m * e), jnp.sum(m)


class EnergyFixer(AbstractStepFilter):
    """Give back, as a uniform temperature change, the total energy a step lost or gained.

    ``c_p T + |v|^2 / 2`` integrated over the atmosphere's mass (:func:`total_energy`) should not change in a step
    of the hybrid whose physics has zero global-mean heating (:class:`GlobalBalance`): the dynamics conserve it
    up to the numerical dissipation of the spectral filters and hyperdiffusion, and the learned momentum
    tendencies (surface drag) dissipate kinetic energy whose heat the network does not return. The fixer adds
    ``dT = (E_before - E_after) / (c_p M)`` everywhere (the global-mean mode of temperature), as the energy fixers
    of climate models' dynamical cores do (e.g. Williamson et al. 2015, J. Adv. Model. Earth Syst. 7, 1194,
    doi:10.1002/2015MS000448, on CAM's)."""

    grid: Any = eqx.field(static=True)

    def __call__(self, before, after):
        g = self.grid
        e0, _ = total_energy(g, before)
        e1, mass = total_energy(g, after)
        dT = (e0 - e1) / (CP * mass)
        ones = g.to_modal(jnp.ones(g.nodal_shape[1:], after.temperature_variation.dtype))
        temp = after.temperature_variation + (dT * g.factor("K")) * ones[None]
        return eqx.tree_at(lambda s: s.temperature_variation, after, temp)

"""Step filters of the global atmosphere, for :class:`nemic.core.steppers.Filtered`.

* :class:`SpectralFilter`: a scaling of every spectral coefficient by a function of its total wavenumber, built
  from dinosaur's ``filtering.exponential_filter`` (Gottlieb & Shu 1997, SIAM Rev. 39, 644,
  doi:10.1137/S0036144596301390) or ``filtering.horizontal_diffusion_filter`` (implicit hyperdiffusion of order
  ``2 order``), exactly the filters of dinosaur's ``exponential_step_filter`` / ``horizontal_diffusion_step_filter``.
* :class:`DryMassFixer`: a global dry-mass fixer that rescales the surface pressure after each step so that the
  global mean dry surface pressure ``<p_s (1 - sum_k q_k d sigma_k)>`` equals its value before the step (or a
  fixed target), as the mass fixers of GCMs do (e.g. Williamson & Olson 1994, MWR 122, 1594,
  doi:10.1175/1520-0493(1994)122<1594:CONSMO>2.0.CO;2). The spectral transform and the filters conserve mass
  only approximately; the fixer removes that drift.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from dinosaur import filtering

from nemic.core.errors import ConfigError
from nemic.core.steppers import AbstractStepFilter
from nemic.models.atmosphere.grid import AtmosphereGrid
from nemic.models.atmosphere.state import AtmosphereState


class SpectralFilter(AbstractStepFilter):
    """Multiply each modal field by ``scaling`` (shape (m, l)) after a step.

    Build it with :meth:`exponential` or :meth:`hyperdiffusion`. Fields whose trailing axes are modal are all
    filtered, the log surface pressure included (dinosaur's filters do the same).
    """

    scaling: jax.Array

    def __call__(self, before: Any, after: Any) -> Any:
        return jax.tree_util.tree_map(lambda x: x * self.scaling.astype(x.dtype), after)

    @classmethod
    def exponential(cls, grid: AtmosphereGrid, attenuation: float = 16.0, order: int = 18,
                    cutoff: float = 0.0) -> SpectralFilter:
        """dinosaur's exponential filter ``exp(-attenuation ((k - c)/(1 - c))^(2 order))`` for ``k > c``, with k
        the total wavenumber over the largest one; ``attenuation`` is per step (dinosaur's ``dt / tau``)."""
        if attenuation < 0 or order < 1 or not 0 <= cutoff < 1:
            raise ConfigError("exponential filter needs attenuation >= 0, order >= 1 and 0 <= cutoff < 1")
        fn = filtering.exponential_filter(grid.horizontal, attenuation, order, cutoff)
        return cls(jnp.asarray(fn(np.ones(grid.horizontal.modal_shape))))

    @classmethod
    def hyperdiffusion(cls, grid: AtmosphereGrid, dt: float, tau: float, order: int = 2) -> SpectralFilter:
        """Implicit hyperdiffusion (del^(2 order)) that damps the smallest resolved scale by ``e`` in ``tau``
        seconds; ``dt`` [s] is the step it is applied after (dinosaur's ``horizontal_diffusion_step_filter``)."""
        if dt <= 0 or tau <= 0 or order < 1:
            raise ConfigError(f"hyperdiffusion needs dt > 0, tau > 0 and order >= 1, got {dt}, {tau}, {order}")
        eig = grid.horizontal.laplacian_eigenvalues
        scale = (dt / tau) / abs(eig[-1]) ** order
        fn = filtering.horizontal_diffusion_filter(grid.horizontal, scale, order)
        return cls(jnp.asarray(fn(np.ones(grid.horizontal.modal_shape))))


def surface_pressure(grid: AtmosphereGrid, state: AtmosphereState) -> jax.Array:
    """Nodal surface pressure [Pa], shape (lat, lon)."""
    return jnp.exp(grid.to_nodal(state.log_surface_pressure[0])) / grid.factor("Pa")


def column_water_fraction(grid: AtmosphereGrid, state: AtmosphereState) -> jax.Array:
    """Mass-weighted column mean specific humidity ``sum_k q_k d sigma_k`` [kg/kg], shape (lat, lon)."""
    q = grid.to_nodal(state.specific_humidity)
    return jnp.einsum("k,kij->ij", jnp.asarray(grid.layer_thickness), q)


def global_mean_dry_surface_pressure(grid: AtmosphereGrid, state: AtmosphereState) -> jax.Array:
    """Global mean dry-air surface pressure ``<p_s (1 - sum_k q_k d sigma_k)>`` [Pa] (dry mass = this * 4 pi a^2
    / g)."""
    return grid.global_mean(surface_pressure(grid, state) * (1.0 - column_water_fraction(grid, state)))


class DryMassFixer(AbstractStepFilter):
    """Rescale the surface pressure after a step so that the global dry mass is that before the step.

    ``p_s <- c p_s`` with ``c = target / <p_s,dry>`` (a constant added to the log surface pressure's mean mode),
    so the global mean dry surface pressure is held to round-off. ``target`` [Pa]: a fixed global mean dry surface
    pressure, or ``None`` to keep the value of the state before each step (hence that of the initial state).
    """

    grid: AtmosphereGrid = eqx.field(static=True)
    target: Any = None

    def __call__(self, before: AtmosphereState, after: AtmosphereState) -> AtmosphereState:
        goal = global_mean_dry_surface_pressure(self.grid, before) if self.target is None else self.target
        now = global_mean_dry_surface_pressure(self.grid, after)
        shift = jnp.log(goal / now)
        ones = self.grid.to_modal(jnp.ones(self.grid.nodal_shape[1:], after.log_surface_pressure.dtype))
        lsp = after.log_surface_pressure + shift * ones
        return eqx.tree_at(lambda s: s.log_surface_pressure, after, lsp)

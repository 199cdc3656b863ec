"""The global atmosphere: dinosaur's moist primitive equations on sigma levels as a nemic model.

:class:`PrimitiveEquations` is an :class:`~nemic.core.process.ImplicitExplicit` process and an
:class:`~nemic.core.model.AbstractModel`: its explicit part is
:class:`~nemic.models.atmosphere.dynamics.PrimitiveEquationsExplicit`, its implicit part
:class:`~nemic.models.atmosphere.dynamics.PrimitiveEquationsImplicit`, so ``core + HeldSuarez(grid)`` or
``core + ColumnPhysics(grid, net)`` is again an implicit-explicit process (the added terms join the explicit part,
as in dinosaur's ``compose_equations``) and the default stepper, IMEX-SIL3 (Whitaker & Kar 2013, MWR 141, 3426,
doi:10.1175/MWR-D-13-00132.1) followed by dinosaur's exponential filter and hyperdiffusion, steps it.

Units at the boundary are SI: ``dt`` and ``t`` in seconds, :meth:`PrimitiveEquations.initial_state` takes K,
Pa and kg/kg, :meth:`PrimitiveEquations.observe` returns K, m/s, kg/kg and Pa on (level, lat, lon). The
prognostic state in between is dinosaur's spectral state in its nondimensional units.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from dinosaur import primitive_equations_states, scales

from nemic.core.errors import ConfigError, DataError
from nemic.core.model import AbstractModel
from nemic.core.process import ImplicitExplicit
from nemic.core.steppers import IMEXSIL3, Filtered
from nemic.models.atmosphere.dynamics import (
    PrimitiveEquationsExplicit,
    PrimitiveEquationsImplicit,
)
from nemic.models.atmosphere.filters import (
    DryMassFixer,
    SpectralFilter,
    surface_pressure,
)
from nemic.models.atmosphere.grid import AtmosphereGrid
from nemic.models.atmosphere.state import (
    AtmosphereFields,
    AtmosphereState,
    check_atmosphere_state,
)


def fields_from_state(grid: AtmosphereGrid, state: AtmosphereState, precipitation: Any = None) -> AtmosphereFields:
    """Nodal SI fields (K, m/s, kg/kg, Pa on (level, lat, lon)) of a modal state."""
    t = grid.to_nodal(state.temperature_variation) / grid.factor("K") + grid.reference_temperature
    u, v = grid.winds(state.vorticity, state.divergence)
    q = grid.to_nodal(state.specific_humidity)
    return AtmosphereFields(t, u, v, q, surface_pressure(grid, state), precipitation)


def state_from_fields(grid: AtmosphereGrid, fields: AtmosphereFields) -> AtmosphereState:
    """The modal state whose nodal fields are ``fields`` (up to the truncation); inverse of
    :func:`fields_from_state` on band-limited fields. Shapes: (level, lat, lon) and (lat, lon)."""
    for name in ("air_temperature", "eastward_wind", "northward_wind", "specific_humidity"):
        shape = np.shape(getattr(fields, name))
        if len(shape) != 3 or tuple(shape[1:]) != grid.nodal_shape[1:]:
            raise DataError(f"{name} has shape {shape}, expected (levels, lat, lon) = {grid.nodal_shape}")
        grid.check_levels(shape[0], name)
    vort, div = grid.vorticity_divergence(fields.eastward_wind, fields.northward_wind)
    temp = grid.to_modal((fields.air_temperature - grid.reference_temperature) * grid.factor("K"))
    lsp = grid.to_modal(jnp.log(fields.surface_air_pressure * grid.factor("Pa")))[None]
    return AtmosphereState(vort, div, temp, lsp, grid.to_modal(fields.specific_humidity))


class PrimitiveEquations(ImplicitExplicit, AbstractModel):
    """dinosaur's moist primitive equations on sigma levels (flat lower boundary) as a nemic model.

    Args:
        truncation: spectral truncation (21, 31, 42 or 85; default T21, 32 x 64 Gaussian grid).
        layers: number of equidistant sigma levels (default 8).
        reference_temperature: T_ref of the semi-implicit scheme [K].
        moist: whether the specific humidity enters the virtual temperature (otherwise a passive tracer).
        dt: the time step the default stepper's filters are set for [s] (``default_timestep``).
        filter_attenuation, filter_order, filter_cutoff: dinosaur's exponential filter, attenuation per step.
        hyperdiffusion_tau: e-folding time [s] of the smallest scale under the del^(2 order) hyperdiffusion;
            ``0`` switches it off. hyperdiffusion_order: its order.
        fix_dry_mass: append a :class:`~nemic.models.atmosphere.filters.DryMassFixer` to the default stepper.
    """

    explicit: PrimitiveEquationsExplicit
    implicit: PrimitiveEquationsImplicit
    dt: float = eqx.field(static=True, default=1200.0)
    filter_attenuation: float = eqx.field(static=True, default=16.0)
    filter_order: int = eqx.field(static=True, default=18)
    filter_cutoff: float = eqx.field(static=True, default=0.0)
    hyperdiffusion_tau: float = eqx.field(static=True, default=8.0 * 3600.0)
    hyperdiffusion_order: int = eqx.field(static=True, default=2)
    fix_dry_mass: bool = eqx.field(static=True, default=False)

    def __init__(self, truncation: int = 21, layers: int = 8, *, reference_temperature: float = 288.0,
                 moist: bool = True, dt: float = 1200.0, filter_attenuation: float = 16.0, filter_order: int = 18,
                 filter_cutoff: float = 0.0, hyperdiffusion_tau: float = 8.0 * 3600.0,
                 hyperdiffusion_order: int = 2, fix_dry_mass: bool = False):
        grid = AtmosphereGrid(truncation, layers, reference_temperature)
        if not (isinstance(dt, (int, float, np.floating)) and dt > 0):
            raise ConfigError(f"dt must be a positive number of seconds, got {dt!r}")
        if hyperdiffusion_tau < 0:
            raise ConfigError(f"hyperdiffusion_tau must be >= 0 s (0 = off), got {hyperdiffusion_tau}")
        self.explicit = PrimitiveEquationsExplicit(grid, bool(moist))
        self.implicit = PrimitiveEquationsImplicit(grid, bool(moist))
        self.default = None
        self.dt = float(dt)
        self.filter_attenuation = float(filter_attenuation)
        self.filter_order = int(filter_order)
        self.filter_cutoff = float(filter_cutoff)
        self.hyperdiffusion_tau = float(hyperdiffusion_tau)
        self.hyperdiffusion_order = int(hyperdiffusion_order)
        self.fix_dry_mass = bool(fix_dry_mass)
        self.filters()  # validate the filter settings now

    # ------------------------------------------------------------ grid and settings
    @property
    def grid(self) -> AtmosphereGrid:
        """The static :class:`AtmosphereGrid`."""
        return self.explicit.grid

    @property
    def truncation(self) -> int:
        """Spectral truncation (static)."""
        return self.grid.truncation

    @property
    def layers(self) -> int:
        """Number of sigma levels (static)."""
        return self.grid.layers

    @property
    def reference_temperature(self) -> float:
        """Reference temperature of the semi-implicit scheme [K]."""
        return self.grid.reference_temperature

    @property
    def moist(self) -> bool:
        """Whether humidity enters the virtual temperature."""
        return self.explicit.moist

    @property
    def default_timestep(self) -> float:
        """The time step [s] the default stepper's filters are set for."""
        return self.dt

    @property
    def state_ndim(self) -> int:
        """Rank of the state's leaves (for ensembles)."""
        return 3

    def filters(self) -> tuple:
        """The step filters of the default stepper: exponential filter, hyperdiffusion, optional dry-mass fixer."""
        out = [SpectralFilter.exponential(self.grid, self.filter_attenuation, self.filter_order,
                                          self.filter_cutoff)]
        if self.hyperdiffusion_tau > 0:
            out.append(SpectralFilter.hyperdiffusion(self.grid, self.dt, self.hyperdiffusion_tau,
                                                     self.hyperdiffusion_order))
        if self.fix_dry_mass:
            out.append(DryMassFixer(self.grid))
        return tuple(out)

    def default_stepper(self) -> Filtered:
        """IMEX-SIL3 followed by :meth:`filters` (dinosaur's ``imex_rk_sil3`` + ``step_with_filters``)."""
        return Filtered(IMEXSIL3(), self.filters())

    # ------------------------------------------------------------ states
    def initial_state(self, key: Any = None, *, temperature: float = 288.0, surface_pressure: float = 1e5,
                      perturbation: float = 0.0, surface_humidity: float = 0.0) -> AtmosphereState:
        """An isothermal atmosphere at rest, optionally with a surface-pressure bump (the Held-Suarez start).

        Args:
            key: with ``perturbation > 0``, places dinosaur's localized wavenumber-4 surface-pressure
                perturbation at a random position (``primitive_equations_states.isothermal_rest_atmosphere``).
            temperature [K], surface_pressure [Pa]: the uniform temperature and mean surface pressure.
            perturbation: amplitude of the surface-pressure perturbation [Pa] (dinosaur's Held-Suarez runs: 5e3).
            surface_humidity: specific humidity at the surface [kg/kg]; the profile is ``q_s sigma^3``.
        """
        if temperature <= 0 or surface_pressure <= 0 or perturbation < 0 or surface_humidity < 0:
            raise ConfigError("initial_state needs temperature > 0 K, surface_pressure > 0 Pa, perturbation >= 0 "
                              "and surface_humidity >= 0")
        if perturbation > 0 and key is None:
            raise ConfigError("a perturbed initial state needs key=jax.random.key(seed)")
        g = self.grid
        u = scales.units
        fn, _ = primitive_equations_states.isothermal_rest_atmosphere(
            g.coords, g.specs, tref=temperature * u.degK, p0=surface_pressure * u.pascal,
            p1=perturbation * u.pascal)
        rng = jax.random.PRNGKey(0) if key is None else (
            jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
        s = fn(rng_key=rng)
        temp = g.to_modal(jnp.full(g.nodal_shape, (temperature - g.reference_temperature) * g.factor("K")))
        q_nodal = jnp.broadcast_to(surface_humidity * g.sigma[:, None, None] ** 3, g.nodal_shape)
        return AtmosphereState(s.vorticity, s.divergence, temp, s.log_surface_pressure, g.to_modal(q_nodal))

    def from_fields(self, fields: AtmosphereFields) -> AtmosphereState:
        """The model state of nodal SI fields (see :func:`state_from_fields`)."""
        return state_from_fields(self.grid, fields)

    def observe(self, state: AtmosphereState, t: Any = None) -> AtmosphereFields:
        """Nodal SI fields of ``state`` (pass as ``observe=model.observe`` to a rollout)."""
        return fields_from_state(self.grid, state)

    def check_state(self, state: Any) -> None:
        """One-line :class:`DataError` when ``state`` is not an :class:`AtmosphereState` of this grid."""
        check_atmosphere_state(self.grid, state)

    def params(self) -> dict[str, Any]:
        """Constructor arguments as plain numbers (for dataset attributes)."""
        return {"truncation": self.truncation, "layers": self.layers,
                "reference_temperature": self.reference_temperature, "moist": int(self.moist), "dt": self.dt,
                "filter_attenuation": self.filter_attenuation, "filter_order": self.filter_order,
                "filter_cutoff": self.filter_cutoff, "hyperdiffusion_tau": self.hyperdiffusion_tau,
                "hyperdiffusion_order": self.hyperdiffusion_order, "fix_dry_mass": int(self.fix_dry_mass)}

    def coords(self) -> dict[str, tuple]:
        """CF coordinates for :func:`nemic.io.output.to_xarray` (``coords=model.coords()``): level (sigma), lat,
        lon."""
        g = self.grid
        return {
            "level": ("level", g.sigma, {"units": "1", "standard_name": "atmosphere_sigma_coordinate",
                                         "long_name": "sigma at level centres", "positive": "down"}),
            "lat": ("lat", g.lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", g.lon, {"units": "degrees_east", "standard_name": "longitude"}),
        }

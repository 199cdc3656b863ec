"""States of the global atmosphere: the modal prognostic state and the nodal SI fields written to files.

:class:`AtmosphereState` is what the time stepper advances: dinosaur's prognostic variables as spectral
coefficients in dinosaur's nondimensional units (see :class:`~nemic.models.atmosphere.grid.AtmosphereGrid`).
:class:`AtmosphereFields` is what users read: nodal fields in SI units on (level, lat, lon), with the CF names
that :func:`nemic.io.output.to_xarray` writes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import numpy as np
from dinosaur import primitive_equations

from nemic.core.errors import DataError
from nemic.core.state import AbstractState

HUMIDITY_KEY = "specific_humidity"

_MODAL = ("level", "m", "l")


class AtmosphereState(AbstractState):
    """Prognostic state of the primitive equations on sigma levels, spectral and nondimensional.

    Fields (shapes for a grid with ``L`` levels and modal shape ``(M, N)``):
        vorticity, divergence: (L, M, N), in units of 2 Omega.
        temperature_variation: (L, M, N), ``T - T_ref`` [K].
        log_surface_pressure: (1, M, N), log of the nondimensional surface pressure.
        specific_humidity: (L, M, N) [kg/kg] (a tracer advected by the flow; in the moist model it also enters
            the virtual temperature).
    """

    vorticity: jax.Array
    divergence: jax.Array
    temperature_variation: jax.Array
    log_surface_pressure: jax.Array
    specific_humidity: jax.Array

    cf: ClassVar[dict[str, dict]] = {
        "vorticity": {"dims": _MODAL, "units": "1", "long_name": "spectral relative vorticity (units of 2 Omega)"},
        "divergence": {"dims": _MODAL, "units": "1", "long_name": "spectral divergence (units of 2 Omega)"},
        "temperature_variation": {"dims": _MODAL, "units": "K",
                                  "long_name": "spectral temperature minus reference temperature"},
        "log_surface_pressure": {"dims": ("surface",) + _MODAL[1:], "units": "1",
                                 "long_name": "spectral log of nondimensional surface pressure"},
        "specific_humidity": {"dims": _MODAL, "units": "kg kg-1", "long_name": "spectral specific humidity"},
    }
    time_units: ClassVar[str] = "s"

    def to_dinosaur(self) -> primitive_equations.State:
        """The same state as dinosaur's ``primitive_equations.State`` (humidity as the ``specific_humidity``
        tracer)."""
        return primitive_equations.State(
            vorticity=self.vorticity, divergence=self.divergence,
            temperature_variation=self.temperature_variation, log_surface_pressure=self.log_surface_pressure,
            tracers={HUMIDITY_KEY: self.specific_humidity})

    @classmethod
    def from_dinosaur(cls, state: Any, humidity: Any = None) -> AtmosphereState:
        """From dinosaur's ``State`` (``humidity`` replaces a missing ``specific_humidity`` tracer)."""
        q = state.tracers.get(HUMIDITY_KEY, humidity) if state.tracers else humidity
        return cls(state.vorticity, state.divergence, state.temperature_variation, state.log_surface_pressure, q)


_NODAL = ("level", "lat", "lon")


class AtmosphereFields(AbstractState):
    """Nodal fields of the atmosphere in SI units, as written to files (``observe`` of the model).

    Fields: air_temperature [K], eastward_wind, northward_wind [m s-1], specific_humidity [kg kg-1], each
    (level, lat, lon); surface_air_pressure [Pa] (lat, lon); precipitation_flux [kg m-2 s-1] (lat, lon) or
    ``None`` when no physics process provides it. ``level`` is the sigma coordinate of the level centres.
    """

    air_temperature: jax.Array
    eastward_wind: jax.Array
    northward_wind: jax.Array
    specific_humidity: jax.Array
    surface_air_pressure: jax.Array
    precipitation_flux: Any = None

    cf: ClassVar[dict[str, dict]] = {
        "air_temperature": {"dims": _NODAL, "units": "K", "standard_name": "air_temperature",
                            "long_name": "air temperature"},
        "eastward_wind": {"dims": _NODAL, "units": "m s-1", "standard_name": "eastward_wind",
                          "long_name": "eastward wind"},
        "northward_wind": {"dims": _NODAL, "units": "m s-1", "standard_name": "northward_wind",
                           "long_name": "northward wind"},
        "specific_humidity": {"dims": _NODAL, "units": "kg kg-1", "standard_name": "specific_humidity",
                              "long_name": "specific humidity"},
        "surface_air_pressure": {"dims": ("lat", "lon"), "units": "Pa", "standard_name": "surface_air_pressure",
                                 "long_name": "surface pressure"},
        "precipitation_flux": {"dims": ("lat", "lon"), "units": "kg m-2 s-1", "standard_name": "precipitation_flux",
                               "long_name": "precipitation rate"},
    }
    time_units: ClassVar[str] = "s"


def check_atmosphere_state(grid: Any, state: Any) -> None:
    """One-line :class:`DataError` when ``state`` is not an :class:`AtmosphereState` on ``grid`` (an :class:`~nemic.models.atmosphere.grid.AtmosphereGrid`)."""
    if not isinstance(state, AtmosphereState):
        raise DataError(f"the atmosphere's state must be an AtmosphereState (model.initial_state()), got "
                        f"{type(state).__name__}")
    for name in ("vorticity", "divergence", "temperature_variation", "specific_humidity"):
        shape = tuple(np.shape(getattr(state, name)))
        if len(shape) != 3:
            raise DataError(f"state.{name} has shape {shape}, expected {grid.modal_shape}")
        grid.check_levels(shape[0], f"state.{name}")
        if shape[1:] != grid.modal_shape[1:]:
            raise DataError(f"state.{name} has modal shape {shape[1:]} but T{grid.truncation} needs "
                            f"{grid.modal_shape[1:]}")
    if tuple(np.shape(state.log_surface_pressure)) != grid.surface_modal_shape:
        raise DataError(f"state.log_surface_pressure has shape {np.shape(state.log_surface_pressure)}, expected "
                        f"{grid.surface_modal_shape}")

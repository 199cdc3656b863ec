"""Column physics: any per-column function (a classical scheme or a neural network) as a process of the atmosphere.

:class:`ColumnPhysics` evaluates ``fn(inputs: ColumnInputs) -> ColumnTendencies`` on every column of the Gaussian
grid with ``jax.vmap`` and turns the nodal tendencies into tendencies of the modal state (temperature and humidity
by the spherical-harmonic transform, winds through the curl and divergence of the wind tendency, as dinosaur's
Held-Suarez forcing does). This is how NeuralGCM applies its learned physics (Kochkov et al. 2024, Nature 632,
1060-1066, doi:10.1038/s41586-024-07744-y): columns are independent, so the network sees one column at a time.

The contract for ``fn`` (one column, SI units, ``L`` = number of sigma levels, top to bottom):

* input :class:`ColumnInputs`: ``temperature`` (L,) [K], ``specific_humidity`` (L,) [kg/kg], ``eastward_wind``
  and ``northward_wind`` (L,) [m/s], ``surface_pressure`` () [Pa], ``insolation`` () [W m-2] (top of atmosphere),
  ``latitude`` () [degrees_north], ``sigma`` (L,) [1] (the level centres, the same in every column);
* output :class:`ColumnTendencies`: ``temperature`` (L,) [K s-1], ``specific_humidity`` (L,) [kg kg-1 s-1],
  ``eastward_wind`` and ``northward_wind`` (L,) [m s-2], ``precipitation`` () [kg m-2 s-1] (a diagnostic: it is
  not a state variable; :meth:`ColumnPhysics.observe` writes it as ``precipitation_flux``).

``fn`` may be an Equinox module (its weights are leaves of the hybrid model, reached by ``jax.grad``) or any
callable. A function that returns zeros leaves the core's tendency unchanged bit for bit (the transforms of a zero
field are exactly zero and ``x + 0 = x``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractProcess
from nemic.models.atmosphere.grid import SECONDS_PER_DAY, AtmosphereGrid
from nemic.models.atmosphere.model import fields_from_state
from nemic.models.atmosphere.state import AtmosphereFields, AtmosphereState
from nemic.models.ebm.insolation import (
    DAYS_PER_YEAR,
    VERNAL_EQUINOX_DAY,
    annual_mean_insolation,
    daily_insolation,
)

INSOLATIONS = ("annual", "daily", "equinox")


class ColumnInputs(eqx.Module):
    """What column physics sees of one column (SI units; ``L`` levels, top to bottom)."""

    temperature: jax.Array  # (L,) K
    specific_humidity: jax.Array  # (L,) kg/kg
    eastward_wind: jax.Array  # (L,) m/s
    northward_wind: jax.Array  # (L,) m/s
    surface_pressure: jax.Array  # () Pa
    insolation: jax.Array  # () W m-2, top of atmosphere
    latitude: jax.Array  # () degrees_north
    sigma: jax.Array  # (L,) sigma at level centres


class ColumnTendencies(eqx.Module):
    """What column physics returns for one column (SI units per second; ``precipitation`` is a diagnostic)."""

    temperature: jax.Array  # (L,) K s-1
    specific_humidity: jax.Array  # (L,) kg kg-1 s-1
    eastward_wind: jax.Array  # (L,) m s-2
    northward_wind: jax.Array  # (L,) m s-2
    precipitation: jax.Array  # () kg m-2 s-1
    evaporation: Any = None  # () kg m-2 s-1 (optional diagnostic, for the water budget)


class PackedColumnFunction(eqx.Module):
    """Adapter for a network on packed column vectors (the layout of :mod:`nemic.nn.column`).

    ``net(x) -> y`` with ``x = [T (L), q (L), u (L), v (L), p_s, insolation, sin(latitude)]`` (4L + 3 numbers)
    and ``y = [dT/dt (L), dq/dt (L), du/dt (L), dv/dt (L), P, E]`` (4L + 2 numbers), all SI; ``E`` (evaporation)
    is optional (4L + 1 outputs).
    """

    net: Callable[[jax.Array], jax.Array]
    levels: int = eqx.field(static=True)

    def __call__(self, c: ColumnInputs) -> ColumnTendencies:
        n = self.levels
        x = jnp.concatenate([c.temperature, c.specific_humidity, c.eastward_wind, c.northward_wind,
                             jnp.stack([c.surface_pressure, c.insolation, jnp.sin(jnp.deg2rad(c.latitude))])])
        y = self.net(x)
        evap = y[4 * n + 1] if y.shape[0] > 4 * n + 1 else None
        return ColumnTendencies(y[:n], y[n:2 * n], y[2 * n:3 * n], y[3 * n:4 * n], y[4 * n], evap)


def insolation_field(grid: AtmosphereGrid, t: Any, kind: str = "annual", solar_constant: float = 1365.2,
                     day0: float = 0.0) -> jax.Array:
    """Top-of-atmosphere insolation [W m-2] on (lat, lon) at time ``t`` [s].

    ``kind``: ``"annual"`` (annual mean of the present orbit), ``"daily"`` (daily mean on calendar day
    ``day0 + t / 86400``, Berger 1978), ``"equinox"`` (daily mean at the March equinox, perpetual). Computed by
    :mod:`nemic.models.ebm.insolation` (daily mean: no diurnal cycle).
    """
    lat = jnp.asarray(grid.lat)
    if kind == "annual":
        q = annual_mean_insolation(lat, S0=solar_constant)
    elif kind == "daily":
        day = jnp.mod(day0 + jnp.asarray(t, float) / SECONDS_PER_DAY, DAYS_PER_YEAR)
        q = daily_insolation(lat, day, S0=solar_constant)
    elif kind == "equinox":
        q = daily_insolation(lat, VERNAL_EQUINOX_DAY, S0=solar_constant, ecc=0.0)
    else:
        raise ConfigError(f"insolation must be one of {INSOLATIONS}, got {kind!r}")
    return jnp.broadcast_to(q[:, None], grid.nodal_shape[1:])


def column_inputs(grid: AtmosphereGrid, fields: AtmosphereFields, insolation: Any) -> ColumnInputs:
    """Stack nodal fields into a batch of columns: leaves of shape (lat * lon, L) or (lat * lon,)."""
    nlat, nlon = grid.nodal_shape[1:]
    n = nlat * nlon

    def cols(x):
        return jnp.moveaxis(x, 0, -1).reshape(n, x.shape[0])

    lat = jnp.broadcast_to(jnp.asarray(grid.lat)[:, None], (nlat, nlon)).reshape(n)
    sigma = jnp.broadcast_to(jnp.asarray(grid.sigma), (n, grid.layers))
    return ColumnInputs(cols(fields.air_temperature), cols(fields.specific_humidity), cols(fields.eastward_wind),
                        cols(fields.northward_wind), fields.surface_air_pressure.reshape(n),
                        jnp.asarray(insolation).reshape(n), lat, sigma)


class ColumnPhysics(AbstractProcess):
    """A per-column physics function applied to every column of the atmosphere (see the module docs).

    Args:
        grid: the atmosphere's grid (``model.grid``).
        fn: ``fn(ColumnInputs) -> ColumnTendencies`` for one column; an Equinox module or any callable.
        insolation: ``"annual"``, ``"daily"`` or ``"equinox"`` (see :func:`insolation_field`).
        solar_constant: [W m-2]. day0: calendar day at t = 0 (``"daily"`` only).
    """

    grid: AtmosphereGrid = eqx.field(static=True)
    fn: Callable[[ColumnInputs], ColumnTendencies]
    insolation: str = eqx.field(static=True, default="annual")
    solar_constant: float = eqx.field(static=True, default=1365.2)
    day0: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not isinstance(self.grid, AtmosphereGrid):
            raise ConfigError(f"ColumnPhysics needs an AtmosphereGrid (model.grid), got {type(self.grid).__name__}")
        if not callable(self.fn):
            raise ConfigError(f"ColumnPhysics needs a callable fn(ColumnInputs) -> ColumnTendencies, got "
                              f"{type(self.fn).__name__}")
        if self.insolation not in INSOLATIONS:
            raise ConfigError(f"insolation must be one of {INSOLATIONS}, got {self.insolation!r}")

    def columns(self, state: AtmosphereState, t: Any) -> tuple[AtmosphereFields, ColumnTendencies]:
        """The nodal fields of ``state`` and the column tendencies, leaves (lat * lon, L) or (lat * lon,)."""
        fields = fields_from_state(self.grid, state)
        ins = insolation_field(self.grid, t, self.insolation, self.solar_constant, self.day0)
        out = jax.vmap(self.fn)(column_inputs(self.grid, fields, ins))
        return fields, out

    def _nodal(self, x: Any) -> Any:
        nlat, nlon = self.grid.nodal_shape[1:]
        return jnp.moveaxis(x.reshape(nlat, nlon, -1), -1, 0)

    def tendency(self, state: AtmosphereState, t: Any, key: Any = None) -> AtmosphereState:
        g = self.grid
        _, out = self.columns(state, t)
        for name in ("temperature", "specific_humidity", "eastward_wind", "northward_wind"):
            shape = jnp.shape(getattr(out, name))
            if len(shape) != 2 or shape[1] != g.layers:
                raise ConfigError(f"column physics returned {name} of shape {shape[1:]} per column, expected "
                                  f"({g.layers},): the network was built for another number of levels")
        dt = g.to_modal(self._nodal(out.temperature) * g.factor("K"))
        dq = g.to_modal(self._nodal(out.specific_humidity))
        dvort, ddiv = g.wind_tendency_to_modal(self._nodal(out.eastward_wind), self._nodal(out.northward_wind))
        return AtmosphereState(dvort, ddiv, dt, jnp.zeros_like(state.log_surface_pressure), dq)

    def precipitation(self, state: AtmosphereState, t: Any) -> jax.Array:
        """Precipitation flux [kg m-2 s-1] on (lat, lon)."""
        nlat, nlon = self.grid.nodal_shape[1:]
        return self.columns(state, t)[1].precipitation.reshape(nlat, nlon)

    def evaporation(self, state: AtmosphereState, t: Any) -> Any:
        """Evaporation flux [kg m-2 s-1] on (lat, lon), or ``None`` when ``fn`` gives none."""
        nlat, nlon = self.grid.nodal_shape[1:]
        e = self.columns(state, t)[1].evaporation
        return None if e is None else e.reshape(nlat, nlon)

    def observe(self, state: AtmosphereState, t: Any) -> AtmosphereFields:
        """Nodal SI fields of ``state`` with this physics's ``precipitation_flux`` (``observe=`` of a rollout)."""
        fields, out = self.columns(state, t)
        nlat, nlon = self.grid.nodal_shape[1:]
        return eqx.tree_at(lambda f: f.precipitation_flux, fields, out.precipitation.reshape(nlat, nlon),
                           is_leaf=lambda x: x is None)

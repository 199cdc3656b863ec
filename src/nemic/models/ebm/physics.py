"""The pieces of the diffusive EBM: its state, its static latitude grid, its radiation and its diffusion.

:class:`~nemic.models.ebm.model.DiffusiveEBM` is the implicit-explicit sum of :class:`EBMRadiation` (explicit) and
:class:`MeridionalDiffusion` (implicit). Each physical parameter lives in exactly one of the two parts, so the
model's pytree, and that of any hybrid built from it with ``+``, holds it once:

* the radiation holds the insolation, albedo, longwave, CO2 and orbital parameters and the mixed-layer depth
  (hence the heat capacity C);
* the diffusion holds only ``D_over_C = D / C`` [s-1], the diffusivity D [W m-2 K-1] divided by the heat capacity
  (the model exposes D itself as ``D_over_C * C``).

Units: SI, except temperatures in degC (the A + B T law is defined in degC) and latitudes in degrees.

References:
    North, G. R. (1975), J. Atmos. Sci. 32, 2033-2043, doi:10.1175/1520-0469(1975)032<2033:TOEBCM>2.0.CO;2.
    Budyko, M. I. (1969), Tellus 21, 611-619 (OLR = A + B T).
    Myhre et al. (1998), Geophys. Res. Lett. 25, 2715-2718, doi:10.1029/98GL01908 (5.35 ln(C/C0) W m-2).
    Rose, B. E. J. (2018), climlab, J. Open Source Softw. 3, 659, doi:10.21105/joss.00659 (names and defaults).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_int_at_least
from nemic.core.process import AbstractImplicitProcess, AbstractProcess
from nemic.core.state import AbstractState
from nemic.models.ebm.insolation import (
    DAYS_PER_YEAR,
    annual_mean_insolation,
    daily_insolation,
    legendre_p2,
    p2_insolation,
)

#: physical constants (climlab's values)
RHO_WATER = 1000.0  # kg m-3
CP_WATER = 4181.3  # J kg-1 K-1
EARTH_RADIUS = 6.373e6  # m
SECONDS_PER_DAY = 86400.0
SECONDS_PER_YEAR = SECONDS_PER_DAY * DAYS_PER_YEAR
CO2_FORCING_COEFF = 5.35  # W m-2 per ln(C/C0), Myhre et al. (1998)

GRIDS = ("sin", "lat")
INSOLATIONS = ("p2", "annual", "daily")


class EBMState(AbstractState):
    """State of the diffusive EBM: zonal-mean surface temperature ``Ts`` [degC], shape (num_lat,)."""

    Ts: jax.Array

    cf: ClassVar[dict[str, dict]] = {
        "Ts": {"dims": ("lat",), "units": "degC", "long_name": "zonal-mean surface temperature",
               "standard_name": "surface_temperature"},
    }
    time_units: ClassVar[str] = "s"


def _kind(grid: Any) -> str:
    return grid.kind if isinstance(grid, LatitudeGrid) else grid


@functools.lru_cache(maxsize=64)
def _grid_arrays(num_lat: int, kind: str) -> dict[str, np.ndarray]:
    check_int_at_least("num_lat", num_lat, 2)
    if kind == "sin":
        xe = np.linspace(-1.0, 1.0, num_lat + 1)
        x = 0.5 * (xe[1:] + xe[:-1])
        lat_e = np.rad2deg(np.arcsin(xe))
        lat = np.rad2deg(np.arcsin(x))
    elif kind == "lat":
        lat_e = np.linspace(-90.0, 90.0, num_lat + 1)
        lat = 0.5 * (lat_e[1:] + lat_e[:-1])
        xe = np.sin(np.deg2rad(lat_e))
        xe[0], xe[-1] = -1.0, 1.0
        x = np.sin(np.deg2rad(lat))
    else:
        raise ConfigError(f"grid must be one of {GRIDS}, got {kind!r}")
    out = {"x_edges": xe, "x": x, "lat": lat, "lat_edges": lat_e, "weights": np.diff(xe)}
    for v in out.values():
        v.setflags(write=False)
    return out


def latitude_grid(num_lat: int, grid: str | LatitudeGrid = "sin") -> dict[str, np.ndarray]:
    """Cell edges and centres of the latitude grid (read-only NumPy arrays, float64).

    Returns a dict with ``x_edges`` (num_lat+1,), ``x`` (num_lat,) = sin(latitude) of the cell centres,
    ``lat`` (num_lat,) [deg], ``lat_edges`` (num_lat+1,) [deg], and ``weights`` (num_lat,) = cell widths in x
    (the area of a cell divided by 2 pi a^2; they sum to 2). ``grid`` is ``"sin"``, ``"lat"`` or a
    :class:`LatitudeGrid`.
    """
    return _grid_arrays(int(num_lat), _kind(grid))


@dataclasses.dataclass(frozen=True)
class LatitudeGrid:
    """The EBM's static latitude grid: ``num_lat`` cells with edges equally spaced in x = sin(latitude)
    (``kind="sin"``, equal-area cells) or in latitude (``kind="lat"``, climlab's grid).

    Hashable and free of trainable arrays, so models, closures and nudging terms hold it as a static field.
    Its arrays are NumPy (constants under ``jit``).
    """

    num_lat: int
    kind: str = "sin"

    def __post_init__(self):
        check_int_at_least("num_lat", self.num_lat, 2)
        if self.kind not in GRIDS:
            raise ConfigError(f"grid must be one of {GRIDS}, got {self.kind!r}")

    def __str__(self) -> str:
        return self.kind

    @property
    def x(self) -> np.ndarray:
        """sin(latitude) of the cell centres, (num_lat,)."""
        return _grid_arrays(self.num_lat, self.kind)["x"]

    @property
    def x_edges(self) -> np.ndarray:
        """sin(latitude) of the cell edges, (num_lat+1,)."""
        return _grid_arrays(self.num_lat, self.kind)["x_edges"]

    @property
    def lat(self) -> np.ndarray:
        """Latitude of the cell centres [deg], (num_lat,)."""
        return _grid_arrays(self.num_lat, self.kind)["lat"]

    @property
    def lat_edges(self) -> np.ndarray:
        """Latitude of the cell edges [deg], (num_lat+1,)."""
        return _grid_arrays(self.num_lat, self.kind)["lat_edges"]

    @property
    def weights(self) -> np.ndarray:
        """Area weights: cell widths in x, summing to 2, (num_lat,)."""
        return _grid_arrays(self.num_lat, self.kind)["weights"]

    def check_state(self, state: Any) -> None:
        """One-line :class:`DataError` unless ``state`` is an :class:`EBMState` on this grid."""
        if not isinstance(state, EBMState):
            raise DataError(f"the EBM steps an EBMState, got {type(state).__name__}")
        if np.shape(state.Ts)[-1:] != (self.num_lat,):
            raise DataError(f"EBMState.Ts must have shape ({self.num_lat},) on this grid, got {np.shape(state.Ts)}")


def _diffusion_coefficients(num_lat: int, grid: str | LatitudeGrid) -> tuple[np.ndarray, np.ndarray]:
    """Sub- and super-diagonal coefficients of the unit-sphere operator d/dx[(1-x^2) d/dx] (flux form).

    ``L T_i = lower_i (T_{i-1} - T_i) + upper_i (T_{i+1} - T_i)``, with
    ``g_k = (1 - x_k^2)/(x_{c,k} - x_{c,k-1})`` on interior edges, zero on the polar edges.
    """
    g = latitude_grid(num_lat, grid)
    xe, x, w = g["x_edges"], g["x"], g["weights"]
    ge = np.zeros(num_lat + 1)
    ge[1:-1] = (1.0 - xe[1:-1] ** 2) / np.diff(x)
    return ge[:-1] / w, ge[1:] / w


def tridiagonal_diffusion_solve(lo, up, rhs, eta):
    """Solve ``(I - eta L) T = rhs`` for the flux-form operator with coefficients ``lo``, ``up`` (num_lat,)
    [s-1]: ``jax.lax.linalg.tridiagonal_solve``, O(num_lat)."""
    dl = (-eta * lo).at[0].set(0.0)
    du = (-eta * up).at[-1].set(0.0)
    d = 1.0 + eta * (lo + up)
    return jax.lax.linalg.tridiagonal_solve(dl, d, du, rhs[:, None])[:, 0]


class MeridionalDiffusion(AbstractImplicitProcess):
    """Diffusive meridional heat transport ``(D/C) d/dx[(1-x^2) dT/dx]`` [K s-1] in flux form (North 1975).

    ``implicit_solve`` solves ``(I - eta L) T = rhs`` with a tridiagonal solve (O(num_lat)). The operator conserves
    the area integral of the heat content exactly (zero flux through the poles).

    Attributes:
        D_over_C: the diffusivity D [W m-2 K-1] divided by the heat capacity C [J m-2 K-1], in s-1 (the heat
            capacity itself belongs to the radiation part of the model: each parameter is held once).
        grid: the static :class:`LatitudeGrid`.
    """

    D_over_C: jax.Array
    grid: LatitudeGrid = eqx.field(static=True)

    @classmethod
    def from_diffusivity(cls, D: Any, heat_capacity: Any, grid: LatitudeGrid) -> "MeridionalDiffusion":
        """The diffusion of diffusivity ``D`` [W m-2 K-1] in a mixed layer of heat capacity [J m-2 K-1]."""
        return cls(D_over_C=jnp.asarray(D, float) / heat_capacity, grid=grid)

    def _coeffs(self):
        lo, up = _diffusion_coefficients(self.grid.num_lat, self.grid)
        return self.D_over_C * jnp.asarray(lo), self.D_over_C * jnp.asarray(up)

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        T = state.Ts
        lo, up = self._coeffs()
        dT = jnp.diff(T)
        left = jnp.concatenate([jnp.zeros(1, T.dtype), dT])  # T_i - T_{i-1}
        right = jnp.concatenate([dT, jnp.zeros(1, T.dtype)])  # T_{i+1} - T_i
        return EBMState(Ts=up * right - lo * left)

    def implicit_solve(self, rhs: EBMState, t: Any, eta: Any) -> EBMState:
        lo, up = self._coeffs()
        return EBMState(Ts=tridiagonal_diffusion_solve(lo, up, rhs.Ts, eta))


def ice_albedo(T, x, a0, a2, ai, Tf, width):
    """Planetary albedo: ``a0 + a2 P2(x)`` on ice-free cells, ``ai`` on ice, a tanh transition around ``Tf``.

    ``alpha = ai + (a0 + a2 P2(x) - ai) * (1 + tanh((T - Tf)/width))/2``; ``width = 0`` gives the step function
    of North (1975) and climlab (ice where T <= Tf). T, x: shape (num_lat,); temperatures in degC.
    """
    warm = a0 + a2 * legendre_p2(x)
    safe = jnp.where(width > 0, width, 1.0)
    smooth = ai + (warm - ai) * 0.5 * (1.0 + jnp.tanh((T - Tf) / safe))
    step = jnp.where(T > Tf, warm, ai)
    return jnp.where(width > 0, smooth, step)


#: the parameters held by the radiation part, in the order of the model's constructor
RADIATION_PARAMS = ("S0", "s2", "A", "B", "a0", "a2", "ai", "Tf", "water_depth", "albedo_width", "co2_ratio",
                    "ecc", "obliquity", "long_peri")


class EBMRadiation(AbstractProcess):
    """Explicit radiative tendency ``[Q (1 - alpha) - (A + B T) + 5.35 ln(co2_ratio)] / C`` [K s-1].

    The insolation Q [W m-2] is computed from the parameters: ``p2`` is North's fit ``S0/4 (1 + s2 P2(x))``,
    ``annual`` the exact annual mean of the orbit and ``daily`` the daily mean of a Kepler orbit at model time t [s]
    (day 0 = 1 January; Berger 1978). C = ``water_depth * rho_w * c_w`` [J m-2 K-1] is the mixed layer's heat
    capacity.

    Attributes (scalar arrays): S0 [W m-2], s2, A [W m-2], B [W m-2 K-1], a0, a2, ai, Tf [degC], water_depth [m],
    albedo_width [K], co2_ratio, ecc, obliquity [deg], long_peri [deg]; static: grid, insolation_type.
    """

    S0: jax.Array
    s2: jax.Array
    A: jax.Array
    B: jax.Array
    a0: jax.Array
    a2: jax.Array
    ai: jax.Array
    Tf: jax.Array
    water_depth: jax.Array
    albedo_width: jax.Array
    co2_ratio: jax.Array
    ecc: jax.Array
    obliquity: jax.Array
    long_peri: jax.Array
    grid: LatitudeGrid = eqx.field(static=True)
    insolation_type: str = eqx.field(static=True, default="p2")

    def __check_init__(self):
        if self.insolation_type not in INSOLATIONS:
            raise ConfigError(f"insolation_type must be one of {INSOLATIONS}, got {self.insolation_type!r}")

    @property
    def heat_capacity(self) -> jax.Array:
        """Mixed-layer heat capacity ``water_depth * rho_w * c_w`` [J m-2 K-1]."""
        return self.water_depth * RHO_WATER * CP_WATER

    def insolation_at(self, t: Any) -> jax.Array:
        """Insolation [W m-2] at model time ``t`` [s], shape (num_lat,)."""
        if self.insolation_type == "p2":
            return p2_insolation(jnp.asarray(self.grid.x), self.S0, self.s2)
        if self.insolation_type == "annual":
            return annual_mean_insolation(jnp.asarray(self.grid.lat), self.S0, self.ecc, self.obliquity,
                                          self.long_peri)
        day = jnp.mod(t / SECONDS_PER_DAY, DAYS_PER_YEAR)
        return daily_insolation(jnp.asarray(self.grid.lat), day, self.S0, self.ecc, self.obliquity, self.long_peri)

    def fluxes(self, T: jax.Array, t: Any) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(ASR, OLR, albedo, insolation), each shape (num_lat,), W m-2 (albedo dimensionless)."""
        Q = self.insolation_at(t)
        alpha = ice_albedo(T, jnp.asarray(self.grid.x), self.a0, self.a2, self.ai, self.Tf, self.albedo_width)
        olr = self.A + self.B * T - CO2_FORCING_COEFF * jnp.log(self.co2_ratio)
        return Q * (1.0 - alpha), olr, alpha, Q

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        asr, olr, _, _ = self.fluxes(state.Ts, t)
        return EBMState(Ts=(asr - olr) / self.heat_capacity)

    def check_state(self, state: Any) -> None:
        """One-line :class:`DataError` unless ``state`` is an :class:`EBMState` on this grid."""
        self.grid.check_state(state)

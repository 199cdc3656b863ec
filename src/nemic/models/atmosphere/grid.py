"""The static grid of the global atmosphere: dinosaur's spectral transform on Gaussian nodes and sigma levels.

:class:`AtmosphereGrid` is a small, hashable object (truncation, number of sigma levels, reference temperature)
that builds dinosaur's ``CoordinateSystem`` (``spherical_harmonic.Grid.T<n>`` and equidistant
``SigmaCoordinates``) and its nondimensional units (``PrimitiveEquationsSpecs.from_si()``: the Earth's radius is
1 and the time unit is 1 / (2 Omega) = 6856.8 s) once per process, and converts between

* *modal* fields: spectral coefficients of shape ``(levels, m, l)`` in dinosaur's real basis, nondimensional;
* *nodal* fields: values on the Gaussian grid in SI units, in nemic's layout ``(levels, lat, lon)`` with latitude
  ascending (south to north) and longitude from 0 east in degrees.

Closures, column physics and fixers hold this grid, never the model. Reference: Durran (2010), Numerical Methods
for Fluid Dynamics, 2nd ed., ch. 6 (spectral transform method); dinosaur (Kochkov et al. 2024, Nature 632,
1060-1066, doi:10.1038/s41586-024-07744-y).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
from dinosaur import (
    coordinate_systems,
    primitive_equations,
    scales,
    sigma_coordinates,
    spherical_harmonic,
)

from nemic.core.errors import ConfigError, DataError

#: spectral truncations with a standard Gaussian grid in dinosaur (``Grid.T<n>``)
SUPPORTED_TRUNCATIONS = (21, 31, 42, 85)
#: SI constants of dinosaur's default units (``dinosaur.scales``)
GRAVITY = 9.80616  # m s-2
EARTH_RADIUS = 6.37122e6  # m
KAPPA = 2.0 / 7.0
CP_DRY_AIR = 1004.0  # J kg-1 K-1
LATENT_HEAT = 2.501e6  # J kg-1 (dinosaur.scales.LATENT_HEAT_OF_VAPORIZATION)
SECONDS_PER_DAY = 86400.0


@functools.cache
def _build(truncation: int, layers: int):
    # float64 sigma levels: with dinosaur's default float32 levels, products such as Held-Suarez's k_f times the
    # sigma profile are rounded to float32 precision even in float64 runs
    horizontal = getattr(spherical_harmonic.Grid, f"T{truncation}")()
    levels = sigma_coordinates.SigmaCoordinates.equidistant(layers, dtype=np.float64)
    coords = coordinate_systems.CoordinateSystem(horizontal, levels)
    specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
    u = scales.units
    factors = {  # multiply an SI value by this to get dinosaur's nondimensional value
        "s": float(specs.nondimensionalize(1.0 * u.s)),
        "m": float(specs.nondimensionalize(1.0 * u.m)),
        "m/s": float(specs.nondimensionalize(1.0 * u.m / u.s)),
        "Pa": float(specs.nondimensionalize(1.0 * u.Pa)),
        "K": float(specs.nondimensionalize(1.0 * u.degK)),
    }
    return coords, specs, factors


@dataclasses.dataclass(frozen=True)
class AtmosphereGrid:
    """Spectral (modal) and Gaussian (nodal) grid on sigma levels, with SI <-> nondimensional conversions.

    Args:
        truncation: triangular truncation T<n>, one of :data:`SUPPORTED_TRUNCATIONS` (T21: 32 x 64 nodes).
        layers: number of equidistant sigma levels (>= 2).
        reference_temperature: the model's reference temperature T_ref [K]; the prognostic temperature is
            ``T - T_ref`` (the semi-implicit scheme linearises about an isothermal T_ref, Simmons et al. 1978).
    """

    truncation: int = 21
    layers: int = 8
    reference_temperature: float = 288.0

    def __post_init__(self):
        if self.truncation not in SUPPORTED_TRUNCATIONS:
            raise ConfigError(f"unsupported truncation T{self.truncation}: choose one of "
                              f"{', '.join(f'T{t}' for t in SUPPORTED_TRUNCATIONS)}")
        if not isinstance(self.layers, (int, np.integer)) or isinstance(self.layers, bool) or self.layers < 2:
            raise ConfigError(f"layers must be an integer >= 2, got {self.layers!r}")
        if not (100.0 <= float(self.reference_temperature) <= 400.0):
            raise ConfigError(f"reference_temperature must be in [100, 400] K, got {self.reference_temperature}")
        object.__setattr__(self, "truncation", int(self.truncation))
        object.__setattr__(self, "layers", int(self.layers))
        object.__setattr__(self, "reference_temperature", float(self.reference_temperature))

    # ------------------------------------------------------------ dinosaur objects
    @property
    def coords(self) -> coordinate_systems.CoordinateSystem:
        """dinosaur's ``CoordinateSystem`` (horizontal spectral grid + sigma levels)."""
        return _build(self.truncation, self.layers)[0]

    @property
    def specs(self) -> Any:
        """dinosaur's nondimensional physical constants (``PrimitiveEquationsSpecs.from_si()``)."""
        return _build(self.truncation, self.layers)[1]

    @property
    def horizontal(self) -> spherical_harmonic.Grid:
        """dinosaur's horizontal ``spherical_harmonic.Grid``."""
        return self.coords.horizontal

    def factor(self, unit: str) -> float:
        """Multiply an SI value in ``unit`` (``s``, ``m``, ``m/s``, ``Pa``, ``K``) by this to nondimensionalise."""
        return _build(self.truncation, self.layers)[2][unit]

    @property
    def time_scale(self) -> float:
        """Seconds per nondimensional time unit (1 / (2 Omega) = 6856.8 s)."""
        return 1.0 / self.factor("s")

    # ------------------------------------------------------------ shapes and coordinates
    @property
    def modal_shape(self) -> tuple[int, int, int]:
        """Shape of a modal 3-D field: (layers, m, l)."""
        return self.coords.modal_shape

    @property
    def surface_modal_shape(self) -> tuple[int, int, int]:
        """Shape of a modal surface field: (1, m, l)."""
        return self.coords.surface_modal_shape

    @property
    def nodal_shape(self) -> tuple[int, int, int]:
        """Shape of a nodal 3-D field in nemic's layout: (layers, lat, lon)."""
        nlon, nlat = self.horizontal.nodal_shape
        return (self.layers, nlat, nlon)

    @property
    def lat(self) -> np.ndarray:
        """Gaussian latitudes [degrees_north], ascending, shape (lat,)."""
        return np.rad2deg(np.arcsin(self.horizontal.nodal_axes[1]))

    @property
    def lon(self) -> np.ndarray:
        """Longitudes [degrees_east], shape (lon,)."""
        return np.rad2deg(self.horizontal.nodal_axes[0])

    @property
    def sigma(self) -> np.ndarray:
        """Sigma (p / p_s) at the level centres, top to bottom, shape (layers,)."""
        return np.asarray(self.coords.vertical.centers, dtype=np.float64)

    @property
    def layer_thickness(self) -> np.ndarray:
        """Sigma thickness of each level (sums to 1), shape (layers,)."""
        return np.asarray(self.coords.vertical.layer_thickness, dtype=np.float64)

    @property
    def area_weights(self) -> np.ndarray:
        """Gaussian quadrature weights as fractions of the sphere's area (sum 1), shape (lat, lon)."""
        w = np.asarray(self.horizontal.quadrature_weights).T
        return w / w.sum()

    # ------------------------------------------------------------ transforms (nemic layout <-> dinosaur)
    def to_nodal(self, x: Any) -> Any:
        """Modal (..., m, l) -> nodal (..., lat, lon), no change of units."""
        return jnp.swapaxes(self.horizontal.to_nodal(x), -1, -2)

    def to_modal(self, x: Any) -> Any:
        """Nodal (..., lat, lon) -> modal (..., m, l), no change of units."""
        return self.horizontal.to_modal(jnp.swapaxes(x, -1, -2))

    def global_mean(self, nodal: Any) -> Any:
        """Area-weighted global mean of a nodal field (..., lat, lon) -> (...)."""
        return jnp.einsum("...ij,ij->...", nodal, jnp.asarray(self.area_weights))

    def winds(self, vorticity: Any, divergence: Any) -> tuple[Any, Any]:
        """Modal nondimensional vorticity and divergence -> nodal (u, v) [m/s], shapes (layers, lat, lon)."""
        u, v = spherical_harmonic.vor_div_to_uv_nodal(self.horizontal, vorticity, divergence)
        f = self.factor("m/s")
        return jnp.swapaxes(u, -1, -2) / f, jnp.swapaxes(v, -1, -2) / f

    def vorticity_divergence(self, u: Any, v: Any) -> tuple[Any, Any]:
        """Nodal (u, v) [m/s], shape (layers, lat, lon) -> modal nondimensional (vorticity, divergence)."""
        f = self.factor("m/s")
        return spherical_harmonic.uv_nodal_to_vor_div_modal(
            self.horizontal, jnp.swapaxes(u, -1, -2) * f, jnp.swapaxes(v, -1, -2) * f)

    def wind_tendency_to_modal(self, du: Any, dv: Any) -> tuple[Any, Any]:
        """Nodal wind tendencies [m s-2], shape (layers, lat, lon) -> tendencies per second of the modal
        nondimensional vorticity and divergence (the curl and divergence of ``(du, dv)``, as in dinosaur's
        Held-Suarez forcing)."""
        h = self.horizontal
        f = self.factor("m/s")
        cu = h.to_modal(jnp.swapaxes(du, -1, -2) * f / h.cos_lat)
        cv = h.to_modal(jnp.swapaxes(dv, -1, -2) * f / h.cos_lat)
        return h.curl_cos_lat((cu, cv)), h.div_cos_lat((cu, cv))

    def check_levels(self, n: int, what: str) -> None:
        """One-line :class:`DataError` when ``what`` has ``n`` levels instead of the grid's."""
        if n != self.layers:
            raise DataError(f"{what} has {n} levels but the grid has {self.layers} sigma levels")

    def __str__(self) -> str:
        return f"T{self.truncation}L{self.layers}"

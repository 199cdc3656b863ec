"""A Gaussian random field on the sphere with AR(1) memory in time: the pattern of stochastically perturbed
parametrisation tendencies (SPPT).

The field is kept as spherical-harmonic coefficients ``psi_lm`` of dinosaur's basis and evolves per model step as

    psi_{n+1} = phi psi_n + sqrt(1 - phi^2) a_l z_n,     phi = exp(-dt / tau),   z_n ~ N(0, 1) per coefficient,

so that it is stationary with the variance spectrum ``a_l^2 ~ exp(-l (l + 1) (L / a)^2 / 2)`` (a Gaussian-shaped
correlation of length ``L`` on a sphere of radius ``a``), normalised so that the area mean of the nodal field's
variance is exactly ``sigma^2``. The normalisation uses the basis itself: with ``c_lm`` the area mean of the square
of basis function ``lm`` on the Gaussian grid, ``Var = sum_lm a_l^2 c_lm``, computed once from the transforms of
the unit coefficients. This is the single-scale version of ECMWF's SPPT pattern (Buizza, Miller & Palmer 1999,
QJRMS 125, 2887, doi:10.1002/qj.49712556006; Palmer et al. 2009, ECMWF Tech. Memo. 598; Leutbecher et al. 2017,
QJRMS 143, 2315, doi:10.1002/qj.3094: L = 500 km, tau = 6 h, sigma = 0.52 for their smallest scale, and the pattern
clipped to [-1, 1] so that ``1 + e >= 0``).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_positive
from nemic.models.atmosphere.grid import AtmosphereGrid

__all__ = ["SphericalAR1Field", "EARTH_RADIUS"]

EARTH_RADIUS = 6.371e6  # m


def _basis_squares(grid: AtmosphereGrid) -> np.ndarray:
    """``c_lm``: area mean of the squared nodal image of every unit modal coefficient, shape (m, l)."""
    m, l = grid.surface_modal_shape[1:]
    eye = jnp.eye(m * l, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32).reshape(m * l, m, l)
    nodal = np.asarray(grid.to_nodal(eye), dtype=np.float64)
    return np.einsum("kij,ij->k", nodal ** 2, grid.area_weights).reshape(m, l)


class SphericalAR1Field(eqx.Module):
    """An AR(1) Gaussian random field on the sphere (module docs), one value per Gaussian grid point.

    Args:
        grid: the atmosphere's grid.
        sigma: standard deviation of the nodal field (area mean of the variance), >= 0.
        length_km: correlation length L [km], > 0.
        tau_hours: correlation time [h], > 0.
        dt_seconds: the model step [s] (the field advances once per step).
        clip: the nodal pattern is clipped to ``[-clip, clip]`` (``None``: no clipping).
    """

    grid: AtmosphereGrid = eqx.field(static=True)
    sigma: jax.Array
    phi: jax.Array
    amplitude: jax.Array  # (m, l): a_l / sqrt(sum a^2 c), zero where dinosaur's basis has no coefficient
    clip: float | None = eqx.field(static=True)

    def __init__(self, grid: AtmosphereGrid, sigma: Any = 0.5, length_km: float = 500.0, tau_hours: float = 6.0,
                 dt_seconds: float = 1800.0, clip: float | None = 1.0):
        check_positive("SPPT pattern sigma", sigma, allow_zero=True)
        for name, v in (("length_km", length_km), ("tau_hours", tau_hours), ("dt_seconds", dt_seconds)):
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if clip is not None and not clip > 0:
            raise ConfigError(f"clip must be > 0 or None, got {clip!r}")
        self.grid = grid
        l_index = np.asarray(grid.horizontal.modal_axes[1], dtype=float)[None, :]
        mask = np.asarray(grid.horizontal.mask, dtype=float)
        ratio = length_km * 1e3 / EARTH_RADIUS
        spec = mask * np.exp(-0.25 * l_index * (l_index + 1) * ratio ** 2)  # a_l = sqrt(variance spectrum)
        spec[0, 0] = 0.0  # no global-mean mode: the pattern averages to ~0 over the sphere
        var = float(np.sum(spec ** 2 * _basis_squares(grid)))
        self.amplitude = jnp.asarray(spec / np.sqrt(var))
        self.sigma = jnp.asarray(sigma, dtype=float)
        self.phi = jnp.asarray(np.exp(-dt_seconds / (tau_hours * 3600.0)))
        self.clip = clip

    def init(self, key: Any, dtype: Any = None) -> jax.Array:
        """A draw from the stationary distribution: modal coefficients (m, l)."""
        dtype = dtype or self.amplitude.dtype
        z = jax.random.normal(key, self.amplitude.shape, dtype)
        return (self.sigma * self.amplitude * z).astype(dtype)

    def advance(self, psi: jax.Array, key: Any) -> jax.Array:
        """One step of the AR(1) process."""
        z = jax.random.normal(key, psi.shape, psi.dtype)
        return (self.phi * psi + jnp.sqrt(1.0 - self.phi ** 2) * self.sigma * self.amplitude * z).astype(psi.dtype)

    def nodal(self, psi: jax.Array) -> jax.Array:
        """The pattern on the Gaussian grid (lat, lon), clipped to ``[-clip, clip]``."""
        e = self.grid.to_nodal(psi)
        return e if self.clip is None else jnp.clip(e, -self.clip, self.clip)

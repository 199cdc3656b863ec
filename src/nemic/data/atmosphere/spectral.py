"""Coarse-graining of Gaussian-grid fields in spectral space (triangular truncation).

A nodal field on the Gaussian grid of truncation ``T_src`` is transformed to spherical-harmonic coefficients with
dinosaur's transform, every coefficient of total wavenumber ``l > T_dst`` (and so zonal wavenumber ``|m| > T_dst``)
is dropped, and the rest is transformed back on the Gaussian grid of ``T_dst``. This is the standard way of
bringing a spectral model's fields to a lower resolution (e.g. Durran 2010, Numerical Methods for Fluid Dynamics,
sec. 6.3; the "spectral truncation" of Boer & Denis 1997, Clim. Dyn. 13, 359): harmonics the coarse grid resolves
are kept exactly, smaller scales are removed without aliasing.

Layout: nemic's nodal layout ``(..., lat, lon)`` with latitude ascending; dinosaur's modal layout ``(..., m, l)``
in its real basis (``m`` index ``0, 1, -1, 2, -2, ...`` interleaved as cos/sin pairs, ``l = 0..T``).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from dinosaur import spherical_harmonic

from nemic.core.errors import ConfigError, DataError

__all__ = ["gaussian_grid", "spectral_coarsen", "lat_lon"]


@functools.lru_cache(maxsize=None)
def gaussian_grid(truncation: int) -> spherical_harmonic.Grid:
    """dinosaur's Gaussian grid ``T<truncation>`` (e.g. T21: 32 latitudes x 64 longitudes)."""
    name = f"T{int(truncation)}"
    if not hasattr(spherical_harmonic.Grid, name):
        raise ConfigError(f"unsupported truncation {name}: dinosaur has no standard Gaussian grid of that name")
    return getattr(spherical_harmonic.Grid, name)()


def lat_lon(truncation: int) -> tuple[np.ndarray, np.ndarray]:
    """(latitudes ascending [degrees_north], longitudes [degrees_east]) of the T<truncation> Gaussian grid."""
    g = gaussian_grid(truncation)
    lon, sin_lat = g.nodal_axes
    return np.rad2deg(np.arcsin(np.asarray(sin_lat))), np.rad2deg(np.asarray(lon))


def _truncation_mask(source: spherical_harmonic.Grid, target_truncation: int) -> np.ndarray:
    """1 where a source coefficient has ``|m| <= T`` and ``l <= T`` (triangular truncation T), shape (m, l)."""
    m, l = np.meshgrid(*source.modal_axes, indexing="ij")
    return ((np.abs(m) <= target_truncation) & (l <= target_truncation)).astype(float)


def spectral_coarsen(field, source_truncation: int, target_truncation: int):
    """Coarse-grain a nodal field from T``source_truncation`` to T``target_truncation`` by spectral truncation.

    Args:
        field: array (..., lat_src, lon_src) on the source Gaussian grid, latitude ascending.
        source_truncation, target_truncation: triangular truncations, ``target <= source``.

    Returns:
        array (..., lat_dst, lon_dst) on the target Gaussian grid. Spherical harmonics of total wavenumber up to
        ``target_truncation`` are reproduced exactly (to round-off); higher ones are removed.
    """
    if target_truncation > source_truncation:
        raise ConfigError(f"cannot coarse-grain T{source_truncation} to the finer T{target_truncation}")
    src, dst = gaussian_grid(source_truncation), gaussian_grid(target_truncation)
    field = jnp.asarray(field)
    nlon, nlat = src.nodal_shape
    if field.shape[-2:] != (nlat, nlon):
        raise DataError(f"field has horizontal shape {field.shape[-2:]} but T{source_truncation} needs "
                        f"{(nlat, nlon)} (lat, lon)")
    modal = src.to_modal(jnp.swapaxes(field, -1, -2)) * _truncation_mask(src, target_truncation)
    # keep the rows/columns of the kept wavenumbers, in the target grid's own ordering
    m_src, l_src = (np.asarray(a) for a in src.modal_axes)
    m_dst, l_dst = (np.asarray(a) for a in dst.modal_axes)
    rows = np.array([int(np.flatnonzero(m_src == m)[0]) for m in m_dst])
    cols = np.array([int(np.flatnonzero(l_src == ll)[0]) for ll in l_dst])
    modal = modal[..., rows, :][..., :, cols]
    return jnp.swapaxes(dst.to_nodal(modal), -1, -2)

"""The static grid of the two-layer QG model: a doubly periodic domain and its rfft2 spectral layout.

:class:`QGGrid` holds only shape-determining numbers (``nx``, ``ny``, ``L``, ``W``) and derives from them the
wavenumbers, the cell-centre coordinates and the transforms. It holds no arrays, so it is hashable and can be a
static field: closures, coarseners and nudging terms hold a grid, never a whole model, and a hybrid model's pytree
holds each physical parameter once (the model's).

Spectral layout (pyqg's, ``numpy.fft.rfft2``): a real field (..., ny, nx) has coefficients (..., ny, nk) with
``nk = nx // 2 + 1``; see :mod:`nemic.models.qg.spectral`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_positive
from nemic.models.qg import spectral as sp


class QGGrid(eqx.Module):
    """A doubly periodic grid of ``ny x nx`` cells on an ``L x W`` domain (m), with its rfft2 wavenumbers.

    Args:
        nx, ny: grid points in x and y (even, >= 8; ``ny`` defaults to ``nx``).
        L, W: domain size in x and y, m (``W`` defaults to ``L``).
    """

    nx: int = eqx.field(static=True)
    ny: int = eqx.field(static=True)
    L: float = eqx.field(static=True)
    W: float = eqx.field(static=True)

    def __init__(self, nx: int = 64, ny: int | None = None, L: float = 1e6, W: float | None = None):
        ny = nx if ny is None else ny
        for name, n in (("nx", nx), ("ny", ny)):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 8 or n % 2:
                raise ConfigError(f"{name} must be an even integer >= 8, got {n!r}")
        W = L if W is None else W
        check_positive("L", L)
        check_positive("W", W)
        self.nx, self.ny, self.L, self.W = int(nx), int(ny), float(L), float(W)

    @property
    def nk(self) -> int:
        """Number of zonal wavenumbers of the rfft2 grid, ``nx // 2 + 1``."""
        return self.nx // 2 + 1

    @property
    def M(self) -> int:
        """Number of grid points, ``nx * ny``."""
        return self.nx * self.ny

    @property
    def dx(self) -> float:
        return self.L / self.nx

    @property
    def dy(self) -> float:
        return self.W / self.ny

    @property
    def x(self) -> np.ndarray:
        """Cell-centre x coordinates (nx,), m (pyqg's grid)."""
        return (np.arange(self.nx) + 0.5) * self.dx

    @property
    def y(self) -> np.ndarray:
        """Cell-centre y coordinates (ny,), m."""
        return (np.arange(self.ny) + 0.5) * self.dy

    @property
    def spectral_shape(self) -> tuple[int, int, int]:
        """Shape (2, ny, nk) of the spectral PV of the two layers."""
        return (2, self.ny, self.nk)

    def wavenumbers(self, dtype: Any = None) -> tuple[Any, Any, Any]:
        """``(k, l, wv2)`` on the rfft2 grid (ny, nk), rad/m (NumPy float64, or JAX arrays of ``dtype``)."""
        g = sp.wavenumber_grid(self.nx, self.ny, self.L, self.W)
        return g if dtype is None else tuple(jnp.asarray(a, dtype) for a in g)

    def fft(self, f):
        """rfft2 over the last two axes: (..., ny, nx) real -> (..., ny, nk) complex."""
        return sp.rfft2(f)

    def ifft(self, fh):
        """Inverse of :meth:`fft`: (..., ny, nk) complex -> (..., ny, nx) real."""
        return sp.irfft2(fh, self.nx, self.ny)

    def exponential_filter(self, filterfac: Any = 23.6):
        """pyqg's exponential filter (ny, nk) for ``filterfac`` (see :func:`spectral.exponential_filter`)."""
        return sp.exponential_filter(self.nx, self.ny, self.L, self.W, filterfac)

    def realizable(self, fh):
        """The Hermitian part of the self-conjugate columns of ``fh`` (..., ny, nk): ``rfft2(irfft2(fh))``.

        Coefficients on the rfft2 grid describe a real field only if the ``k = 0`` and ``k = nx/2`` columns are
        Hermitian in ``l`` (``f(-l) = conj(f(l))``); ``irfft2`` silently drops the anti-Hermitian part there.
        A spectral state stepped without going through physical space must drop it too, or it would feed back
        through ``i k`` and ``i l`` factors into the velocities and differ from pyqg (whose state passes through
        physical space every step). Costs two columns instead of two transforms.
        """
        cols = fh[..., jnp.array([0, self.nk - 1])]
        flip = cols[..., (-np.arange(self.ny)) % self.ny, :]
        herm = 0.5 * (cols + jnp.conj(flip))
        return fh.at[..., jnp.array([0, self.nk - 1])].set(herm)


def as_grid(g: Any) -> QGGrid:
    """The :class:`QGGrid` of ``g`` (a grid, or anything with a ``grid`` property such as a model)."""
    grid = getattr(g, "grid", g)
    if not isinstance(grid, QGGrid):
        raise ConfigError(f"a QG closure needs the model's grid (model.grid, a QGGrid), got {type(g).__name__}")
    return grid

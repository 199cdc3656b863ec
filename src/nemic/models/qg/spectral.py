"""Spectral helpers on a doubly periodic grid, in the layout of ``numpy.fft.rfft2``.

A real field ``f`` of shape (..., ny, nx) has coefficients ``fh = rfft2(f)`` of shape (..., ny, nk) with
``nk = nx // 2 + 1``: the zonal wavenumbers are ``k = 2 pi / L * [0, 1, ..., nx/2]`` (``rfftfreq``) and the
meridional ones ``l = 2 pi / W * [0, 1, ..., ny/2 - 1, -ny/2, ..., -1]`` (``fftfreq``), exactly as pyqg lays
them out (pyqg model documentation, https://pyqg.readthedocs.io). Units: wavenumbers in rad m^-1 when ``L``, ``W``
are in metres.

Because ``rfft2`` stores only half of the Hermitian-symmetric spectrum, sums over the full spectrum are sums over
the rfft grid with the weights of :func:`rfft_weights` (1 on the k = 0 and k = nx/2 columns, 2 elsewhere); then,
for real fields ``f``, ``g`` on ``M = nx ny`` points, ``mean(f g) = sum(w Re(fh conj(gh))) / M**2`` (Parseval).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def wavenumbers(nx: int, ny: int, L: float, W: float) -> tuple[np.ndarray, np.ndarray]:
    """Zonal and meridional wavenumbers of the rfft2 grid.

    Returns:
        ``(k, l)``: ``k`` of shape (nx // 2 + 1,), ``l`` of shape (ny,), in rad per unit of ``L``/``W``.
    """
    k = np.fft.rfftfreq(nx, d=L / (2 * np.pi * nx))
    l = np.fft.fftfreq(ny, d=W / (2 * np.pi * ny))
    return k, l


def wavenumber_grid(nx: int, ny: int, L: float, W: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(k, l, wv2)`` broadcast to the rfft2 grid, each of shape (ny, nx // 2 + 1); ``wv2 = k**2 + l**2``."""
    k1, l1 = wavenumbers(nx, ny, L, W)
    k, l = np.meshgrid(k1, l1)
    return k, l, k**2 + l**2


def rfft_weights(nx: int) -> np.ndarray:
    """Weights (nx // 2 + 1,) that turn sums over the rfft2 grid into sums over the full spectrum (see module doc)."""
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w


def exponential_filter(nx: int, ny: int, L: float, W: float, filterfac=23.6, cphi: float = 0.65 * math.pi):
    """The small-scale exponential filter of pyqg, on the rfft2 grid (ny, nx // 2 + 1), non-dimensional.

    ``F = 1`` for ``kappa* <= cphi`` and ``exp(-filterfac (kappa* - cphi)**4)`` beyond, with the grid-scaled
    wavenumber ``kappa* = sqrt((k dx)**2 + (l dy)**2)``. After Arbic & Flierl (2003, J. Phys. Oceanogr. 33, 2023,
    doi:10.1175/1520-0485(2003)033<2023:COTOTW>2.0.CO;2) and Smith et al. (2002, J. Fluid Mech. 469, 13,
    doi:10.1017/S0022112002001763), as used by pyqg. ``filterfac`` may be a JAX array (differentiable).
    """
    k, l, _ = wavenumber_grid(nx, ny, L, W)
    wvx = np.sqrt((k * (L / nx)) ** 2 + (l * (W / ny)) ** 2)
    return jnp.where(wvx <= cphi, 1.0, jnp.exp(-filterfac * (wvx - cphi) ** 4))


def dealias_mask(nx: int, ny: int) -> np.ndarray:
    """Orszag's 2/3-rule mask (ny, nx // 2 + 1): 1 where ``|k| < nx/3`` and ``|l| < ny/3`` (index units), else 0.

    Orszag (1971), J. Atmos. Sci. 28, 1074, doi:10.1175/1520-0469(1971)028<1074:OTEOAI>2.0.CO;2. Products of two
    fields that are zero outside the mask are computed without aliasing error on the retained modes.
    """
    ik = np.arange(nx // 2 + 1)
    il = np.abs(np.fft.fftfreq(ny, d=1.0 / ny))
    return ((il[:, None] < ny / 3) & (ik[None, :] < nx / 3)).astype(float)


def rfft2(f):
    """``jnp.fft.rfft2`` over the last two axes (physical (..., ny, nx) -> spectral (..., ny, nx//2+1))."""
    return jnp.fft.rfft2(f, axes=(-2, -1))


def irfft2(fh, nx: int, ny: int):
    """Inverse of :func:`rfft2` to a real field of shape (..., ny, nx)."""
    return jnp.fft.irfft2(fh, s=(ny, nx), axes=(-2, -1))


def ddx(f, L: float):
    """Spectral x-derivative of a periodic real field (..., ny, nx) on a domain of length ``L`` (units 1/[L])."""
    ny, nx = f.shape[-2:]
    k, _ = wavenumbers(nx, ny, L, 1.0)
    return irfft2(1j * k * rfft2(f), nx, ny)


def ddy(f, W: float):
    """Spectral y-derivative of a periodic real field (..., ny, nx) on a domain of width ``W``."""
    ny, nx = f.shape[-2:]
    _, l = wavenumbers(nx, ny, 1.0, W)
    return irfft2(1j * l[:, None] * rfft2(f), nx, ny)


def laplacian(f, L: float, W: float):
    """Spectral Laplacian of a periodic real field (..., ny, nx)."""
    ny, nx = f.shape[-2:]
    _, _, wv2 = wavenumber_grid(nx, ny, L, W)
    return irfft2(-wv2 * rfft2(f), nx, ny)


def isotropic_grid(nx: int, ny: int, L: float, W: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Shells for isotropic spectra: ``(kr, bins, dkr)``.

    ``dkr = sqrt(dk**2 + dl**2)``; shell ``j`` holds the modes with ``j dkr <= kappa < (j + 1) dkr``; ``kr`` are the
    shell centres (rad/m), keeping shells below ``min(k_max, l_max)`` (the largest full circle, as pyqg does).
    ``bins`` (ny, nk) gives each rfft2 mode's shell index (``-1`` beyond the last kept shell).
    """
    k, l, wv2 = wavenumber_grid(nx, ny, L, W)
    dk, dl = 2 * np.pi / L, 2 * np.pi / W
    dkr = float(np.sqrt(dk**2 + dl**2))
    kmax = min(dk * (nx // 2), dl * (ny // 2))
    n = int(np.ceil(kmax / dkr))
    edges = np.arange(n + 1) * dkr
    keep = edges[:-1] < kmax
    n = int(keep.sum())
    bins = np.floor(np.sqrt(wv2) / dkr).astype(int)
    bins = np.where(bins < n, bins, -1)
    return (np.arange(n) + 0.5) * dkr, bins, dkr


def isotropic_spectrum(spec, nx: int, ny: int, L: float, W: float):
    """Isotropic spectrum of a quantity given on the rfft2 grid.

    Args:
        spec: (..., ny, nx//2+1) spectral density already normalised so that ``sum(w * spec)`` (weights of
            :func:`rfft_weights`) is the domain mean of the quantity, e.g. ``0.5 wv2 |psih|**2 / M**2`` for kinetic
            energy.
    Returns:
        ``(kr, S)``: shell centres (n,) in rad/m and the spectral density (..., n) such that ``sum(S) * dkr`` is the
        part of the domain mean held by the kept shells (units of the quantity per rad/m).

    Shell sums as in pyqg's ``calc_ispec`` without its shell averaging (so Parseval holds exactly).
    """

    kr, bins, dkr = isotropic_grid(nx, ny, L, W)
    n = kr.size
    seg = np.where(bins >= 0, bins, n).ravel()
    lead = spec.shape[:-2]
    flat = (spec * jnp.asarray(rfft_weights(nx), dtype=spec.dtype)).reshape((-1, seg.size)).T
    S = jax.ops.segment_sum(flat, jnp.asarray(seg), num_segments=n + 1)[:n].T
    return kr, S.reshape(lead + (n,)) / dkr

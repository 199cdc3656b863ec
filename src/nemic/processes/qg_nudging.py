"""Processes for nudging-trained corrections of the two-layer QG model (spectral state, :class:`QGState`).

* :class:`ScaledCorrection`: a learned PV correction times a scalar amplitude, optionally without its largest
  scales (Watt-Meyer et al. 2021, GRL 48, e2021GL092555, doi:10.1029/2021GL092555);
* :class:`Float32Net`: evaluates a network in float32 inside float64 runs;
* :func:`spectral_nudging_weights`: the box mask of spectral nudging (von Storch et al. 2000, MWR 128, 3664) on the
  rfft2 grid, for :class:`~nemic.processes.nudging.Nudging` of the spectral field ``qh``;
* :func:`pv_features`: the feature map of a novelty guard (:mod:`nemic.processes.guards`) on PV states.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractProcess
from nemic.models.qg.grid import QGGrid
from nemic.models.qg.model import QGState


class Float32Net(eqx.Module):
    """Evaluates ``net`` in float32 (weights cast at construction): input cast down, output returned in float32.

    Shapes are those of ``net``; the caller casts the output back (``CNNClosure`` does). Gradients flow through
    the casts.
    """

    net: Any

    def __init__(self, net: Any):
        self.net = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, net)

    def __call__(self, x):
        return self.net(x.astype(jnp.float32))


def _integer_wavenumbers(ny: int, nk: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers ``(j (ny, 1), i (1, nk))`` of the rfft2 grid (``nx = 2 (nk - 1)``)."""
    nx = 2 * (nk - 1)
    return np.fft.fftfreq(ny, 1.0 / ny)[:, None], np.fft.rfftfreq(nx, 1.0 / nx)[None, :]


class ScaledCorrection(AbstractProcess):
    """A learned PV correction times a scalar amplitude, optionally without its largest scales.

    ``tendency = alpha * P(C(q))`` with ``C`` the correction (a Process on :class:`QGState`) and ``P`` the
    projection that zeroes the Fourier modes of integer wavenumber ``sqrt(i^2 + j^2) < remove_below``
    (``remove_below = 0``: no projection; ``1.5`` removes the mean and the four domain-scale modes ``|i|, |j| <=
    1``). ``alpha`` is a single number chosen on validation free runs (an output-amplitude calibration of the kind
    used for nudging-trained corrections by Watt-Meyer et al. 2021). ``alpha`` is an array leaf (differentiable).
    """

    correction: AbstractProcess
    alpha: jax.Array
    remove_below: float = eqx.field(static=True)

    def __init__(self, correction: AbstractProcess, alpha=1.0, remove_below: float = 0.0):
        if not float(remove_below) >= 0:
            raise ConfigError(f"remove_below must be >= 0, got {remove_below!r}")
        self.correction = correction
        self.alpha = jnp.asarray(alpha, dtype=float)
        self.remove_below = float(remove_below)

    def tendency(self, state: QGState, t: Any, key: Any = None) -> QGState:
        out = self.correction.tendency(state, t).qh
        if self.remove_below > 0:
            j, i = _integer_wavenumbers(*out.shape[-2:])
            out = out * jnp.asarray((i**2 + j**2) >= self.remove_below**2, jnp.real(out).dtype)
        return QGState(qh=self.alpha.astype(jnp.real(out).dtype) * out)


def spectral_nudging_weights(grid: QGGrid, cutoff: int | None) -> np.ndarray | None:
    """Weights (2, ny, nk) of spectral nudging on the rfft2 grid: 1 where the integer wavenumbers satisfy
    ``|i| <= cutoff`` and ``|j| <= cutoff`` (a box, as :func:`nemic.processes.nudging.spectral_lowpass`), else 0;
    ``None`` for ``cutoff=None`` (grid-point nudging). Applied to ``qh`` this is spectral nudging without FFTs."""
    if cutoff is None:
        return None
    j, i = _integer_wavenumbers(grid.ny, grid.nk)
    box = (np.abs(i) <= cutoff) & (np.abs(j) <= cutoff)
    return np.broadcast_to(box.astype(float), grid.spectral_shape).copy()


def pv_features(lo):
    """Feature map of one PV state (2, ny, nx) for the novelty guard: shape (1, 6).

    Per layer ``i``: ``log std(q_i)``, the kurtosis ``mean(q'^4) / var(q)^2`` of ``q_i`` and ``log KE_i`` (domain
    mean of ``|u_i|^2 / 2``, m^2 s^-2) of the model ``lo``. Logarithms make the features O(1), so the detector's
    relative ridge does not swamp them. Differentiable; works under ``jit``/``vmap``.
    """

    def feats(q):
        a = q - jnp.mean(q, axis=(-2, -1), keepdims=True)
        var = jnp.mean(a**2, axis=(-2, -1))
        kurt = jnp.mean(a**4, axis=(-2, -1)) / var**2
        u, v = lo.velocities(lo.invert(lo.fft(q)))
        ke = jnp.mean(u**2 + v**2, axis=(-2, -1)) / 2
        return jnp.concatenate([0.5 * jnp.log(var), kurt, jnp.log(ke)])[None, :]

    return feats


__all__ = ["Float32Net", "ScaledCorrection", "pv_features", "spectral_nudging_weights"]

"""Subgrid closures of the two-layer QG model (tendencies of the spectral PV, s^-2).

* :class:`Smagorinsky`: eddy viscosity ``nu = (C dx)^2 |S|`` on the layer velocities (Smagorinsky 1963, Mon. Wea.
  Rev. 91, 99, doi:10.1175/1520-0493(1963)091<0099:GCEWTP>2.3.CO;2), as pyqg's ``Smagorinsky`` parameterization:
  ``du = 2 (d(nu Sxx)/dx + d(nu Sxy)/dy)``, ``dv = 2 (d(nu Sxy)/dx + d(nu Syy)/dy)``, applied to PV as its curl.
* :class:`BackscatterBiharmonic`: Smagorinsky-scaled biharmonic dissipation plus negative-viscosity backscatter
  that returns a fraction ``back_constant`` of the dissipated energy at large scales (Jansen & Held 2014, Ocean
  Modell. 80, 36, doi:10.1016/j.ocemod.2014.06.002; Jansen et al. 2015, Ocean Modell. 94, 15,
  doi:10.1016/j.ocemod.2015.05.007), in the form used by pyqg and Ross et al. (2023, JAMES,
  doi:10.1029/2022MS003258, section 4.1).
* :class:`CNNClosure`: a neural network mapping normalised PV to normalised subgrid forcing (Ross et al. 2023
  "FCNN"; Guillaumin & Zanna 2021, JAMES 13, e2021MS002474, doi:10.1029/2021MS002474).

Each closure holds the model's static grid (a :class:`~nemic.models.qg.grid.QGGrid`) and its own parameters,
never the model: add it with ``model + Smagorinsky(model.grid)``; the model passes itself (its inversion and layer
depths) to :meth:`~nemic.models.qg.model.AbstractQGClosure.closure_tendency`, as pyqg passes the model to its
parameterizations, so the hybrid's pytree holds each physical parameter once.

:class:`CNNClosure` is registered in :mod:`nemic.nn.registry` as ``"QGCNNClosure"`` (its network's kind and config,
the scales and the grid), so a trained closure is saved and loaded in nemic's one weights format:
``nemic.train.checkpoint.save_module(path, closure)`` / ``load_module(path, kind="QGCNNClosure")``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.models.qg.grid import QGGrid, as_grid
from nemic.models.qg.model import AbstractQGClosure, QGState, TwoLayerQG
from nemic.nn import conv as _conv  # noqa: F401  (registers CircularCNN, the default network of saved closures)
from nemic.nn.registry import module_spec, register_module, spec_of


def _strain(model: TwoLayerQG, qh):
    k, l, _ = model.wavenumbers(jnp.real(qh).dtype)
    ph = model.invert(qh)
    # velocities pass through physical space (as in pyqg), which drops the Nyquist parts of the derivatives
    uvh = model.fft(jnp.concatenate(model.velocities(ph)))
    uh, vh = uvh[:2], uvh[2:]
    S = model.ifft(jnp.concatenate([1j * k * uh, 1j * l * vh, 0.5 * (1j * l * uh + 1j * k * vh)]))
    return S[:2], S[2:4], S[4:], ph


def _smagorinsky_viscosity(dx: float, Sxx, Syy, Sxy, constant):
    """``(C dx)^2 sqrt(2 (Sxx^2 + Syy^2 + 2 Sxy^2))`` (2, ny, nx), m^2/s."""
    return (constant * dx) ** 2 * jnp.sqrt(2 * (Sxx**2 + Syy**2 + 2 * Sxy**2))


class Smagorinsky(AbstractQGClosure):
    """Smagorinsky eddy viscosity as a PV tendency (pyqg's ``Smagorinsky``, default ``constant = 0.1``).

    Args:
        grid: the (low-resolution) model's grid (or the model, whose grid is taken).
        constant: the Smagorinsky constant C (non-dimensional; an array field, so it can be calibrated).
    """

    grid: QGGrid = eqx.field(static=True)
    constant: jax.Array

    def __init__(self, grid: Any, constant=0.1):
        self.grid = as_grid(grid)
        self.constant = jnp.asarray(constant, dtype=float)

    def closure_tendency(self, model: TwoLayerQG, state: QGState, t: Any, key: Any = None) -> QGState:
        qh = state.qh
        dt = jnp.real(qh).dtype
        k, l, _ = model.wavenumbers(dt)
        Sxx, Syy, Sxy, _ = _strain(model, qh)
        nu = _smagorinsky_viscosity(model.dx, Sxx, Syy, Sxy, jnp.asarray(self.constant, dt))
        f = model.fft(jnp.concatenate([nu * Sxx, nu * Sxy, nu * Syy]))
        # the velocity tendencies pass through physical space, as in pyqg (same treatment of Nyquist modes)
        duv = model.ifft(jnp.concatenate([2 * (1j * k * f[:2] + 1j * l * f[2:4]),
                                          2 * (1j * k * f[2:4] + 1j * l * f[4:])]))
        duvh = model.fft(duv)
        return QGState(qh=1j * k * duvh[2:] - 1j * l * duvh[:2])


class BackscatterBiharmonic(AbstractQGClosure):
    """Biharmonic Smagorinsky dissipation with energy backscatter (pyqg's ``BackscatterBiharmonic``).

    ``dissipation = -lap(dx^2 nu lap^2 psi)`` with ``nu`` the Smagorinsky viscosity (constant ``smag_constant``);
    ``backscatter = -c_b lap^2 psi * <psi, dissipation> / <psi, lap^2 psi>`` with ``<a, b> = sum_i H_i mean(a_i b_i)``,
    so the backscatter returns the fraction ``c_b = back_constant`` of the energy the dissipation removes.

    Args:
        grid: the (low-resolution) model's grid (or the model).
        smag_constant: 0.08 by default; back_constant: 0.99 by default (pyqg's values).
    """

    grid: QGGrid = eqx.field(static=True)
    smag_constant: jax.Array
    back_constant: jax.Array
    eps: float = eqx.field(static=True, default=1e-32)

    def __init__(self, grid: Any, smag_constant=0.08, back_constant=0.99, eps: float = 1e-32):
        self.grid = as_grid(grid)
        self.smag_constant = jnp.asarray(smag_constant, dtype=float)
        self.back_constant = jnp.asarray(back_constant, dtype=float)
        self.eps = eps

    def closure_tendency(self, model: TwoLayerQG, state: QGState, t: Any, key: Any = None) -> QGState:
        qh = state.qh
        dt = jnp.real(qh).dtype
        _, _, wv2 = model.wavenumbers(dt)
        Sxx, Syy, Sxy, ph = _strain(model, qh)
        nu = _smagorinsky_viscosity(model.dx, Sxx, Syy, Sxy, jnp.asarray(self.smag_constant, dt))
        lap2ph = wv2**2 * ph
        psi_lap2 = model.ifft(jnp.concatenate([ph, lap2ph]))
        psi, lap2psi = psi_lap2[:2], psi_lap2[2:]
        dissipation_h = wv2 * model.fft(lap2psi * model.dx**2 * nu)
        dissipation = model.ifft(dissipation_h)
        Hi = jnp.asarray(model.Hi, dt)
        num = jnp.sum(Hi * jnp.mean(psi * dissipation, axis=(-2, -1)))
        den = jnp.sum(Hi * jnp.mean(psi * lap2psi, axis=(-2, -1))) + self.eps
        return QGState(qh=dissipation_h - jnp.asarray(self.back_constant, dt) * (num / den) * lap2ph)


class CNNClosure(AbstractQGClosure):
    """A neural network as a PV closure: ``dq/dt = out_scale * net(q / in_scale)`` (physical space).

    Args:
        net: a module mapping (2, ny, nx) to (2, ny, nx) (e.g. :class:`nemic.nn.conv.CircularCNN` with
            ``zero_mean=True``, so the domain integral of PV in each layer is conserved).
        in_scale: PV scale per layer (2,), s^-1 (e.g. the training data's standard deviation).
        out_scale: forcing scale per layer (2,), s^-2.
        grid: the grid it is meant for, or ``None`` (a convolutional network runs on any grid).

    It needs nothing from the model, so it is also a plain process (``tendency``).
    """

    net: Any
    in_scale: jax.Array
    out_scale: jax.Array
    grid: QGGrid | None = eqx.field(static=True)

    def __init__(self, net: Any, in_scale, out_scale, grid: Any = None):
        self.net = net
        self.in_scale = jnp.asarray(in_scale, dtype=float).reshape(2)
        self.out_scale = jnp.asarray(out_scale, dtype=float).reshape(2)
        self.grid = None if grid is None else as_grid(grid)

    def forcing(self, q):
        """The closure's PV forcing (2, ny, nx), s^-2, of physical PV ``q`` (2, ny, nx), s^-1."""
        dt = q.dtype
        x = q / jax.lax.stop_gradient(jnp.asarray(self.in_scale, dt))[:, None, None]
        y = self.net(x).astype(dt)
        return y * jax.lax.stop_gradient(jnp.asarray(self.out_scale, dt))[:, None, None]

    def tendency(self, state: QGState, t: Any, key: Any = None) -> QGState:
        return QGState.from_q(self.forcing(state.q))

    def closure_tendency(self, model: TwoLayerQG, state: QGState, t: Any, key: Any = None) -> QGState:
        return self.tendency(state, t, key)


#: the registry kind of :class:`CNNClosure` in weight files
CNN_CLOSURE_KIND = "QGCNNClosure"


def _cnn_closure_config(closure: CNNClosure) -> dict[str, Any]:
    """JSON hyperparameters that rebuild a :class:`CNNClosure`: its network's registry kind and config, the two
    scales (their exact values are also in the weights) and the grid, if any."""
    net = spec_of(closure.net)
    g = closure.grid
    return {"net_kind": net.kind, "net": net.config(closure.net),
            "in_scale": [float(x) for x in closure.in_scale], "out_scale": [float(x) for x in closure.out_scale],
            "grid": None if g is None else {"nx": g.nx, "ny": g.ny, "L": g.L, "W": g.W}}


def _build_cnn_closure(config: dict[str, Any], key: Any) -> CNNClosure:
    """A :class:`CNNClosure` skeleton from :func:`_cnn_closure_config`'s output (the network through its kind)."""
    net = module_spec(config["net_kind"]).build(dict(config["net"]), key)
    grid = config.get("grid")
    return CNNClosure(net, config["in_scale"], config["out_scale"], None if grid is None else QGGrid(**grid))


register_module(CNN_CLOSURE_KIND, CNNClosure, build=_build_cnn_closure, config=_cnn_closure_config)

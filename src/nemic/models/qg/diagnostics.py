"""Diagnostics of :class:`~nemic.models.qg.model.TwoLayerQG`: energy, enstrophy, spectra and the energy budget.

All quantities are per unit mass, layer-thickness weighted (weights ``H_i / H``), domain means:

* kinetic energy ``KE = sum_i (H_i/H) mean(|grad psi_i|^2) / 2`` (m^2 s^-2; pyqg-jax's ``total_ke``),
* available potential energy ``APE = (H1 F1 / H) mean((psi1 - psi2)^2) / 2`` (note ``H1 F1 = H2 F2``),
* enstrophy ``Z = sum_i (H_i/H) mean(q_i^2) / 2`` (s^-2).

The total energy satisfies ``E = KE + APE = -sum_i (H_i/H) mean(psi_i q_i) / 2`` and ``dE/dt = -sum_i (H_i/H)
mean(psi_i dq_i/dt)``, so the energy tendency of each term of the PV equation is its projection on ``-psi``. The
spectral energy budget (:func:`energy_budget`) splits dE/dt by wavenumber into the terms of pyqg's diagnostics
(Larichev & Held 1995, J. Phys. Oceanogr. 25, 2285, doi:10.1175/1520-0485(1995)025<2285:EAFAHT>2.0.CO;2;
Ross et al. 2023, section 3.2):

* ``KEflux``: transfer by advection of relative vorticity (sums to 0 over wavenumbers),
* ``APEflux``: transfer by advection of the stretching part of PV (sums to 0),
* ``APEgenspec``: generation of APE by the background shear (and beta, which contributes nothing),
* ``KEfrictionspec``: bottom drag (<= 0).

Their sum over wavenumbers equals dE/dt of the unfiltered tendency exactly; the exponential filter applied after
each step removes energy in addition (``filter_dissipation``).
"""

from __future__ import annotations

import jax.numpy as jnp

from nemic.models.qg import spectral as sp
from nemic.models.qg.model import QGState, TwoLayerQG


def _wH(model: TwoLayerQG, dtype):
    return jnp.asarray(model.Hi / model.H, dtype)


def _spec_sum(model: TwoLayerQG, spec):
    """Sum over the full spectrum of a quantity on the rfft2 grid (..., ny, nk)."""
    return jnp.sum(spec * jnp.asarray(sp.rfft_weights(model.nx), spec.dtype), axis=(-2, -1))


def kinetic_energy(model: TwoLayerQG, q) -> jnp.ndarray:
    """Kinetic energy (m^2 s^-2), a scalar, of PV ``q`` (2, ny, nx); layer-weighted domain mean."""
    u, v = model.velocities(model.invert(model.fft(q)))
    return jnp.sum(_wH(model, q.dtype) * jnp.mean(u**2 + v**2, axis=(-2, -1))) / 2


def potential_energy(model: TwoLayerQG, q) -> jnp.ndarray:
    """Available potential energy (m^2 s^-2), a scalar: ``(H1 F1 / H) mean((psi1 - psi2)^2) / 2``."""
    p = model.streamfunction(q)
    c = jnp.asarray(model.H1 * model.F1 / model.H, q.dtype)
    return c * jnp.mean((p[0] - p[1]) ** 2) / 2


def total_energy(model: TwoLayerQG, q) -> jnp.ndarray:
    """``KE + APE`` (m^2 s^-2), computed as ``-sum_i (H_i/H) mean(psi_i q_i) / 2``."""
    p = model.streamfunction(q)
    return -jnp.sum(_wH(model, q.dtype) * jnp.mean(p * q, axis=(-2, -1))) / 2


def enstrophy(model: TwoLayerQG, q) -> jnp.ndarray:
    """Potential enstrophy (s^-2), a scalar: ``sum_i (H_i/H) mean(q_i^2) / 2``."""
    return jnp.sum(_wH(model, q.dtype) * jnp.mean(q**2, axis=(-2, -1))) / 2


def layer_enstrophy(q) -> jnp.ndarray:
    """Enstrophy of each layer (2,), s^-2: ``mean(q_i^2) / 2``."""
    return jnp.mean(q**2, axis=(-2, -1)) / 2


def ke_spectrum_2d(model: TwoLayerQG, q):
    """Kinetic-energy density of each layer on the rfft2 grid (2, ny, nk): ``wv2 |ph|^2 / (2 M^2)``."""
    _, _, wv2 = model.wavenumbers(q.dtype)
    ph = model.invert(model.fft(q))
    return wv2 * jnp.abs(ph) ** 2 / (2 * float(model.M) ** 2)


def ke_spectrum(model: TwoLayerQG, q):
    """Isotropic KE spectrum of each layer: ``(kr (n,), E (2, n))`` in rad/m and m^3 s^-2 (``sum(E) dkr = KE``)."""
    return sp.isotropic_spectrum(ke_spectrum_2d(model, q), model.nx, model.ny, model.L, model.W)


def enstrophy_spectrum(model: TwoLayerQG, q):
    """Isotropic enstrophy spectrum of each layer: ``(kr, Z (2, n))`` with ``sum(Z) dkr`` = layer enstrophy."""
    return sp.isotropic_spectrum(jnp.abs(model.fft(q)) ** 2 / (2 * float(model.M) ** 2), model.nx, model.ny, model.L,
                                 model.W)


def _energy_projection(model: TwoLayerQG, ph, th):
    """Energy tendency density on the rfft2 grid (ny, nk) of a PV tendency ``th`` (2, ny, nk)."""
    w = _wH(model, jnp.real(ph).dtype)[:, None, None]
    return -jnp.sum(w * jnp.real(jnp.conj(ph) * th), axis=0) / float(model.M) ** 2


def _isotropic(model: TwoLayerQG, terms: dict) -> dict:
    """Isotropic spectra of rfft2-grid densities (with their wavenumbers ``kr``)."""
    out = {}
    for name, val in terms.items():
        kr, out[name] = sp.isotropic_spectrum(val, model.nx, model.ny, model.L, model.W)
    out["kr"] = jnp.asarray(kr)
    return out


def energy_budget(model: TwoLayerQG, q, isotropic: bool = True) -> dict:
    """Spectral energy budget of PV ``q`` (2, ny, nx): rates in m^2 s^-3 per mode (or per rad/m if isotropic).

    Returns a dict with ``KEflux``, ``APEflux``, ``APEgenspec``, ``KEfrictionspec`` (each (ny, nk) on the rfft2
    grid, or (n,) isotropic with ``kr``). With ``isotropic=False``, ``sum(w * term)`` (weights of
    :func:`spectral.rfft_weights`) is the term's contribution to dE/dt.
    """
    dt = q.dtype
    k, _, wv2 = model.wavenumbers(dt)
    qh = model.fft(q)
    ph = model.invert(qh)
    u, v = model.velocities(ph)
    xi = model.ifft(-wv2 * ph)  # relative vorticity
    ke_t = -model.flux_divergence_hat(xi, u, v)
    ape_t = -model.flux_divergence_hat(q - xi, u, v)
    Ubg = jnp.asarray(model.Ubg, dt)[:, None, None]
    Qy = jnp.asarray(model.Qy, dt)[:, None, None]
    bg_t = -1j * k * (Ubg * qh + Qy * ph)
    drag_t = jnp.zeros_like(qh).at[1].set(jnp.asarray(model.rek, dt) * wv2 * ph[1])
    out = {
        "KEflux": _energy_projection(model, ph, ke_t),
        "APEflux": _energy_projection(model, ph, ape_t),
        "APEgenspec": _energy_projection(model, ph, bg_t),
        "KEfrictionspec": _energy_projection(model, ph, drag_t),
    }
    return _isotropic(model, out) if isotropic else out


def parameterization_energy_flux(model: TwoLayerQG, q, dq, isotropic: bool = True) -> dict:
    """Energy tendency of an added PV tendency ``dq`` (2, ny, nx) (a closure), split into KE and APE parts.

    With ``dpsi = A dq`` the streamfunction tendency (``A = (S - kappa^2 I)^-1``, ``S`` the stretching matrix),
    ``paramspec_KEflux = sum_i (H_i/H) kappa^2 Re(conj(psi_i) dpsi_i) / M^2`` and ``paramspec_APEflux =
    -sum_i (H_i/H) Re(conj(psi_i) (S dpsi)_i) / M^2``; their sum is the projection of ``dq`` on ``-psi`` (the
    closure's contribution to dE/dt). These are the terms pyqg adds to ``KEflux`` and ``APEflux`` when comparing
    parameterized and unparameterized runs (Ross et al. 2023, section 3.3). Units and layout as
    :func:`energy_budget`; returns ``{"KEflux": ..., "APEflux": ...}`` (+ ``kr`` if isotropic).
    """
    dt = q.dtype
    _, _, wv2 = model.wavenumbers(dt)
    ph = model.invert(model.fft(q))
    dph = model.invert(model.fft(dq))
    F1, F2 = jnp.asarray(model.F1, dt), jnp.asarray(model.F2, dt)
    s_dph = jnp.stack([F1 * (dph[1] - dph[0]), F2 * (dph[0] - dph[1])])
    w = _wH(model, dt)[:, None, None]
    out = {
        "KEflux": jnp.sum(w * wv2 * jnp.real(jnp.conj(ph) * dph), axis=0) / float(model.M) ** 2,
        "APEflux": -jnp.sum(w * jnp.real(jnp.conj(ph) * s_dph), axis=0) / float(model.M) ** 2,
    }
    return _isotropic(model, out) if isotropic else out


def energy_budget_totals(model: TwoLayerQG, q) -> dict:
    """Domain totals of the budget terms (m^2 s^-3): each term of :func:`energy_budget` summed over all modes."""
    b = energy_budget(model, q, isotropic=False)
    return {name: _spec_sum(model, val) for name, val in b.items()}


def filter_dissipation(model: TwoLayerQG, q, dt: float):
    """Energy removed by one application of the exponential filter, divided by ``dt``: ``(E(Fq) - E(q)) / dt``."""
    return (total_energy(model, model.spectral_filter(QGState.from_q(q)).q) - total_energy(model, q)) / dt


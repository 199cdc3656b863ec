"""Fidelity to pyqg's equations (via pyqg-jax, an independent implementation) and the diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.rollout import rollout
from nemic.models.qg import QGState, TwoLayerQG, get_config
from nemic.models.qg import diagnostics as dg
from nemic.models.qg import spectral as sp

pyqg_jax = pytest.importorskip("pyqg_jax")


def smooth_random(model, key, rms=3e-6, scale=5e4):
    q = jax.random.normal(key, (2, model.ny, model.nx))
    _, _, wv2 = model.wavenumbers()
    q = model.ifft(model.fft(q) * jnp.exp(-wv2 * scale**2 / 2))
    return q / jnp.std(q) * rms


def pyqg_jax_model(m: TwoLayerQG):
    return pyqg_jax.qg_model.QGModel(
        nx=m.nx, L=m.L, rek=float(m.rek), beta=float(m.beta), rd=float(m.rd), delta=float(m.delta),
        H1=float(m.H1), U1=float(m.U1), U2=float(m.U2), filterfac=float(m.filterfac),
        precision=pyqg_jax.state.Precision.DOUBLE)


@pytest.mark.parametrize("cfg", ["eddy", "jet"])
def test_trajectory_matches_pyqg_jax_to_round_off(cfg):
    """From the same initial PV, 100 AB3 steps (dt = 1 h) at nx = 64 agree with pyqg-jax to ~1e-14 relative,
    while the nonlinear dynamics change the field by O(1) over the same time."""
    m = get_config(cfg, nx=64)
    q0 = smooth_random(m, jax.random.key(0))
    pm = pyqg_jax_model(m)
    stepped = pyqg_jax.steppers.SteppedModel(pm, pyqg_jax.steppers.AB3Stepper(dt=3600.0))
    s0 = stepped.initialize_stepper_state(pm.create_initial_state(jax.random.key(1)).update(q=q0))

    def body(c, _):
        c = stepped.step_model(c)
        return c, c.state.q

    q_ref = jax.jit(lambda s: jax.lax.scan(body, s, None, length=100)[1])(s0)
    tr = jax.jit(lambda q: rollout(m, m.default_stepper(), QGState.from_q(q), dt=3600.0, n_steps=100))(q0)
    q = tr.states.q[1:]
    scale = jnp.max(jnp.abs(q_ref), axis=(1, 2, 3))
    rel = np.asarray(jnp.max(jnp.abs(q - q_ref), axis=(1, 2, 3)) / scale)
    assert rel.max() < 1e-12, rel.max()
    change = float(jnp.max(jnp.abs(q_ref[-1] - q0)) / jnp.max(jnp.abs(q0)))
    assert change > 0.3  # the comparison is not trivial


def test_kinetic_energy_matches_pyqg_jax_and_spectra_satisfy_parseval():
    m = get_config("eddy", nx=32)
    q = smooth_random(m, jax.random.key(2))
    pm = pyqg_jax_model(m)
    full = pm.get_full_state(pm.create_initial_state(jax.random.key(3)).update(q=q))
    ke_ref = pyqg_jax.diagnostics.total_ke(full, pm.get_grid())
    np.testing.assert_allclose(dg.kinetic_energy(m, q), ke_ref, rtol=1e-12)
    # energy identity: KE + APE = -sum (H_i/H) mean(psi q) / 2
    np.testing.assert_allclose(dg.kinetic_energy(m, q) + dg.potential_energy(m, q), dg.total_energy(m, q),
                               rtol=1e-12)
    # isotropic spectrum: shells sum to the energy of the modes inside the largest full circle
    kr, E = dg.ke_spectrum(m, q)
    _, _, wv2 = m.wavenumbers()
    inside = np.sqrt(wv2) < kr[-1] + (kr[1] - kr[0]) / 2
    direct = np.sum(np.asarray(dg.ke_spectrum_2d(m, q)) * inside * sp.rfft_weights(m.nx), axis=(-2, -1))
    np.testing.assert_allclose(np.sum(E, axis=-1) * (kr[1] - kr[0]), direct, rtol=1e-12)
    # a single Fourier mode lands in its own shell
    X, Y = np.meshgrid(m.x, m.y)
    k0 = 2 * np.pi / m.L * 5
    f = np.cos(k0 * X)
    kr, S = sp.isotropic_spectrum(jnp.abs(m.fft(jnp.asarray(f))) ** 2 / m.M**2, m.nx, m.ny, m.L, m.W)
    j = int(np.argmax(np.asarray(S)))
    assert kr[j] - (kr[1] - kr[0]) / 2 <= k0 < kr[j] + (kr[1] - kr[0]) / 2
    np.testing.assert_allclose(float(np.sum(S)) * (kr[1] - kr[0]), 0.5, rtol=1e-12)  # mean(cos^2) = 1/2


@pytest.mark.parametrize("cfg", ["eddy", "jet"])
def test_energy_budget_closes(cfg):
    m = get_config(cfg, nx=32)
    q = smooth_random(m, jax.random.key(4))
    tend = m.tendency(QGState.from_q(q), 0.0).q
    _, dEdt = jax.jvp(lambda x: dg.total_energy(m, x), (q,), (tend,))  # exact dE/dt of the tendency
    tot = {k: float(v) for k, v in dg.energy_budget_totals(m, q).items()}
    budget = sum(tot.values())
    scale = sum(abs(v) for v in tot.values())
    assert abs(budget - float(dEdt)) < 1e-12 * scale
    assert abs(tot["KEflux"]) < 1e-12 * scale and abs(tot["APEflux"]) < 1e-12 * scale  # pure transfers
    assert tot["KEfrictionspec"] < 0
    b = dg.energy_budget(m, q)
    assert np.all(np.asarray(b["KEfrictionspec"]) <= 0) and b["KEflux"].shape == b["kr"].shape
    # the filter only removes energy
    assert float(dg.filter_dissipation(m, q, 3600.0)) <= 0


def test_parameterization_energy_flux_splits_dKE_and_dAPE():
    """The KE and APE parts of a closure's energy tendency equal d(KE)/dt and d(APE)/dt along it (by jax.jvp)."""
    from nemic.processes.qg_closures import BackscatterBiharmonic

    m = get_config("eddy", nx=32)
    q = smooth_random(m, jax.random.key(9))
    dq = BackscatterBiharmonic(m.grid).closure_tendency(m, QGState.from_q(q), 0.0).q
    # band-limit q and dq: velocities from irfft2 drop the Nyquist modes' derivatives, Parseval sums do not
    mask = sp.dealias_mask(m.nx, m.ny)
    q, dq = m.ifft(m.fft(q) * mask), m.ifft(m.fft(dq) * mask)
    flux = dg.parameterization_energy_flux(m, q, dq, isotropic=False)
    w = jnp.asarray(sp.rfft_weights(m.nx))
    _, dke = jax.jvp(lambda x: dg.kinetic_energy(m, x), (q,), (dq,))
    _, dape = jax.jvp(lambda x: dg.potential_energy(m, x), (q,), (dq,))
    np.testing.assert_allclose(float(jnp.sum(w * flux["KEflux"])), float(dke), rtol=1e-10)
    np.testing.assert_allclose(float(jnp.sum(w * flux["APEflux"])), float(dape), rtol=1e-10)
    assert abs(float(dape)) > 1e-3 * abs(float(dke))  # both parts are exercised
    iso = dg.parameterization_energy_flux(m, q, dq)
    np.testing.assert_allclose(float(jnp.sum(iso["KEflux"])) * float(iso["kr"][1] - iso["kr"][0]), float(dke),
                               rtol=1e-10)

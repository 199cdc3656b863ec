"""Two-layer QG model: analytic checks (derivatives, inversion, baroclinic growth rates), conservation,
gradients, transformations and bad input."""

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nemic.core.errors import ConfigError, DataError
from nemic.core.rollout import rollout, simulate
from nemic.core.steppers import RK4
from nemic.models.qg import QGFields, QGState, TwoLayerQG, get_config
from nemic.models.qg import diagnostics as dg
from nemic.models.qg import spectral as sp


def smooth_random(model, key, rms=3e-6, scale=5e4):
    """A random PV field with most of its variance at scales larger than ``scale`` (m)."""
    q = jax.random.normal(key, (2, model.ny, model.nx))
    _, _, wv2 = model.wavenumbers()
    q = model.ifft(model.fft(q) * jnp.exp(-wv2 * scale**2 / 2))
    return q / jnp.std(q) * rms


def band_limited(model, key, rms=3e-6):
    """A random PV field with all its modes inside the 2/3-rule mask (no aliasing in quadratic products)."""
    q = jax.random.normal(key, (2, model.ny, model.nx))
    q = model.ifft(model.fft(q) * sp.dealias_mask(model.nx, model.ny))
    return q / jnp.std(q) * rms


# ------------------------------------------------------------------ spectral derivatives and inversion
def test_spectral_derivatives_match_analytic_fields():
    L, W, nx, ny = 2.0e6, 1.0e6, 32, 24
    x = (np.arange(nx) + 0.5) * L / nx
    y = (np.arange(ny) + 0.5) * W / ny
    X, Y = np.meshgrid(x, y)
    a, b = 2 * np.pi / L, 2 * np.pi / W
    f = np.exp(np.sin(a * X)) * np.cos(2 * b * Y) + np.sin(3 * a * X + b * Y)
    fx = a * np.cos(a * X) * np.exp(np.sin(a * X)) * np.cos(2 * b * Y) + 3 * a * np.cos(3 * a * X + b * Y)
    fy = -2 * b * np.exp(np.sin(a * X)) * np.sin(2 * b * Y) + b * np.cos(3 * a * X + b * Y)
    e = np.exp(np.sin(a * X))
    fxx = a**2 * (np.cos(a * X) ** 2 - np.sin(a * X)) * e * np.cos(2 * b * Y) - 9 * a**2 * np.sin(3 * a * X + b * Y)
    fyy = -4 * b**2 * e * np.cos(2 * b * Y) - b**2 * np.sin(3 * a * X + b * Y)
    assert np.max(np.abs(sp.ddx(jnp.asarray(f), L) - fx)) / np.max(np.abs(fx)) < 1e-9
    assert np.max(np.abs(sp.ddy(jnp.asarray(f), W) - fy)) / np.max(np.abs(fy)) < 1e-12
    lap = sp.laplacian(jnp.asarray(f), L, W)
    assert np.max(np.abs(lap - fxx - fyy)) / np.max(np.abs(fxx + fyy)) < 1e-8


def test_pv_inversion_and_velocities_match_analytic_streamfunction():
    m = TwoLayerQG(nx=32, ny=16, L=1e6, W=5e5)
    X, Y = np.meshgrid(m.x, m.y)
    a, b = 2 * np.pi / m.L * 3, 2 * np.pi / m.W * 2
    psi = np.stack([np.sin(a * X) * np.cos(b * Y), 0.3 * np.cos(a * X + b * Y)])
    F1, F2 = float(m.F1), float(m.F2)
    lap = -(a**2 + b**2) * psi
    q = np.stack([lap[0] + F1 * (psi[1] - psi[0]), lap[1] + F2 * (psi[0] - psi[1])])
    np.testing.assert_allclose(m.streamfunction(jnp.asarray(q)), psi, atol=1e-12 * np.abs(psi).max())
    u, v = m.velocities(m.invert(m.fft(jnp.asarray(q))))
    u_ex = np.stack([b * np.sin(a * X) * np.sin(b * Y), 0.3 * b * np.sin(a * X + b * Y)])
    v_ex = np.stack([a * np.cos(a * X) * np.cos(b * Y), -0.3 * a * np.sin(a * X + b * Y)])
    np.testing.assert_allclose(u, u_ex, atol=1e-12 * np.abs(u_ex).max())
    np.testing.assert_allclose(v, v_ex, atol=1e-12 * np.abs(v_ex).max())


# ------------------------------------------------------------------ linear baroclinic instability
def analytic_modes(m, kx, ly):
    """Phase speeds c (2,) and upper/lower streamfunction ratios of the inviscid two-layer problem (Vallis 2017,
    sec. 9.6): K c^2 + a1 c + a0 = 0 with K = kappa^2 (kappa^2 + F1 + F2), from the determinant of
    (U_i - c) qh_i + Qy_i ph_i = 0."""
    F1, F2, U1, U2, beta = (float(v) for v in (m.F1, m.F2, m.U1, m.U2, m.beta))
    Qy1, Qy2 = beta + F1 * (U1 - U2), beta - F2 * (U1 - U2)
    k2 = kx**2 + ly**2
    K = k2 * (k2 + F1 + F2)
    a1 = -K * (U1 + U2) + (k2 + F1) * Qy2 + (k2 + F2) * Qy1
    a0 = K * U1 * U2 - (k2 + F1) * Qy2 * U1 - (k2 + F2) * Qy1 * U2 + Qy1 * Qy2
    c = np.roots([K, a1, a0]).astype(complex)
    ratio = ((U1 - c) * (k2 + F1) - Qy1) / ((U1 - c) * F1)  # psi2 / psi1
    return c, ratio


def analytic_growth_rate(m, kx, ly):
    """Largest growth rate (s^-1), ``max(kx Im c)``."""
    return float(np.max(kx * np.imag(analytic_modes(m, kx, ly)[0])))


def linear_operators(m, il, ik):
    """2x2 complex matrices A (n, 2, 2) with d qh/dt = A qh at modes (il[n], ik[n]), by forward-mode AD of the
    tendency about the state of rest (where the quadratic advection term has zero derivative)."""
    def f(c, i, j):
        spec = jnp.zeros((2, m.ny, m.nk), complex).at[:, i, j].set(c[:2] + 1j * c[2:])
        return m.tendency_hat(m.ifft(spec))[:, i, j]

    J = jax.jit(jax.vmap(jax.jacfwd(f), in_axes=(None, 0, 0)))(jnp.zeros(4), jnp.asarray(il), jnp.asarray(ik))
    return np.asarray(J[:, :, :2])  # columns d/dRe(c_j): the map is complex-linear for 0 < k < nx/2


@pytest.mark.parametrize("cfg", ["eddy", "jet"])
def test_linear_growth_rate_matches_two_layer_dispersion_relation(cfg):
    m = get_config(cfg, nx=32, rek=0.0)
    k, l, _ = m.wavenumbers()
    il, ik = np.meshgrid([0, 1, 3, 30], np.arange(1, 16))
    il, ik = il.ravel(), ik.ravel()
    A = linear_operators(m, il, ik)
    sigma = np.max(np.linalg.eigvals(A).real, axis=-1)
    expect = np.array([analytic_growth_rate(m, k[a, b], l[a, b]) for a, b in zip(il, ik)])
    np.testing.assert_allclose(sigma, expect, rtol=1e-9, atol=1e-15)
    assert np.sum(expect > 0) >= 3  # unstable modes were among those compared


def test_tiny_amplitude_run_grows_at_the_analytic_rate():
    """End to end (AB3 + filter): the analytic unstable normal mode, at tiny amplitude, grows at its rate."""
    m = get_config("eddy", nx=32, rek=0.0)
    k, _, _ = m.wavenumbers()
    ik = 7
    kx = k[0, ik]
    c, ratio = analytic_modes(m, kx, 0.0)
    j = int(np.argmax(c.imag))
    sigma = kx * c.imag[j]
    F1, F2 = float(m.F1), float(m.F2)
    ph = np.array([1.0, ratio[j]])
    qh = np.array([-(kx**2 + F1) * ph[0] + F1 * ph[1], F2 * ph[0] - (kx**2 + F2) * ph[1]])
    X, _ = np.meshgrid(m.x, m.y)
    q0 = 1e-14 * np.real(qh[:, None, None] * np.exp(1j * kx * X)[None])
    dt = 3600.0
    traj = rollout(m, m.default_stepper(), QGState.from_q(jnp.asarray(q0)), dt=dt, n_steps=1200, save_every=100)
    amp = np.sqrt(np.asarray(jnp.mean(traj.states.q**2, axis=(1, 2, 3))))
    fitted = np.polyfit(np.asarray(traj.t), np.log(amp), 1)[0]
    assert sigma > 1e-7
    assert fitted == pytest.approx(sigma, rel=1e-3)
    # energy budget of the normal mode: dE/dt = 2 sigma E, all of it APE generation by the background shear
    q = jnp.asarray(q0)
    tot = dg.energy_budget_totals(m, q)
    E = float(dg.total_energy(m, q))
    assert float(tot["APEgenspec"]) == pytest.approx(2 * sigma * E, rel=1e-9)
    assert abs(float(tot["KEflux"])) + abs(float(tot["APEflux"])) < 1e-9 * float(tot["APEgenspec"])


# ------------------------------------------------------------------ conservation by the Jacobian
def rates(m, q):
    dq = m.tendency(QGState.from_q(q), 0.0).q
    p = m.streamfunction(q)
    w = (m.Hi / m.H)[:, None, None]
    dE = -jnp.sum(w * jnp.mean(p * dq, axis=(-2, -1), keepdims=True))
    dZ = jnp.mean(q * dq, axis=(-2, -1))
    scaleE = jnp.sum(w * jnp.mean(jnp.abs(p * dq), axis=(-2, -1), keepdims=True))
    scaleZ = jnp.mean(jnp.abs(q * dq), axis=(-2, -1))
    return float(jnp.abs(dE) / scaleE), np.asarray(jnp.abs(dZ) / scaleZ)


def test_jacobian_conserves_energy_and_enstrophy():
    m = TwoLayerQG(nx=32, U1=0.0, U2=0.0, beta=0.0, rek=0.0)
    # band-limited fields: both invariants conserved by the discrete Jacobian to round-off
    rE, rZ = rates(m, band_limited(m, jax.random.key(1)))
    assert rE < 1e-13 and np.all(rZ < 1e-13)
    # any field: energy still conserved (spectral derivatives are skew-adjoint), enstrophy not (aliasing)...
    rough = 3e-6 * jax.random.normal(jax.random.key(2), (2, 32, 32))
    rE, rZ = rates(m, rough)
    assert rE < 1e-13 and np.all(rZ > 1e-4)
    # ...unless the products are dealiased with the 2/3 rule
    rE, rZ = rates(TwoLayerQG(nx=32, U1=0.0, U2=0.0, beta=0.0, rek=0.0, dealias=True), rough)
    assert rE < 1e-13 and np.all(rZ < 1e-13)


def test_inviscid_run_conserves_invariants_with_fourth_order_drift():
    m = TwoLayerQG(nx=32, U1=0.0, U2=0.0, beta=0.0, rek=0.0, dealias=True)
    q0 = band_limited(m, jax.random.key(3), rms=2e-5)
    drifts = []
    for dt in (7200.0, 3600.0):
        n = int(86400 * 10 / dt)
        tr = rollout(m, RK4(), QGState.from_q(q0), dt=dt, n_steps=n, save_every=n)
        E = [float(dg.total_energy(m, tr.states.q[i])) for i in (0, -1)]
        Z = [float(dg.enstrophy(m, tr.states.q[i])) for i in (0, -1)]
        drifts.append((abs(E[1] / E[0] - 1), abs(Z[1] / Z[0] - 1)))
    assert max(drifts[1]) < 1e-5
    for i in (0, 1):  # the drift is RK4's time error only (the spatial discretisation conserves exactly)
        assert math.log2(drifts[0][i] / drifts[1][i]) > 3.5


# ------------------------------------------------------------------ gradients and transformations
def test_check_grads_short_rollout():
    m0 = get_config("eddy", nx=16)
    q0 = smooth_random(m0, jax.random.key(4), scale=1e5)

    def loss(a, b, c):
        m = eqx.tree_at(lambda mm: (mm.rek, mm.beta), m0, (a * 5.787e-7, b * 1.5e-11))
        tr = rollout(m, m.default_stepper(), QGState.from_q(c * q0), dt=3600.0, n_steps=6, save_every=6)
        return jnp.mean(tr.final.q**2) / 1e-11

    check_grads(loss, (1.0, 1.0, 1.0), order=1, modes=["rev"], eps=1e-4, atol=1e-6, rtol=1e-5)


def test_jit_vmap_grad_and_checkpointed_gradient():
    m = get_config("jet", nx=16)
    keys = jax.random.split(jax.random.key(5), 3)
    q0 = jax.vmap(lambda k: smooth_random(m, k, scale=1e5))(keys)

    run = eqx.filter_jit(lambda mm, q, ck: rollout(mm, mm.default_stepper(), QGState.from_q(q), dt=3600.0, n_steps=9,
                                                      save_every=9, checkpoint=ck).final.q)
    ens = jax.vmap(lambda q: run(m, q, False))(q0)
    for i in range(3):
        np.testing.assert_allclose(ens[i], run(m, q0[i], False), rtol=1e-12, atol=1e-20)

    def loss(mm, ck):
        return jnp.sum(run(mm, q0[0], ck) ** 2) * 1e10

    g = eqx.filter_grad(loss)(m, False)
    g_ck = eqx.filter_grad(loss)(m, True)
    assert float(g.U1) != 0.0 and float(g.rek) != 0.0
    for name in ("U1", "rek", "beta", "delta", "rd", "filterfac"):
        np.testing.assert_allclose(getattr(g_ck, name), getattr(g, name), rtol=1e-10)


class _PhysicalQGState(eqx.Module):
    q: jax.Array


class _PhysicalStateScheme(eqx.Module):
    """The previous scheme: PV in physical space, pyqg's AB3 + filter built from generic steppers (round 1)."""

    model: TwoLayerQG

    def tendency(self, state, t, key=None):
        m = self.model
        qh = m.fft(state.q)
        out = m.tendency(QGState(qh=qh), t)
        return _PhysicalQGState(q=m.ifft(out.qh))


def test_generic_filtered_ab3_on_the_spectral_state_reproduces_the_physical_state_scheme():
    """model.default_stepper() (generic Filtered(AB3) on qh) equals pyqg's scheme stepped in physical space."""
    from nemic.core.process import FunctionProcess
    from nemic.core.steppers import AB3, Filtered
    from nemic.processes.qg_closures import Smagorinsky

    m = get_config("eddy", nx=32)
    q0 = smooth_random(m, jax.random.key(8), scale=1e5)
    assert isinstance(m.default_stepper(), Filtered) and isinstance(m.default_stepper().stepper, AB3)
    old = Filtered(AB3(startup="euler"), lambda s: _PhysicalQGState(q=m.ifft(m.filtr * m.fft(s.q))))
    for proc in (m, m + Smagorinsky(m.grid, 0.15)):
        a = rollout(proc, proc.default_stepper(), QGState.from_q(q0), dt=3600.0, n_steps=300,
                    save_every=300).final.q
        ref = FunctionProcess(lambda s, t, p=proc: _PhysicalStateScheme(p).tendency(s, t))
        b = rollout(ref, old, _PhysicalQGState(q=q0), dt=3600.0, n_steps=300, save_every=300).final.q
        assert float(jnp.max(jnp.abs(b - q0)) / jnp.max(jnp.abs(q0))) > 0.1  # the flow has changed
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11 * float(jnp.max(jnp.abs(b))))


def test_spectral_state_round_trips_and_filter_keeps_states_real():
    m = get_config("eddy", nx=16)
    q0 = smooth_random(m, jax.random.key(9), scale=1e5)
    s = QGState.from_q(q0)
    np.testing.assert_allclose(s.q, q0, atol=1e-12 * float(jnp.max(jnp.abs(q0))))
    # anti-Hermitian parts of the self-conjugate columns (which irfft2 drops) are removed by the step filter
    junk = s.qh.at[:, 3, 0].add(1j * 1e-6).at[:, 5, -1].add(2e-6)
    f = m.spectral_filter(QGState(qh=junk))
    np.testing.assert_allclose(f.qh, m.fft(m.ifft(m.filtr * junk)), atol=1e-12 * float(jnp.max(jnp.abs(junk))))
    assert float(jnp.max(jnp.abs(f.qh - m.filtr * junk))) > 1e-7  # the junk was there and is gone


def test_float32_runs_in_float32_and_tracks_float64():
    m = get_config("eddy", nx=32)
    q0 = smooth_random(m, jax.random.key(6))
    tr64 = rollout(m, m.default_stepper(), QGState.from_q(q0), dt=3600.0, n_steps=50, save_every=50)
    tr32 = rollout(m, m.default_stepper(), QGState.from_q(q0.astype(jnp.float32)), dt=3600.0, n_steps=50, save_every=50)
    assert tr32.final.q.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(tr32.final.q - tr64.final.q)) / jnp.max(jnp.abs(tr64.final.q)))
    assert err < 1e-4


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("nx", [63, 6, 0, 64.0])
def test_bad_resolution_is_rejected(nx):
    with pytest.raises(ConfigError, match="nx must be an even integer >= 8"):
        TwoLayerQG(nx=nx)


def test_bad_parameters_and_config_names():
    with pytest.raises(ConfigError, match="unknown QG configuration 'edy'"):
        get_config("edy")
    with pytest.raises(ConfigError, match="rd must be > 0"):
        TwoLayerQG(nx=16, rd=-1.0)
    with pytest.raises(ConfigError, match="ny must be an even integer"):
        TwoLayerQG(nx=16, ny=15)


def test_nan_and_wrong_shape_in_initial_pv():
    m = TwoLayerQG(nx=16)
    q = np.zeros((2, 16, 16))
    q[1, 3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        m.initial_state(q=q)
    with pytest.raises(DataError, match="NaN"):
        simulate(m, None, QGState.from_q(jnp.asarray(q)), dt=3600.0, n_steps=2)
    with pytest.raises(DataError, match=r"shape \(2, 16, 16\)"):
        m.initial_state(q=np.zeros((16, 16)))
    with pytest.raises(DataError, match=r"complex with shape \(2, 16, 9\)"):
        simulate(m, None, QGState(qh=jnp.zeros((2, 16, 16))), dt=3600.0, n_steps=2)
    with pytest.raises(DataError, match="steps a QGState"):
        simulate(m, None, QGFields(q=jnp.zeros((2, 16, 16))), dt=3600.0, n_steps=2)
    with pytest.raises(ConfigError, match="needs a jax.random key"):
        m.initial_state()


def test_cfl_violation_warns_with_the_cfl_number():
    m = get_config("eddy", nx=64)
    s = QGState.from_q(smooth_random(m, jax.random.key(7)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.check_timestep(s, 3600.0)  # the benchmark's timestep is fine
    cfl = float(m.cfl(s, 1e5))
    with pytest.warns(RuntimeWarning, match=f"CFL number {cfl:.3g}"):
        m.check_timestep(s, 1e5)

"""QG closures against pyqg-jax's parameterizations, energy properties, and the circular CNN."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.rollout import rollout
from nemic.models.qg import QGState, get_config
from nemic.models.qg import diagnostics as dg
from nemic.nn.conv import CircularCNN
from nemic.processes.qg_closures import BackscatterBiharmonic, CNNClosure, Smagorinsky

pyqg_jax = pytest.importorskip("pyqg_jax")


def field(m, key, rms=3e-6, scale=3e4):
    q = jax.random.normal(key, (2, m.ny, m.nx))
    _, _, wv2 = m.wavenumbers()
    q = m.ifft(m.fft(q) * jnp.exp(-wv2 * scale**2 / 2))
    return q / jnp.std(q) * rms


def pyqg_param_tendency(m, q, module, **kw):
    pm = pyqg_jax.qg_model.QGModel(nx=m.nx, precision=pyqg_jax.state.Precision.DOUBLE)
    st = pm.create_initial_state(jax.random.key(0)).update(q=q)
    upd, _ = module.param_func(st, None, pm, **kw)
    return pm.get_updates(st), upd


@pytest.mark.parametrize("name", ["smagorinsky", "backscatter"])
def test_closures_match_pyqg_jax(name):
    m = get_config("eddy", nx=32)
    q = field(m, jax.random.key(1))
    if name == "smagorinsky":
        base, full = pyqg_param_tendency(m, q, pyqg_jax.parameterizations.smagorinsky, constant=0.1)
        ours = Smagorinsky(m, 0.1)
    else:
        base, full = pyqg_param_tendency(m, q, pyqg_jax.parameterizations.backscatterbiharmonic,
                                         smag_constant=0.08, back_constant=0.99)
        ours = BackscatterBiharmonic(m)
    ref = np.fft.irfft2(np.asarray(full.qh - base.qh), s=(m.ny, m.nx))
    got = ours.closure_tendency(m, QGState.from_q(q), 0.0).q
    np.testing.assert_allclose(got, ref, atol=1e-10 * np.abs(ref).max())


def test_energy_properties_of_the_closures():
    m = get_config("eddy", nx=32)
    q = field(m, jax.random.key(2))
    p = m.streamfunction(q)
    w = (m.Hi / m.H)[:, None, None]

    def dEdt(proc):
        return float(-jnp.sum(w * jnp.mean(p * proc.closure_tendency(m, QGState.from_q(q), 0.0).q, axis=(-2, -1), keepdims=True)))

    assert dEdt(Smagorinsky(m)) < 0
    bb = BackscatterBiharmonic(m, back_constant=0.0)
    diss = dEdt(bb)
    assert diss < 0
    # with backscatter the net energy change is (1 - c_b) times the dissipation
    np.testing.assert_allclose(dEdt(BackscatterBiharmonic(m, back_constant=0.99)), 0.01 * diss, rtol=1e-8)


def test_circular_cnn_is_translation_equivariant_and_zero_mean():
    net = CircularCNN(2, 2, widths=(8, 8), kernel_sizes=(5, 3, 3), key=jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (2, 16, 16))
    y = net(x)
    np.testing.assert_allclose(jnp.mean(y, axis=(-2, -1)), 0.0, atol=1e-12)
    shifted = net(jnp.roll(x, (3, -5), axis=(-2, -1)))
    np.testing.assert_allclose(shifted, jnp.roll(y, (3, -5), axis=(-2, -1)), atol=1e-12)
    # vmap over a batch agrees with single calls, jit agrees, gradients reach every layer
    xb = jnp.stack([x, 2 * x])
    np.testing.assert_allclose(jax.jit(jax.vmap(net))(xb)[1], net(2 * x), atol=1e-12)
    g = eqx.filter_grad(lambda n: jnp.sum(n(x) ** 2))(net)
    assert all(float(jnp.max(jnp.abs(layer.conv.weight))) > 0 for layer in g.layers)


def test_circular_conv_matches_scipy_periodic_correlation():
    """Independent reference: sum over input channels of scipy.ndimage.correlate(mode="wrap") plus the bias."""
    from scipy import ndimage

    from nemic.nn.conv import CircularConv2d

    conv = CircularConv2d(3, 2, 5, key=jax.random.key(7))
    x = np.asarray(jax.random.normal(jax.random.key(8), (3, 12, 10)))
    w, b = np.asarray(conv.conv.weight), np.asarray(conv.conv.bias).reshape(-1)
    ref = np.stack([sum(ndimage.correlate(x[c], w[o, c], mode="wrap") for c in range(3)) + b[o] for o in range(2)])
    np.testing.assert_allclose(conv(jnp.asarray(x)), ref, rtol=1e-12, atol=1e-12)
    # channels-last application and a batch of inputs give the same numbers
    np.testing.assert_allclose(jnp.moveaxis(conv.apply_hwc(jnp.moveaxis(jnp.stack([x, x]), 1, -1)), -1, 1)[1],
                               ref, rtol=1e-12, atol=1e-12)


def test_circular_conv_gradients_match_autodiff_of_the_plain_convolution():
    """The custom backward pass (patches x matrix) equals JAX's derivative of the convolution, and check_grads."""
    from jax.test_util import check_grads

    from nemic.nn.conv import _periodic_conv, _periodic_conv_nhwc

    kx, kw, kb = jax.random.split(jax.random.key(9), 3)
    x = jax.random.normal(kx, (2, 9, 8, 3))
    w = jax.random.normal(kw, (4, 3, 3, 3))
    b = jax.random.normal(kb, (4,))
    ct = jnp.cos(jnp.arange(2 * 9 * 8 * 4).reshape(2, 9, 8, 4))

    def loss(f):
        return lambda *a: jnp.sum(f(*a) * ct)

    ours = jax.grad(loss(_periodic_conv), argnums=(0, 1, 2))(x, w, b)
    ref = jax.grad(loss(_periodic_conv_nhwc), argnums=(0, 1, 2))(x, w, b)
    for a, r in zip(ours, ref):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
    check_grads(_periodic_conv, (x, w, b), order=1, modes=["rev"], eps=1e-6)


def test_zero_initialised_cnn_closure_reproduces_the_physics_bit_for_bit():
    m = get_config("jet", nx=16)
    q0 = field(m, jax.random.key(5), scale=1e5)
    net = CircularCNN(2, 2, widths=(4,), kernel_sizes=(3, 3), zero_init_last=True, key=jax.random.key(6))
    closure = CNNClosure(net, [1e-6, 1e-7], [1e-12, 1e-13])
    a = rollout(m, m.default_stepper(), QGState.from_q(q0), dt=3600.0, n_steps=10)
    b = rollout(m + closure, m.default_stepper(), QGState.from_q(q0), dt=3600.0, n_steps=10)
    np.testing.assert_array_equal(a.states.q, b.states.q)
    # a non-zero CNN changes the run but conserves each layer's domain-mean PV
    net2 = CircularCNN(2, 2, widths=(4,), kernel_sizes=(3, 3), key=jax.random.key(7))
    c = rollout(m + CNNClosure(net2, [1e-6, 1e-7], [1e-12, 1e-13]), m.default_stepper(), QGState.from_q(q0), dt=3600.0,
                n_steps=10)
    assert float(jnp.max(jnp.abs(c.final.q - a.final.q))) > 0
    np.testing.assert_allclose(jnp.mean(c.final.q, axis=(-2, -1)), jnp.mean(q0, axis=(-2, -1)), atol=1e-20)


def test_gradient_through_a_rollout_reaches_closure_parameters():
    m = get_config("eddy", nx=16)
    q0 = field(m, jax.random.key(8), scale=1e5)

    def loss(c):
        tr = rollout(m + Smagorinsky(m, c), m.default_stepper(), QGState.from_q(q0), dt=3600.0, n_steps=8, save_every=8,
                     checkpoint=True)
        return dg.kinetic_energy(m, tr.final.q) * 1e4

    g = jax.grad(loss)(0.1)
    eps = 1e-4
    fd = (loss(0.1 + eps) - loss(0.1 - eps)) / (2 * eps)
    assert float(g) < 0  # more viscosity, less energy
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_jit_vmap_grad_of_classical_closures_and_diagnostics():
    m = get_config("eddy", nx=16)
    qs = jnp.stack([field(m, jax.random.key(i), scale=1e5) for i in range(3)])
    for proc in (Smagorinsky(m), BackscatterBiharmonic(m)):
        batched = jax.jit(jax.vmap(lambda q, p=proc: p.closure_tendency(m, QGState.from_q(q), 0.0).q))(qs)
        np.testing.assert_allclose(batched[2], proc.closure_tendency(m, QGState.from_q(qs[2]), 0.0).q,
                                   atol=1e-12 * float(jnp.max(jnp.abs(batched[2]))))
    # derivative of the energy tendency with respect to the backscatter coefficient is exactly linear
    p = m.streamfunction(qs[0])
    w = (m.Hi / m.H)[:, None, None]

    def dEdt(cb):
        t = BackscatterBiharmonic(m, back_constant=cb).closure_tendency(m, QGState.from_q(qs[0]), 0.0).q
        return -jnp.sum(w * jnp.mean(p * t, axis=(-2, -1), keepdims=True))

    g = jax.grad(dEdt)(0.5)
    np.testing.assert_allclose(g, dEdt(1.0) - dEdt(0.0), rtol=1e-8)
    # gradients of the diagnostics: KE is quadratic, so grad . q = 2 KE
    for fn in (dg.kinetic_energy, dg.total_energy, dg.enstrophy):
        gq = jax.jit(jax.grad(lambda q, f=fn: f(m, q)))(qs[1])
        np.testing.assert_allclose(jnp.sum(gq * qs[1]), 2 * fn(m, qs[1]), rtol=1e-10)


def test_model_plus_closure_holds_each_physical_parameter_once():
    """Closures hold the grid (static) and their own parameters: ``model + closure`` has the model's leaves once."""
    m = get_config("eddy", nx=16)
    n_model = len(jax.tree_util.tree_leaves(m))
    assert n_model == 8  # rek, beta, rd, delta, H1, U1, U2, filterfac
    for closure, own in ((Smagorinsky(m.grid, 0.1), 1), (BackscatterBiharmonic(m.grid), 2)):
        hybrid = m + closure
        assert len(jax.tree_util.tree_leaves(hybrid)) == n_model + own
        assert len(jax.tree_util.tree_leaves(closure)) == own
        assert hybrid.grid == closure.grid == m.grid and hash(m.grid) == hash(closure.grid)
    # the gradient of a hybrid run reaches each physical parameter in one place
    q0 = field(m, jax.random.key(11), scale=1e5)

    def loss(h):
        return jnp.sum(rollout(h, h.default_stepper(), QGState.from_q(q0), dt=3600.0, n_steps=4).final.q ** 2) * 1e10

    g = eqx.filter_grad(loss)(m + Smagorinsky(m.grid, 0.1))
    assert float(g.rd) != 0.0 and float(g.closures[0].constant) != 0.0
    # a closure for another grid, and a closure that needs the model used on its own, are one-line errors
    from nemic.core.errors import ConfigError

    with pytest.raises(ConfigError, match="closure's grid"):
        m + Smagorinsky(get_config("eddy", nx=32).grid)
    with pytest.raises(ConfigError, match="add it to a TwoLayerQG first"):
        Smagorinsky(m.grid).tendency(QGState.from_q(q0), 0.0)

"""The one training loop (fit), its checkpoints and weights files, and the window sampler, on analytic cases."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nemic.core import RK4, FunctionProcess
from nemic.core.errors import DataError
from nemic.models.lorenz96 import Lorenz96State
from nemic.nn.conv import CircularCNN
from nemic.nn.mlp import LocalStencilMLP
from nemic.train.checkpoint import CheckpointError, TrainCheckpoint, load_module, read_header, save_module
from nemic.train.loop import TrainingDivergedError, fit
from nemic.train.online import window_loss
from nemic.train.windows import WindowSampler


class Quad(eqx.Module):
    w: jax.Array
    phys: jax.Array


A, B = jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray(3.0)


def quad_loss(m, batch, key):
    return 0.5 * jnp.sum((m.w - A) ** 2) + 0.5 * (m.phys - B) ** 2


def no_batch(key, it):
    return None


def q0():
    return Quad(w=jnp.zeros(3), phys=jnp.asarray(0.5))


def test_frozen_leaves_stay_bit_identical_and_the_rest_trains():
    spec = Quad(w=True, phys=False)
    res = fit(q0(), quad_loss, no_batch, optimizer=optax.sgd(0.5), n_iters=40, key=jax.random.PRNGKey(0),
              filter_spec=spec, progress=False)
    assert float(res.model.phys) == 0.5  # frozen physics parameter: exactly unchanged
    np.testing.assert_allclose(res.model.w, A, rtol=0, atol=1e-10)  # (1 - 0.5)^40 of the initial error
    # a callable filter (eqx.partition semantics) works the same way
    res2 = fit(q0(), quad_loss, no_batch, optimizer=optax.sgd(0.5), n_iters=3, key=jax.random.PRNGKey(0),
               filter_spec=lambda x: eqx.is_inexact_array(x) and x.ndim == 1, progress=False)
    assert float(res2.model.phys) == 0.5 and not np.allclose(res2.model.w, 0.0)


def test_ema_equals_the_hand_computation():
    lr, d, n = 0.1, 0.9, 12
    res = fit(q0(), quad_loss, no_batch, optimizer=optax.sgd(lr), n_iters=n, key=jax.random.PRNGKey(0),
              ema_decay=d, progress=False)
    w, ema = np.zeros(3), np.zeros(3)
    a = np.asarray(A)
    for _ in range(n):
        w = w - lr * (w - a)
        ema = d * ema + (1 - d) * w
    np.testing.assert_allclose(res.model.w, w, rtol=1e-14)
    np.testing.assert_allclose(res.ema_model.w, ema, rtol=1e-14)


def test_extra_terms_add_to_the_loss():
    # 0.5 |w - a|^2 + lam * 0.5 |w|^2 is minimised at w = a / (1 + lam); phys frozen
    lam = 0.5
    terms = ((lam, lambda m, b, k: 0.5 * jnp.sum(m.w ** 2)),)
    res = fit(q0(), quad_loss, no_batch, optimizer=optax.sgd(0.4), n_iters=200, key=jax.random.PRNGKey(0),
              filter_spec=Quad(w=True, phys=False), extra_terms=terms, progress=False)
    np.testing.assert_allclose(res.model.w, np.asarray(A) / (1 + lam), rtol=1e-10)
    first = 0.5 * float(jnp.sum(A ** 2)) + 0.5 * (3.0 - 0.5) ** 2  # at w = 0 the extra term is 0
    assert res.history[0] == pytest.approx(first, rel=1e-14)
    assert res.aux_history["extra0"][0] == 0.0 and res.aux_history["loss"][0] == pytest.approx(first, rel=1e-14)
    np.testing.assert_allclose(np.asarray(res.history), np.asarray(res.aux_history["loss"])
                               + lam * np.asarray(res.aux_history["extra0"]), rtol=1e-14)


def noisy_loss(m, batch, key):
    return 0.5 * jnp.sum((m.w - batch) ** 2) + 0.01 * jax.random.normal(key) * jnp.sum(m.w)


def noisy_batch(key, it):
    return A + 0.1 * jax.random.normal(key, (3,))


def test_fit_resumes_bit_for_bit(tmp_path):
    kw = dict(optimizer=optax.adam(0.05), n_iters=9, key=jax.random.PRNGKey(2), progress=False, ema_decay=0.8)
    full = fit(q0(), noisy_loss, noisy_batch, **kw)
    ck = tmp_path / "run.ckpt"
    fit(q0(), noisy_loss, noisy_batch, **{**kw, "n_iters": 5}, checkpoint=ck, checkpoint_every=2)
    assert TrainCheckpoint(ck).step() == 5
    res = fit(q0(), noisy_loss, noisy_batch, **kw, checkpoint=ck, checkpoint_every=2)
    assert res.history == full.history
    for a, b in zip(jax.tree_util.tree_leaves((res.model, res.ema_model, res.opt_state)),
                    jax.tree_util.tree_leaves((full.model, full.ema_model, full.opt_state))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="another random key"):
        fit(q0(), noisy_loss, noisy_batch, **{**kw, "key": jax.random.PRNGKey(3)}, checkpoint=ck)


def test_nan_learning_rate_stops_and_saves_nothing(tmp_path):
    ck = tmp_path / "run.ckpt"
    with pytest.raises(TrainingDivergedError) as e:
        fit(q0(), quad_loss, no_batch, optimizer=optax.sgd(float("nan")), n_iters=5, key=jax.random.PRNGKey(0),
            checkpoint=ck, checkpoint_every=1, progress=False, description="quad")
    msg = str(e.value)
    assert "\n" not in msg and "iteration 0" in msg and "weights" in msg and msg.startswith("quad")
    assert not ck.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="NaN"):
        save_module(tmp_path / "net", LocalStencilMLP(1, 2, 1, key=jax.random.PRNGKey(0), out_scale=float("nan")))
    assert list(tmp_path.iterdir()) == []


def test_nan_loss_later_keeps_the_last_good_checkpoint(tmp_path):
    ck = tmp_path / "run.ckpt"

    def batch(key, it):  # the data turn bad at iteration 3
        return jnp.where(it == 3, jnp.nan, 1.0) * A

    def loss(m, b, key):
        return 0.5 * jnp.sum((m.w - b) ** 2)

    with pytest.raises(TrainingDivergedError, match=r"loss became nan at iteration 3.*iteration 3\)") as e:
        fit(q0(), loss, batch, optimizer=optax.sgd(0.1), n_iters=6, key=jax.random.PRNGKey(0), checkpoint=ck,
            checkpoint_every=1, progress=False)
    assert "\n" not in str(e.value) and str(ck) in str(e.value)
    assert TrainCheckpoint(ck).step() == 3
    state = TrainCheckpoint(ck).load(q0(), optax.sgd(0.1).init(eqx.filter(q0(), eqx.is_inexact_array)))
    assert np.all(np.isfinite(state["model"].w)) and len(state["history"]) == 3


def one_line_naming(err, path):
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg


def test_bad_weights_and_checkpoint_files_are_one_line_errors(tmp_path):
    net = LocalStencilMLP(2, 8, 2, key=jax.random.PRNGKey(1), in_std=2.0)
    path = save_module(tmp_path / "net", net, extra={"note": "test"})
    assert path.name == "net.eqx" and read_header(path)["kind"] == "LocalStencilMLP"
    back = load_module(path)
    np.testing.assert_array_equal(back(jnp.linspace(-1, 1, 6)), net(jnp.linspace(-1, 1, 6)))
    raw = path.read_bytes()

    cases = {
        "truncated": raw[:-7],
        "corrupt": raw[:-5] + bytes([raw[-5] ^ 0xFF]) + raw[-4:],
        "not a nemic": b"\x93NUMPY" + raw[12:],
        "truncated inside its header": raw[:40],
    }
    for what, data in cases.items():
        bad = tmp_path / f"bad_{what.split()[0]}.eqx"
        bad.write_bytes(data)
        with pytest.raises(CheckpointError, match=what) as e:
            load_module(bad)
        one_line_naming(e, bad)
    # a file from another module: asked for another kind, or a checkpoint of another model
    with pytest.raises(CheckpointError, match="'LocalStencilMLP', not of a 'CircularCNN'") as e:
        load_module(path, kind="CircularCNN")
    one_line_naming(e, path)
    cnn = CircularCNN(1, 1, (2,), (3, 3), key=jax.random.PRNGKey(0))
    cnn_path = save_module(tmp_path / "cnn", cnn)
    assert load_module(cnn_path).config() == cnn.config()
    ck = TrainCheckpoint(tmp_path / "train.ckpt")
    opt = optax.adam(1e-3)
    ck.save(4, net, opt.init(eqx.filter(net, eqx.is_inexact_array)), [1.0, 0.5, 0.25, 0.2])
    other = LocalStencilMLP(2, 16, 2, key=jax.random.PRNGKey(1))
    with pytest.raises(CheckpointError, match="shape") as e:
        ck.load(other, opt.init(eqx.filter(other, eqx.is_inexact_array)))
    one_line_naming(e, ck.path)
    with pytest.raises(CheckpointError, match="not module weights") as e:
        load_module(ck.path)
    one_line_naming(e, ck.path)
    assert isinstance(e.value, DataError)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = save_module(tmp_path / "net", LocalStencilMLP(1, 2, 1, key=jax.random.PRNGKey(0)))
        assert oct(os.stat(p).st_mode & 0o777) == oct(0o644)
        os.umask(0o077)
        p2 = save_module(tmp_path / "net2", LocalStencilMLP(1, 2, 1, key=jax.random.PRNGKey(0)))
        assert oct(os.stat(p2).st_mode & 0o777) == oct(0o600)
    finally:
        os.umask(old)


def test_window_sampler_with_save_spacing():
    # reference x_i = i * (k dt) c: the exact solution of dx/dt = c saved every k steps of size dt
    T, k, dt, c, n = 20, 3, 0.1, 2.0, 4
    ref = Lorenz96State(x=(jnp.arange(T, dtype=float) * k * dt * c)[:, None] * jnp.ones((1, 5)))
    times = jnp.arange(T) * k * dt + 7.0
    s = WindowSampler(ref, n, 6, save_every=k, times=times)
    assert s.n_model_steps == 12 and s.n_starts == T - n
    w = s.at(jnp.asarray([0, 2, 15]))
    np.testing.assert_array_equal(w.start.x[:, 0], np.array([0, 2, 15]) * k * dt * c)
    np.testing.assert_array_equal(w.target.x[1, :, 0], np.arange(3, 7) * k * dt * c)
    np.testing.assert_array_equal(w.t0, times[jnp.asarray([0, 2, 15])])
    assert w.target.x.shape == (3, n, 5)
    draws = jax.jit(jax.vmap(lambda kk: s(kk, 0).t0))(jax.random.split(jax.random.PRNGKey(0), 300))
    starts = np.round((np.asarray(draws) - 7.0) / (k * dt)).astype(int)
    assert starts.min() == 0 and starts.max() == T - n - 1  # every admissible start, none past the end
    model = FunctionProcess(lambda st, t: Lorenz96State(x=c * jnp.ones_like(st.x)))
    batch = s(jax.random.PRNGKey(1), 0)
    assert float(window_loss(model, RK4(), batch, dt=dt, save_every=k)) < 1e-26
    assert float(window_loss(model, RK4(), batch, dt=dt, save_every=1)) > 0.1  # wrong spacing is seen
    with pytest.raises(DataError, match="too short"):
        WindowSampler(ref, T, 2)

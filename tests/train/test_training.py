"""Offline and online training, checkpoint/resume and saved modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import RK4, ConfigError, DataError, rollout
from nemic.models.lorenz96 import Lorenz96, Lorenz96State
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.neural import NeuralTendency
from nemic.train.checkpoint import load_module, save_module
from nemic.train.offline import fit_offline
from nemic.train.online import fit_online



def test_offline_fit_learns_a_local_function():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (512, 8)) * 3
    y = jnp.tanh(jnp.roll(x, 1, -1)) - 0.5 * x  # depends on x_{k-1} and x_k
    net = LocalStencilMLP(1, 16, 2, key=jax.random.PRNGKey(1), in_std=3.0)
    trained, hist = fit_offline(net, x, y, n_iters=600, batch_size=64, learning_rate=1e-2, key=key,
                                progress=False)
    assert hist[-1] < 0.05 * hist[0]
    xt = jax.random.normal(jax.random.PRNGKey(9), (64, 8)) * 3
    err = jnp.mean((jax.vmap(trained)(xt) - (jnp.tanh(jnp.roll(xt, 1, -1)) - 0.5 * xt)) ** 2)
    assert err < 0.05


def test_online_training_recovers_a_missing_forcing():
    """Truth: Lorenz-96 with F = 10. Model: F = 8 plus a learned constant. Online training must find +2."""
    truth = Lorenz96(F=10.0)
    s0 = truth.initial_state(jax.random.PRNGKey(0), K=8)
    ref = rollout(truth, RK4(), s0, dt=0.01, n_steps=400).states

    import equinox as eqx

    class LearnedForcing(eqx.Module):
        c: jax.Array

        def __call__(self, x):
            return jnp.broadcast_to(self.c, x.shape)

    corr = NeuralTendency(LearnedForcing(jnp.asarray(0.0)), "x")
    trained, hist = fit_online(corr, lambda c: Lorenz96(F=8.0) + c, RK4(), ref, dt=0.01,
                               curriculum=((2, 150), (8, 150)), batch_size=16, learning_rate=0.05,
                               key=jax.random.PRNGKey(1), progress=False)
    assert abs(float(trained.net.c) - 2.0) < 0.02
    assert hist[-1] < 1e-3 * hist[0]


def test_online_resume_equals_uninterrupted(tmp_path, monkeypatch):
    import nemic.train.loop as loop
    from nemic.train.checkpoint import TrainCheckpoint

    truth = Lorenz96(F=10.0)
    ref = rollout(truth, RK4(), truth.initial_state(jax.random.PRNGKey(0), K=8), dt=0.01, n_steps=100).states
    net = LocalStencilMLP(1, 4, 1, key=jax.random.PRNGKey(3), zero_init=True)
    kw = dict(dt=0.01, batch_size=4, learning_rate=1e-2, key=jax.random.PRNGKey(4), progress=False,
              curriculum=((2, 6), (4, 6)))
    build = lambda c: Lorenz96(F=8.0) + c  # noqa: E731
    full, h_full = fit_online(NeuralTendency(net, "x"), build, RK4(), ref, **kw)

    # the same training, interrupted (Ctrl-C) during iteration 8, after the checkpoint of iteration 6
    real_make_step = loop.make_step
    calls = {"n": 0}

    def interrupting_make_step(*a, **k):
        step = real_make_step(*a, **k)

        def wrapped(*args):
            calls["n"] += 1
            if calls["n"] == 8:  # iteration 8 overall, in the second stage
                raise KeyboardInterrupt
            return step(*args)

        return wrapped

    monkeypatch.setattr(loop, "make_step", interrupting_make_step)
    with pytest.raises(KeyboardInterrupt):
        fit_online(NeuralTendency(net, "x"), build, RK4(), ref, checkpoint_dir=str(tmp_path), checkpoint_every=3,
                   **kw)
    monkeypatch.setattr(loop, "make_step", real_make_step)
    assert calls["n"] == 8
    assert TrainCheckpoint(tmp_path / "online.ckpt").step() == 6  # resumes mid-curriculum
    assert sorted(p.name for p in tmp_path.iterdir()) == ["online.ckpt"]  # one file, no temporaries left
    resumed, h_res = fit_online(NeuralTendency(net, "x"), build, RK4(), ref, checkpoint_dir=str(tmp_path),
                                checkpoint_every=3, **kw)
    assert h_res == h_full  # bit for bit
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(full)):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_module_roundtrip(tmp_path):
    net = LocalStencilMLP(2, 8, 3, "gelu", key=jax.random.PRNGKey(5), in_mean=1.5, in_std=2.0, out_scale=3.0)
    save_module(tmp_path / "net", net, net.config())
    loaded = load_module(tmp_path / "net")
    x = jnp.linspace(-3, 3, 10)
    np.testing.assert_array_equal(loaded(x), net(x))
    assert loaded.config() == net.config()
    with pytest.raises(DataError, match="does not exist"):
        load_module(tmp_path / "missing")


def test_training_bad_inputs():
    net = LocalStencilMLP(1, 4, 1, key=jax.random.PRNGKey(0))
    with pytest.raises(DataError, match="same number"):
        fit_offline(net, jnp.ones((5, 8)), jnp.ones((4, 8)), key=jax.random.PRNGKey(0), progress=False)
    with pytest.raises(DataError, match="NaN"):
        fit_offline(net, jnp.ones((5, 8)).at[0, 0].set(jnp.nan), jnp.ones((5, 8)), key=jax.random.PRNGKey(0),
                    progress=False)
    ref = Lorenz96State(x=jnp.ones((5, 8)))
    with pytest.raises(DataError, match="too short"):
        fit_online(NeuralTendency(net, "x"), lambda c: Lorenz96() + c, RK4(), ref, dt=0.01,
                   curriculum=((10, 1),), key=jax.random.PRNGKey(0), progress=False)
    with pytest.raises(ConfigError, match="curriculum"):
        fit_online(NeuralTendency(net, "x"), lambda c: Lorenz96() + c, RK4(), ref, dt=0.01, curriculum=(),
                   key=jax.random.PRNGKey(0), progress=False)


def test_online_windows_start_at_their_own_time_and_nudging_option():
    """A non-autonomous truth dx/dt = sin(t): a learned constant cannot fit it, but the time-aware windows
    plus a learned amplitude a * sin(t) recover a = 1; nudged windows train to the same answer."""
    import equinox as eqx

    from nemic.core import FunctionProcess

    class Amplitude(eqx.Module):
        a: jax.Array

    dt, T = 0.05, 400
    t = jnp.arange(T) * dt + 3.0
    ref = Lorenz96State(x=jnp.broadcast_to((-jnp.cos(t))[:, None], (T, 4)))

    def build(amp):
        return FunctionProcess(lambda s, tt, a=amp.a: Lorenz96State(x=a * jnp.sin(tt) * jnp.ones_like(s.x)))

    for tau in (None, 0.5):
        trained, hist = fit_online(Amplitude(jnp.asarray(0.0)), build, RK4(), ref, dt=dt, reference_times=t,
                                   curriculum=((10, 150),), batch_size=8, learning_rate=0.05, nudging_tau=tau,
                                   key=jax.random.PRNGKey(0), progress=False)
        assert abs(float(trained.a) - 1.0) < 0.02, (tau, float(trained.a))
    with pytest.raises(ConfigError, match="nudging_tau"):
        fit_online(Amplitude(jnp.asarray(0.0)), build, RK4(), ref, dt=dt, nudging_tau=0.0,
                   key=jax.random.PRNGKey(0), progress=False, curriculum=((2, 1),))
    with pytest.raises(DataError, match="reference_times"):
        fit_online(Amplitude(jnp.asarray(0.0)), build, RK4(), ref, dt=dt, reference_times=t[:5],
                   key=jax.random.PRNGKey(0), progress=False, curriculum=((2, 1),))

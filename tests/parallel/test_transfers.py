"""Host loops keep their data on the device: between the jitted segments of ``simulate`` and between the
iterations of ``fit`` no host array is fed back (``jax.transfer_guard("disallow")`` around every compiled call
fails on an implicit host-to-device transfer); only the saves and the shown loss come to the host, and a second
``simulate`` of the same model reuses the compiled segment."""

import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nemic.train.loop as loop_mod
from nemic.core import RK4, AR1Noise, rollout, simulate
from nemic.models.lorenz96 import Lorenz96, Lorenz96State

rollout_mod = importlib.import_module("nemic.core.rollout")  # the module (nemic.core.rollout is also a function)


def _guarded(fn, calls):
    def call(*args, **kwargs):
        calls.append(1)
        with jax.transfer_guard("disallow"):
            return fn(*args, **kwargs)
    return call


def test_simulate_segments_take_device_arrays_only(monkeypatch):
    model = Lorenz96(F=8.0, K=8) + AR1Noise(sigma=0.2, phi=0.5, field="x")
    s0 = Lorenz96State(x=jnp.full(8, 8.0).at[0].add(0.1))  # weak-typed, as users write it
    key = jax.random.key(0)
    calls = []
    monkeypatch.setattr(rollout_mod, "_segment", _guarded(rollout_mod._segment, calls))
    tr = simulate(model, RK4(), s0, dt=0.01, n_steps=120, save_every=10, segments=6, key=key)
    assert len(calls) == 6
    ref = rollout(model, RK4(), s0, dt=0.01, n_steps=120, save_every=10, key=key)  # one piece
    assert np.max(np.abs(np.asarray(tr.states.x) - np.asarray(ref.states.x))) <= 1e-12
    # a host (NumPy) carry would be refused: the guard is live
    carry = rollout_mod.init_carry(model, RK4(), s0, dt=0.01, key=key)
    with pytest.raises(Exception, match="host-to-device"):
        rollout_mod._segment(model, RK4(), jax.device_get(s0), carry, rollout_mod._device_time(0.0), 1, 0.01, 10,
                             key, None)


def test_simulate_compiles_its_segment_once_across_calls():
    model = Lorenz96(F=8.0, K=8)
    s0 = Lorenz96State(x=jnp.full(8, 8.0).at[0].add(0.1))
    simulate(model, RK4(), s0, dt=0.01, n_steps=40, save_every=10, segments=4)
    before = rollout_mod._segment._cached._cache_size()
    simulate(model, RK4(), s0, dt=0.01, n_steps=40, save_every=10, segments=4)
    assert rollout_mod._segment._cached._cache_size() == before


def test_fit_steps_take_device_arrays_only(monkeypatch):
    calls = []
    real = loop_mod.make_step
    monkeypatch.setattr(loop_mod, "make_step", lambda *a, **k: _guarded(real(*a, **k), calls))
    X = jax.random.normal(jax.random.key(1), (64, 2))
    Y = X[:, :1] * 2.0 - X[:, 1:]

    class Sampler(eqx.Module):
        x: jax.Array
        y: jax.Array

        def __call__(self, key, iteration):
            i = jax.random.randint(key, (8,), 0, 64)
            return self.x[i], self.y[i]

    lin = eqx.nn.Linear(2, 1, key=jax.random.key(2))
    loss = lambda m, b, k: jnp.mean((jax.vmap(m)(b[0]) - b[1]) ** 2)  # noqa: E731
    res = loop_mod.fit(lin, loss, Sampler(X, Y), optimizer=optax.adam(0.05), n_iters=30, key=jax.random.key(3),
                       progress=False)
    assert len(calls) == 30 and res.history[-1] < 0.2 * res.history[0]

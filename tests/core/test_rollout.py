"""Rollouts: saving, checkpointed gradients, memory, blow-up handling and input validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemic.core import (AB3, RK4, AbstractState, BlowUpError, ConfigError, DataError, FunctionProcess,
                        Trajectory, checkpointed_scan, rollout, simulate)
from nemic.io import progress, to_xarray


class TwoFields(AbstractState):
    a: jax.Array
    b: jax.Array


decay = FunctionProcess(lambda s, t: jax.tree_util.tree_map(lambda x: -x, s))


def test_saves_and_times():
    tr = rollout(decay, RK4(), jnp.ones(3), dt=0.1, n_steps=20, t0=1.0, save_every=5)
    assert tr.states.shape == (5, 3)
    np.testing.assert_allclose(tr.t, 1.0 + 0.5 * np.arange(5))
    np.testing.assert_allclose(tr.states[:, 0], np.exp(-tr.t + 1.0), rtol=1e-5)  # RK4 error ~ dt^4
    assert int(tr.blowup_step) == -1


@settings(max_examples=15, deadline=None)
@given(length=st.integers(0, 40))
def test_checkpointed_scan_matches_scan(length):
    body = lambda c: (c * 1.01 + 0.1, c)  # noqa: E731
    c1, y1 = checkpointed_scan(body, jnp.asarray(1.0), length, checkpoint=False)
    c2, y2 = checkpointed_scan(body, jnp.asarray(1.0), length, checkpoint=True)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(y1, y2)
    assert y1.shape == (length,)


def test_checkpointed_and_plain_gradients_agree():
    from nemic.models.lorenz96 import Lorenz96, Lorenz96State

    model = Lorenz96(F=8.0)
    x0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))

    def loss(F, x0, checkpoint, save_every):
        m = eqx.tree_at(lambda m: m.F, model, F)
        tr = rollout(m, AB3(), x0, dt=0.01, n_steps=300, save_every=save_every, checkpoint=checkpoint)
        return jnp.mean(tr.states.x ** 2)

    for save_every in (1, 30, 300):
        g_plain = jax.grad(loss, argnums=(0, 1))(jnp.asarray(8.0), x0, False, save_every)
        g_ckpt = jax.grad(loss, argnums=(0, 1))(jnp.asarray(8.0), x0, True, save_every)
        np.testing.assert_allclose(g_plain[0], g_ckpt[0], rtol=1e-10)
        np.testing.assert_allclose(g_plain[1].x, g_ckpt[1].x, rtol=1e-10)


def test_checkpointing_bounds_gradient_memory():
    """XLA's compiled temporary memory for a 10,000-step gradient: nested checkpointing keeps it ~sqrt(n)."""
    from nemic.models.lorenz96 import Lorenz96, Lorenz96State

    model = Lorenz96(F=8.0)

    def temp_bytes(n, checkpoint):
        f = lambda x: rollout(model, RK4(), Lorenz96State(x=x), dt=0.001, n_steps=n, save_every=n,  # noqa: E731
                              checkpoint=checkpoint).final.x.sum()
        compiled = jax.jit(jax.grad(f)).lower(jnp.ones(40)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain_1k, plain_10k = temp_bytes(1000, False), temp_bytes(10000, False)
    ckpt_1k, ckpt_10k = temp_bytes(1000, True), temp_bytes(10000, True)
    assert plain_10k > 8 * plain_1k  # plain reverse mode stores every step: linear growth
    assert ckpt_10k < 5 * ckpt_1k  # sqrt growth would be 3.2x
    assert ckpt_10k < plain_10k / 10


def test_blowup_is_detected_and_frozen():
    p = FunctionProcess(lambda s, t: s * s)  # x' = x^2 from x0 = 1 blows up at t = 1
    tr = rollout(p, RK4(), jnp.ones(2), dt=0.05, n_steps=100, save_every=5)
    bad = int(tr.blowup_step)
    assert 10 <= bad < 40
    assert np.all(np.isfinite(np.asarray(tr.states)))
    np.testing.assert_array_equal(tr.states[-1], tr.states[bad // 5])


def test_simulate_names_step_and_variable_and_keeps_trajectory():
    # a blows up (a' = a^2), b is harmless: the error must name 'a' and the step
    p = FunctionProcess(lambda s, t: TwoFields(a=s.a * s.a, b=-s.b))
    s0 = TwoFields(a=jnp.ones(3), b=jnp.ones(2))
    with pytest.raises(BlowUpError) as info:
        simulate(p, RK4(), s0, dt=0.05, n_steps=200, save_every=4, segments=7)
    e = info.value
    assert e.variable == "a"
    assert "step" in str(e) and "'a'" in str(e)
    # exact step: the first step whose RK4 result is non-finite, found by an independent eager loop
    s, n = s0, 0
    while True:
        s, _ = RK4().step(p, s, 0.0, 0.05, None)
        n += 1
        if not np.all(np.isfinite(np.asarray(s.a))):
            break
    assert e.step == n
    traj = e.trajectory
    assert np.all(np.isfinite(np.asarray(traj.states.a)))
    assert len(traj) == (n - 1) // 4 + 1  # every finite save before the bad one is kept
    np.testing.assert_allclose(traj.t, 0.2 * np.arange(len(traj)))
    truncated = simulate(p, RK4(), s0, dt=0.05, n_steps=200, save_every=4, on_blowup="truncate")
    assert len(truncated) == len(traj) and int(truncated.blowup_step) == n


def test_simulate_matches_rollout_and_shows_progress(capsys):
    s0 = TwoFields(a=jnp.ones(3), b=jnp.arange(2.0))
    a = rollout(decay, AB3(), s0, dt=0.01, n_steps=120, save_every=3)
    reports = []
    b = simulate(decay, AB3(), s0, dt=0.01, n_steps=120, save_every=3, segments=5,
                 progress=lambda done, total: reports.append((done, total)))
    np.testing.assert_allclose(a.states.a, b.states.a, rtol=1e-13)
    np.testing.assert_allclose(a.t, b.t)
    assert reports[-1] == (120, 120) and len(reports) == 5
    with progress("decaying") as report:  # the Rich bar from nemic.io
        c = simulate(decay, AB3(), s0, dt=0.01, n_steps=120, save_every=3, segments=5, progress=report)
    np.testing.assert_array_equal(b.states.a, c.states.a)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(dt=0.0, n_steps=10), ConfigError, "dt"),
    (dict(dt=-0.1, n_steps=10), ConfigError, "dt"),
    (dict(dt=float("nan"), n_steps=10), ConfigError, "dt"),
    (dict(dt=0.1, n_steps=10, save_every=3), ConfigError, "multiple"),
    (dict(dt=0.1, n_steps=-1), ConfigError, "n_steps"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        rollout(decay, RK4(), jnp.ones(2), **kwargs)
    with pytest.raises(err, match=match):
        simulate(decay, RK4(), jnp.ones(2), **kwargs)


def test_nan_initial_state_is_named():
    s0 = TwoFields(a=jnp.ones(3), b=jnp.asarray([1.0, jnp.nan]))
    with pytest.raises(DataError, match=r"initial state\.b"):
        rollout(decay, RK4(), s0, dt=0.1, n_steps=2)


def test_to_xarray_member_axis_and_units():
    class Named(AbstractState):
        x: jax.Array
        cf = {"x": {"dims": ("k",), "units": "K", "long_name": "temperature"}}

    s0 = Named(x=jnp.ones((4, 3)) * jnp.arange(1.0, 5.0)[:, None])
    tr = jax.vmap(lambda s: rollout(decay, RK4(), Named(x=s), dt=0.1, n_steps=4, save_every=2))(s0.x)
    ds = to_xarray(tr, attrs={"F": jnp.asarray(8.0), "flag": True})
    assert ds.x.dims == ("member", "time", "k")
    assert ds.x.attrs["units"] == "K" and ds.time.attrs["standard_name"] == "time"
    assert ds.attrs["F"] == 8.0 and ds.attrs["Conventions"].startswith("CF")
    assert isinstance(tr, Trajectory)

"""Nested (multi-level) checkpointing: the same outputs and gradients as a plain scan, and less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core import RK4, checkpointed_scan, rollout
from nemic.models.lorenz96 import Lorenz96, Lorenz96State


@pytest.mark.parametrize("length", [1, 2, 7, 100, 1000, 1031])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_nested_scan_outputs_equal_plain_scan(length, levels):
    body = lambda c: (jnp.sin(c) * 1.01 + 0.1, c**2)  # noqa: E731
    c0 = jnp.linspace(0.1, 1.0, 3)
    ref_c, ref_y = checkpointed_scan(body, c0, length, False)
    c, y = checkpointed_scan(body, c0, length, levels)
    np.testing.assert_array_equal(c, ref_c)
    np.testing.assert_array_equal(y, ref_y)
    assert y.shape == (length, 3)


def test_nested_checkpoint_gradients_equal_plain():
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0)))

    def loss(F, checkpoint):
        tr = rollout(Lorenz96(F), RK4(), s0, dt=0.005, n_steps=200, save_every=1, checkpoint=checkpoint)
        return jnp.mean(tr.states.x[-50:] ** 2)

    g = [jax.grad(loss)(8.0, c) for c in (False, True, 3)]
    for gi in g[1:]:
        np.testing.assert_allclose(gi, g[0], rtol=1e-10)


def _temp_bytes(levels, n):
    s0 = Lorenz96State(x=8.0 + jnp.sin(jnp.arange(40.0)))

    def loss(F):
        tr = rollout(Lorenz96(F), RK4(), s0, dt=0.005, n_steps=n, save_every=n, checkpoint=levels,
                     detect_blowup=False)
        return jnp.sum(tr.final.x ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(8.0).compile()
    mem = compiled.memory_analysis()
    if mem is None:
        pytest.skip("this JAX backend reports no memory analysis")
    return mem.temp_size_in_bytes


def test_nesting_levels_reduce_reverse_mode_memory():
    """10^4 steps: the stored carries shrink from n (plain) to ~2 sqrt(n) (1 level) to ~3 n^(1/3) (2 levels)."""
    n = 10_000
    plain, one, two = (_temp_bytes(lv, n) for lv in (False, 1, 2))
    assert one < plain / 20, (plain, one)
    assert two < one, (one, two)

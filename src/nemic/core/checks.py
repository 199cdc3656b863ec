"""Checks that run on the host before a rollout is traced, so that bad input gives one line, not an XLA trace:
the state (a pytree of finite float arrays of the model's shape), the tendencies' structure, the key, the counts."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_dt, check_finite
from nemic.core.process import AbstractProcess, PyTree


def check_state(process: AbstractProcess, state: Any, name: str = "initial state") -> None:
    """One-line errors for a state that cannot be stepped: not a pytree of float arrays, NaN/inf, or (when the
    process or its core defines ``check_state``) a shape the model rejects."""
    leaves = jax.tree_util.tree_leaves(state)
    if not leaves:
        raise DataError(f"{name} is empty: expected the model's state pytree (e.g. model.initial_state(key))")
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            return
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "fc":
            raise DataError(f"{name} must hold floating-point arrays, got dtype {arr.dtype} "
                            f"(build it with the model's state class, e.g. model.initial_state(key))")
    check_finite(name, state)
    core = getattr(process, "core", None) or getattr(getattr(process, "explicit", None), "core", None)
    for p in (process, core, getattr(process, "explicit", None)):
        if p is not None and hasattr(p, "check_state"):
            p.check_state(state)
            break


def _shape_struct(tree: PyTree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(jnp.shape(x)), jnp.result_type(x).kind) for x in leaves)


def check_tendency_structure(process: AbstractProcess, state: PyTree, t: Any = 0.0, key: Any = None) -> None:
    """One-line :class:`DataError` naming the first term whose tendency's structure or shapes differ from the
    state's (checked abstractly with ``jax.eval_shape``: nothing is computed)."""
    from_sum = getattr(process, "terms", None)
    explicit = getattr(process, "explicit", None)
    terms = from_sum if from_sum is not None else (process,)
    if explicit is not None:
        terms = tuple(getattr(explicit, "terms", (explicit,))) + (process.implicit,)
    want = _shape_struct(state)
    for term in terms:
        k = jax.random.key(0) if term.stochastic else None
        got = jax.eval_shape(lambda s, p=term, k=k: p.bind_noise(p.init_noise(s, k) if k is not None else None)
                             .tendency(s, t, k), state)
        got_struct = (got_def, got_shapes) = (jax.tree_util.tree_structure(got),
                                              tuple((tuple(x.shape), x.dtype.kind)
                                                    for x in jax.tree_util.tree_leaves(got)))
        if got_def != want[0] or got_shapes != want[1]:
            raise DataError(
                f"{type(term).__name__}.tendency returns {_describe(got_struct)} but the state is "
                f"{_describe(want)}: a tendency must have the state's structure and shapes")


def _describe(struct) -> str:
    treedef, shapes = struct
    return f"{treedef.num_leaves} array(s) of shape(s) {', '.join(str(s) for s, _ in shapes)}"


def check_run_settings(state0, dt, n_steps, save_every):
    """Check a rollout's ``dt`` (finite, positive), ``n_steps`` (>= 0) and ``save_every`` (>= 1, divides
    ``n_steps``); raises a one-line ``ConfigError`` otherwise."""
    check_dt(dt)
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 0:
        raise ConfigError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if not isinstance(save_every, (int, np.integer)) or isinstance(save_every, bool) or save_every < 1:
        raise ConfigError(f"save_every must be a positive integer, got {save_every!r}")
    if n_steps % save_every:
        raise ConfigError(f"n_steps ({n_steps}) must be a multiple of save_every ({save_every})")


def check_key(process, key):
    """Check that a stochastic ``process`` gets a key and that ``key`` is a single ``jax.random`` key
    (typed or raw uint32[2]); raises a one-line ``ConfigError`` otherwise."""
    if key is None and process.stochastic:
        raise ConfigError(f"{type(process).__name__} is stochastic: pass key=jax.random.key(seed) to the rollout")
    if key is not None and not (isinstance(key, jax.core.Tracer) or is_key(key)):
        raise ConfigError(f"key must be a jax.random key, got {type(key).__name__}")


def is_key(key) -> bool:
    """True if ``key`` is one ``jax.random`` key: a typed key of shape () or a raw uint32 array of shape (2,)."""
    try:
        arr = jnp.asarray(key) if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    except AttributeError:
        return False
    if jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
        return arr.shape == ()
    return arr.dtype == jnp.uint32 and arr.shape == (2,)

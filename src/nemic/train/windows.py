"""Training windows drawn from a reference trajectory that has its own save spacing.

A reference trajectory holds ``T`` states saved every ``save_every = k`` model steps of size ``dt`` (so its states
are ``k dt`` apart in time). A window of ``n`` saves starts at reference state ``i`` and covers the next ``n``
saved states ``i+1 .. i+n``, i.e. ``n k`` model steps. :class:`WindowSampler` draws ``batch_size`` such windows
per iteration, uniformly over the admissible starts ``0 .. T-n-1``, and returns a :class:`Windows` batch: the
start states, the targets and the start times (a non-autonomous model, e.g. with a seasonal cycle, must start
each rollout at its own time).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite

__all__ = ["Windows", "WindowSampler"]


class Windows(eqx.Module):
    """A batch of training windows.

    Attributes:
        start: state pytree whose leaves have a leading batch axis (B, ...): the window start states.
        target: state pytree with leaves (B, n, ...): the ``n`` reference saves that follow each start.
        t0: start times (B,), in the units of the reference times.
    """

    start: Any
    target: Any
    t0: jax.Array


class WindowSampler(eqx.Module):
    """Draw windows of ``n_saves`` saves from ``reference`` (``save_every`` model steps between saves).

    Args:
        reference: a state pytree whose leaves have a leading time axis of length T.
        n_saves: window length in reference saves (>= 1); the rollout is ``n_saves * save_every`` model steps.
        batch_size: windows per draw.
        save_every: model steps between two reference states (k); only used for :attr:`n_model_steps`.
        times: times of the reference states (T,); default ``arange(T)``, in units of the save spacing.

    Calling ``sampler(key, iteration)`` returns a :class:`Windows` with ``batch_size`` windows whose starts are
    drawn uniformly from ``0 .. T - n_saves - 1`` with ``jax.random.randint(key, ...)``; it is traceable (jit,
    vmap). :meth:`at` returns the windows at given start indices.
    """

    reference: Any
    times: jax.Array
    n_saves: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    save_every: int = eqx.field(static=True)

    def __init__(self, reference: Any, n_saves: int, batch_size: int, *, save_every: int = 1, times: Any = None):
        leaves = jax.tree_util.tree_leaves(reference)
        if not leaves:
            raise DataError("the reference trajectory has no arrays")
        T = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
        if any(np.ndim(x) == 0 or np.shape(x)[0] != T for x in leaves):
            raise DataError("every field of the reference trajectory needs the same leading time axis")
        for name, v in (("n_saves", n_saves), ("batch_size", batch_size), ("save_every", save_every)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if n_saves + 1 > T:
            raise DataError(f"reference has {T} states, too short for windows of {n_saves} saves")
        check_finite("reference trajectory", reference)
        times = jnp.arange(T, dtype=float) if times is None else jnp.asarray(times)
        if times.shape != (T,):
            raise DataError(f"reference times must have shape ({T},), got {times.shape}")
        self.reference = reference
        self.times = times
        self.n_saves = int(n_saves)
        self.batch_size = int(batch_size)
        self.save_every = int(save_every)

    @property
    def n_model_steps(self) -> int:
        """Model steps per window: ``n_saves * save_every``."""
        return self.n_saves * self.save_every

    @property
    def n_starts(self) -> int:
        """Number of admissible start indices, ``T - n_saves``."""
        return int(self.times.shape[0]) - self.n_saves

    def at(self, starts: Any) -> Windows:
        """The windows starting at reference indices ``starts`` (B,), 0 <= start < T - n_saves."""
        starts = jnp.asarray(starts)
        idx = starts[:, None] + jnp.arange(1, self.n_saves + 1)[None, :]
        start = jax.tree_util.tree_map(lambda x: x[starts], self.reference)
        target = jax.tree_util.tree_map(lambda x: x[idx], self.reference)
        return Windows(start=start, target=target, t0=self.times[starts])

    def __call__(self, key: jax.Array, iteration: Any = None) -> Windows:
        starts = jax.random.randint(key, (self.batch_size,), 0, self.n_starts)
        return self.at(starts)

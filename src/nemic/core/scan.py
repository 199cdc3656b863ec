"""Scans with nested (multi-level) checkpointing: reverse-mode memory that grows like n^(1/(L+1))."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError


def _levels(checkpoint: bool | int) -> int:
    if isinstance(checkpoint, bool) or checkpoint is None:
        return int(bool(checkpoint))
    if not isinstance(checkpoint, (int, np.integer)) or checkpoint < 0:
        raise ConfigError(f"checkpoint must be a bool or a number of nesting levels >= 0, got {checkpoint!r}")
    return int(checkpoint)


def checkpointed_scan(
    body: Callable[[Any], tuple[Any, Any]], carry: Any, length: int, checkpoint: bool | int = False
) -> tuple[Any, Any]:
    """``lax.scan`` of ``carry -> (carry, output)`` for ``length`` iterations, with nested checkpointing.

    ``checkpoint`` is the number of nesting levels ``L`` (``True`` = 1). With ``L`` levels the iterations are
    grouped into about ``length**(1/(L+1))`` blocks per level, each a ``jax.checkpoint``-ed inner scan, so the
    backward pass stores about ``(L+1) length**(1/(L+1))`` carries and recomputes each step ``L`` times
    (Griewank & Walther 2000, ACM TOMS 26, 19-45, doi:10.1145/347837.347846): one level for ~10^3 steps, two or
    three for windows of 10^4-10^5 steps. Outputs are stacked along a leading axis of size ``length`` exactly as
    ``lax.scan`` would.
    """
    if length < 0:
        raise ConfigError(f"scan length must be >= 0, got {length}")
    levels = _levels(checkpoint)
    f = lambda c, _: body(c)  # noqa: E731
    if levels == 0 or length <= 2:
        return jax.lax.scan(f, carry, None, length=length)
    # block length m ~ length**(levels/(levels+1)): the outer scan has ~length**(1/(levels+1)) blocks and each
    # block is itself a checkpointed scan with one level fewer
    m = max(1, min(length, int(math.ceil(length ** (levels / (levels + 1)) - 1e-9))))
    q, r = divmod(length, m)

    def block(n):
        # one rematerialised block: its forward is recomputed in the backward pass
        return jax.checkpoint(lambda c, _: checkpointed_scan(body, c, n, levels - 1))

    carry, ys = jax.lax.scan(block(m), carry, None, length=q)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((q * m,) + y.shape[2:]), ys)
    if r:
        carry, ys_r = block(r)(carry, None)
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys_r)
    return carry, ys

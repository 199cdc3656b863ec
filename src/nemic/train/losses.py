"""Losses: pure functions ``(prediction, target) -> scalar`` or ``(model, batch) -> scalar``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def mse(prediction: Any, target: Any) -> jax.Array:
    """Mean squared error, averaged over every element of every leaf (pytrees of equal structure)."""
    sq = jax.tree_util.tree_map(lambda a, b: jnp.sum((a - b) ** 2), prediction, target)
    n = sum(x.size for x in jax.tree_util.tree_leaves(target))
    return sum(jax.tree_util.tree_leaves(sq)) / n

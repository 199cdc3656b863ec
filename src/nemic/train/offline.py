"""Offline training: supervised regression of a network on diagnosed targets (e.g. subgrid tendencies).

:func:`fit_offline` is :func:`~nemic.train.loop.fit` with a minibatch sampler (:class:`MinibatchSampler`, draws
without replacement within a batch) and the loss ``loss(vmap(net)(inputs), targets)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError, check_finite
from nemic.train.checkpoint import TrainCheckpoint
from nemic.train.loop import FitResult, default_optimizer, fit
from nemic.train.losses import mse

__all__ = ["MinibatchSampler", "fit_offline"]


class MinibatchSampler(eqx.Module):
    """Minibatches ``(inputs[idx], targets[idx])`` of ``batch_size`` distinct samples (leading axis N).

    ``sampler(key, iteration)`` draws ``idx`` with ``jax.random.choice(key, N, (batch_size,), replace=False)``.
    """

    inputs: Any
    targets: Any
    batch_size: int = eqx.field(static=True)

    def __call__(self, key: jax.Array, iteration: Any = None) -> tuple[Any, Any]:
        n = jax.tree_util.tree_leaves(self.inputs)[0].shape[0]
        idx = jax.random.choice(key, n, (self.batch_size,), replace=False)
        return (jax.tree_util.tree_map(lambda x: x[idx], self.inputs),
                jax.tree_util.tree_map(lambda x: x[idx], self.targets))


def fit_offline(
    net: Any,
    inputs: jax.Array,
    targets: jax.Array,
    *,
    n_iters: int = 2000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    key: jax.Array,
    loss: Callable[[Any, Any], jax.Array] = mse,
    extra_terms: Sequence[tuple[float, Callable]] = (),
    filter_spec: Any = eqx.is_inexact_array,
    ema_decay: float | None = None,
    optimizer: Any = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    return_result: bool = False,
) -> tuple[Any, list[float]] | FitResult:
    """Fit ``net(inputs[i]) ~ targets[i]`` by minibatch gradient descent.

    Args:
        net: a callable Equinox module mapping one sample to one prediction.
        inputs, targets: arrays with a leading sample axis of equal length N.
        n_iters, batch_size, learning_rate: optimisation settings (Adam, cosine decay, clipping by default).
        key: PRNG key for the minibatches.
        loss: pure ``loss(predictions, targets) -> scalar`` on a batch (default mean squared error).
        extra_terms, filter_spec, ema_decay: as in :func:`~nemic.train.loop.fit` (``fn(net, batch, key)``).
        checkpoint_dir: if given, checkpoint to ``<checkpoint_dir>/offline.ckpt`` every ``checkpoint_every``
            iterations and resume from it.
        return_result: return the :class:`~nemic.train.loop.FitResult` instead of ``(net, history)``.

    Returns:
        ``(trained net, loss history)`` (or the ``FitResult``).
    """
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
        raise DataError(f"inputs and targets need the same number of samples, got shapes {inputs.shape} "
                        f"and {targets.shape}")
    if inputs.shape[0] == 0:
        raise DataError("no training samples")
    if n_iters < 1 or batch_size < 1:
        raise ConfigError(f"n_iters and batch_size must be >= 1, got {n_iters}, {batch_size}")
    check_finite("training inputs", inputs)
    check_finite("training targets", targets)
    optimizer = optimizer or default_optimizer(learning_rate, n_iters)
    sampler = MinibatchSampler(inputs, targets, min(batch_size, inputs.shape[0]))

    def batch_loss(model, batch, key):
        x, y = batch
        return loss(jax.vmap(model)(x), y)

    ckpt = TrainCheckpoint(Path(checkpoint_dir) / "offline.ckpt") if checkpoint_dir else None
    result = fit(net, batch_loss, sampler, optimizer=optimizer, n_iters=n_iters, key=key, filter_spec=filter_spec,
                 extra_terms=extra_terms, ema_decay=ema_decay, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                 progress=progress, description="offline training")
    return result if return_result else (result.model, result.history)

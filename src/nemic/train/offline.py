"""Offline training: supervised regression of a network on diagnosed targets (e.g. subgrid tendencies)."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError, check_finite
from nemic.train.checkpoint import TrainCheckpoint
from nemic.train.loop import default_optimizer, train_loop
from nemic.train.losses import mse


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
    optimizer: Any = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 500,
) -> tuple[Any, list[float]]:
    """Fit ``net(inputs[i]) ~ targets[i]`` by minibatch gradient descent.

    Args:
        net: a callable Equinox module mapping one sample to one prediction.
        inputs, targets: arrays with a leading sample axis of equal length N.
        n_iters, batch_size, learning_rate: optimisation settings (Adam, cosine decay, clipping by default).
        key: PRNG key for the minibatches.
        checkpoint_dir: if given, save every ``checkpoint_every`` iterations there and resume from it.

    Returns:
        ``(trained net, loss history)``.
    """
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.shape[0] != targets.shape[0]:
        raise DataError(f"inputs and targets need the same number of samples, got {inputs.shape[0]} "
                        f"and {targets.shape[0]}")
    if inputs.shape[0] == 0:
        raise DataError("no training samples")
    if n_iters < 1 or batch_size < 1:
        raise ConfigError(f"n_iters and batch_size must be >= 1, got {n_iters}, {batch_size}")
    check_finite("training inputs", inputs)
    check_finite("training targets", targets)
    optimizer = optimizer or default_optimizer(learning_rate, n_iters)
    n = inputs.shape[0]
    bs = min(batch_size, n)

    def make_batch(k, _):
        idx = jax.random.choice(k, n, (bs,), replace=False)
        return inputs[idx], targets[idx]

    def loss_fn(model, batch):
        x, y = batch
        return loss(jax.vmap(model)(x), y)

    opt_state, start, history = None, 0, []
    ckpt = TrainCheckpoint(checkpoint_dir, "offline") if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        opt_like = optimizer.init(eqx.filter(net, eqx.is_inexact_array))
        start, net, opt_state, history, _ = ckpt.load(net, opt_like)
    net, _, history = train_loop(net, loss_fn, make_batch, optimizer=optimizer, n_iters=n_iters, key=key,
                                 opt_state=opt_state, start=start, history=history, progress=progress,
                                 description="offline training", checkpoint=ckpt,
                                 checkpoint_every=checkpoint_every)
    return net, history

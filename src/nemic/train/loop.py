"""The generic training loop shared by offline and online training.

``loss_fn(model, batch) -> scalar`` is differentiated with ``equinox.filter_value_and_grad`` (every inexact array
leaf of ``model`` is trained; use ``jax.lax.stop_gradient`` inside a module for fixed arrays) and the update is
applied with an Optax optimiser. The loop shows a Rich progress bar with the running loss, checkpoints to a
:class:`~nemic.train.checkpoint.TrainCheckpoint` every ``checkpoint_every`` iterations and resumes from it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import equinox as eqx
import jax
import numpy as np
import optax

from nemic.core.errors import NemicError
from nemic.core.progress import progress_bar
from nemic.train.checkpoint import TrainCheckpoint


class TrainingDivergedError(NemicError):
    """The training loss became NaN or inf."""


def default_optimizer(learning_rate: float = 1e-3, n_iters: int | None = None, clip: float = 1.0):
    """Adam with global-norm gradient clipping and, if ``n_iters`` is given, a cosine-decayed learning rate."""
    lr = optax.cosine_decay_schedule(learning_rate, max(n_iters, 1), alpha=0.05) if n_iters else learning_rate
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))


def make_step(loss_fn: Callable[[Any, Any], jax.Array], optimizer: optax.GradientTransformation):
    """A jitted ``(model, opt_state, batch) -> (model, opt_state, loss)`` update."""

    @eqx.filter_jit
    def step(model, opt_state, batch):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def train_loop(
    model: Any,
    loss_fn: Callable[[Any, Any], jax.Array],
    make_batch: Callable[[jax.Array, int], Any],
    *,
    optimizer: optax.GradientTransformation,
    n_iters: int,
    key: jax.Array,
    opt_state: Any = None,
    start: int = 0,
    history: list[float] | None = None,
    progress: bool = True,
    description: str = "training",
    checkpoint: TrainCheckpoint | None = None,
    checkpoint_every: int = 200,
    checkpoint_info: dict | None = None,
) -> tuple[Any, Any, list[float]]:
    """Run iterations ``start .. n_iters - 1``; return ``(model, opt_state, loss history)``.

    ``make_batch(key, iteration)`` draws the batch of one iteration (the key is folded with the iteration number,
    so a resumed run draws the same batches as an uninterrupted one). It is jitted, so it must be traceable
    (``iteration`` arrives as a traced integer).
    """
    history = list(history or [])
    if opt_state is None:
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(loss_fn, optimizer)
    # sampling a batch is a handful of small array ops: run eagerly they cost more than a small model's update
    make_batch = jax.jit(make_batch)
    with progress_bar(progress) as pb:
        task = pb.add_task(description, total=n_iters, completed=start, info="")
        for it in range(start, n_iters):
            batch = make_batch(jax.random.fold_in(key, it), it)
            model, opt_state, loss = step(model, opt_state, batch)
            loss = float(loss)
            if not math.isfinite(loss):
                if checkpoint is not None and checkpoint.exists():
                    hint = f"; the last good state is saved in {checkpoint.dir}"
                else:
                    hint = ""
                raise TrainingDivergedError(f"{description}: loss became {loss} at iteration {it}{hint}")
            history.append(loss)
            if it % 10 == 0 or it == n_iters - 1:
                pb.update(task, completed=it + 1, info=f"loss {np.mean(history[-10:]):.4g}")
            if checkpoint is not None and ((it + 1) % checkpoint_every == 0 or it + 1 == n_iters):
                checkpoint.save(it + 1, model, opt_state, history, checkpoint_info)
    return model, opt_state, history

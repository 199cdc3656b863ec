"""Online training: fit a model's trainable part through rollouts of the solver against a reference trajectory.

The loss of a window is the mean squared difference between an ``n``-step rollout of the hybrid model started
from the reference state and the next ``n`` reference states; gradients flow through every step of the solver
(optionally with nested ``jax.checkpoint``). A rollout-length *curriculum* starts with short windows and lengthens
them, which keeps early gradients informative and late training faithful to long-range behaviour (as in
Kochkov et al. 2024, Nature 632, 1060-1066, and Frezat et al. 2022, JAMES 14, doi:10.1029/2022MS003124).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError, check_finite
from nemic.core.process import AbstractProcess
from nemic.core.rollout import rollout
from nemic.core.steppers import AbstractStepper
from nemic.train.checkpoint import TrainCheckpoint
from nemic.train.loop import default_optimizer, train_loop


def window_loss(model: AbstractProcess, stepper: AbstractStepper, window: Any, *, dt: float, n_steps: int,
                checkpoint: bool = False) -> jax.Array:
    """MSE between a rollout from ``window[0]`` and ``window[1:n_steps+1]`` (``window`` has a leading time axis)."""
    s0 = jax.tree_util.tree_map(lambda x: x[0], window)
    traj = rollout(model, stepper, s0, dt=dt, n_steps=n_steps, checkpoint=checkpoint, detect_blowup=False)
    sq = jax.tree_util.tree_map(lambda a, b: jnp.mean((a[1:] - b[1:n_steps + 1]) ** 2), traj.states, window)
    return sum(jax.tree_util.tree_leaves(sq)) / len(jax.tree_util.tree_leaves(sq))


def fit_online(
    trainable: Any,
    build_model: Callable[[Any], AbstractProcess],
    stepper: AbstractStepper,
    reference: Any,
    *,
    dt: float,
    curriculum: Sequence[tuple[int, int]] = ((5, 300), (10, 300), (20, 300)),
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    key: jax.Array,
    checkpoint_grad: bool = False,
    optimizer: Any = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 200,
) -> tuple[Any, list[float]]:
    """Train ``trainable`` so that rollouts of ``build_model(trainable)`` follow ``reference``.

    Args:
        trainable: the Equinox module holding the trained parameters (e.g. a ``NeuralTendency``).
        build_model: maps ``trainable`` to the full model, e.g. ``lambda c: physics + c``.
        stepper: the time stepper of the hybrid model.
        reference: a state pytree with a leading time axis of length T, spaced ``dt`` apart (the target
            trajectory, e.g. the coarse-grained truth).
        dt: timestep of the hybrid model, equal to the spacing of ``reference``.
        curriculum: ``(rollout length in steps, iterations)`` stages, run in order.
        batch_size: windows per iteration (drawn uniformly from the reference).
        checkpoint_grad: use nested ``jax.checkpoint`` in the rollouts (O(sqrt n) memory).
        checkpoint_dir: save training state there and resume from it.

    Returns:
        ``(trained module, loss history over all stages)``.
    """
    check_finite("reference trajectory", reference)
    T = jax.tree_util.tree_leaves(reference)[0].shape[0]
    if not curriculum:
        raise ConfigError("curriculum must have at least one (rollout_steps, iterations) stage")
    for n, it in curriculum:
        if n < 1 or it < 0:
            raise ConfigError(f"curriculum stages need rollout_steps >= 1 and iterations >= 0, got ({n}, {it})")
        if n + 1 > T:
            raise DataError(f"reference has {T} states, too short for {n}-step windows")
    total = sum(it for _, it in curriculum)
    optimizer = optimizer or default_optimizer(learning_rate, total)
    ckpt = TrainCheckpoint(checkpoint_dir, "online") if checkpoint_dir else None
    opt_state, done, history = None, 0, []
    if ckpt is not None and ckpt.exists():
        opt_like = optimizer.init(eqx.filter(trainable, eqx.is_inexact_array))
        done, trainable, opt_state, history, _ = ckpt.load(trainable, opt_like)

    end = 0
    for n_steps, iters in curriculum:
        start_stage, end = end, end + iters
        if done >= end:
            continue
        offsets = jnp.arange(n_steps + 1)

        def make_batch(k, _, n_steps=n_steps, offsets=offsets):
            starts = jax.random.randint(k, (batch_size,), 0, T - n_steps)
            idx = starts[:, None] + offsets[None, :]
            return jax.tree_util.tree_map(lambda x: x[idx], reference)

        def loss_fn(module, windows, n_steps=n_steps):
            model = build_model(module)
            losses = jax.vmap(lambda w: window_loss(model, stepper, w, dt=dt, n_steps=n_steps,
                                                    checkpoint=checkpoint_grad))(windows)
            return jnp.mean(losses)

        trainable, opt_state, history = train_loop(
            trainable, loss_fn, make_batch, optimizer=optimizer, n_iters=end, key=key, opt_state=opt_state,
            start=max(done, start_stage), history=history, progress=progress,
            description=f"online training ({n_steps}-step rollouts)", checkpoint=ckpt,
            checkpoint_every=checkpoint_every,
        )
        done = end
    return trainable, history

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
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite
from nemic.core.process import AbstractProcess
from nemic.core.rollout import rollout
from nemic.core.steppers import AbstractStepper
from nemic.train.checkpoint import TrainCheckpoint
from nemic.train.loop import default_optimizer, train_loop


class _TimeShifted(AbstractProcess):
    """``process`` seen from a clock that starts at ``offset``: tendency(state, t) = process(state, t - offset)."""

    process: AbstractProcess
    offset: Any

    def tendency(self, state: Any, t: Any) -> Any:
        return self.process.tendency(state, t - self.offset)


def window_loss(model: AbstractProcess, stepper: AbstractStepper, window: Any, *, dt: float, n_steps: int,
                t0: Any = 0.0, checkpoint: bool = False, nudging_tau: Any = None) -> jax.Array:
    """MSE between a rollout from ``window[0]`` at time ``t0`` and ``window[1:n_steps+1]``.

    ``window`` is a state pytree with a leading time axis. With ``nudging_tau`` the rollout is nudged toward the
    window itself (:class:`~nemic.processes.nudging.Nudging`, relaxation time ``nudging_tau``), which keeps long
    training windows from drifting away while the loss still measures the model's own error.
    """
    s0 = jax.tree_util.tree_map(lambda x: x[0], window)
    if nudging_tau is not None:
        from nemic.processes.nudging import Nudging

        # the reference times must be concrete; the window's own start time t0 may be traced (vmap)
        nudge = Nudging(window, nudging_tau, times=np.arange(n_steps + 1) * dt)
        model = model + _TimeShifted(nudge, t0)
    traj = rollout(model, stepper, s0, dt=dt, n_steps=n_steps, t0=t0, checkpoint=checkpoint, detect_blowup=False)
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
    reference_times: Any = None,
    nudging_tau: float | None = None,
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
        checkpoint_grad: use blockwise ``jax.checkpoint`` in the rollouts (O(sqrt n) memory).
        reference_times: times of the reference states, shape (T,) (default ``arange(T) * dt``); each window's
            rollout starts at its own time, which matters for non-autonomous models (seasonal forcing).
        nudging_tau: if given, nudge every training rollout toward its window with this relaxation time.
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
    if nudging_tau is not None and not (float(nudging_tau) > 0):
        raise ConfigError(f"nudging_tau must be > 0, got {nudging_tau!r}")
    times = jnp.arange(T) * dt if reference_times is None else jnp.asarray(reference_times)
    if times.shape != (T,):
        raise DataError(f"reference_times must have shape ({T},), got {times.shape}")
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
            return jax.tree_util.tree_map(lambda x: x[idx], reference), times[starts]

        def loss_fn(module, batch, n_steps=n_steps):
            windows, t0s = batch
            model = build_model(module)
            losses = jax.vmap(lambda w, t0: window_loss(model, stepper, w, dt=dt, n_steps=n_steps, t0=t0,
                                                        checkpoint=checkpoint_grad, nudging_tau=nudging_tau))(
                windows, t0s)
            return jnp.mean(losses)

        trainable, opt_state, history = train_loop(
            trainable, loss_fn, make_batch, optimizer=optimizer, n_iters=end, key=key, opt_state=opt_state,
            start=max(done, start_stage), history=history, progress=progress,
            description=f"online training ({n_steps}-step rollouts)", checkpoint=ckpt,
            checkpoint_every=checkpoint_every,
        )
        done = end
    return trainable, history

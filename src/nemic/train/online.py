"""Online training: fit a model's trainable part through rollouts of the solver against a reference trajectory.

Built on :func:`~nemic.train.loop.fit` and :class:`~nemic.train.windows.WindowSampler`: each iteration draws
windows from the reference (saved every ``save_every`` model steps), rolls the hybrid model out from each window
start for ``n_saves * save_every`` steps at its own start time (``vmap`` over the batch, gradients through every
step, optionally with ``jax.checkpoint``), and scores the saved states against the window's targets with a
pluggable pure ``metric(prediction, target) -> scalar`` (mean squared error by default; a spectral or
climate-statistics loss plugs in the same way). A rollout-length *curriculum* starts with short windows and
lengthens them, which keeps early gradients informative and late training faithful to long-range behaviour
(Kochkov et al. 2024, Nature 632, 1060-1066, doi:10.1038/s41586-024-07744-y; Frezat et al. 2022, JAMES 14,
doi:10.1029/2022MS003124).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite
from nemic.core.process import AbstractProcess
from nemic.core.rollout import rollout
from nemic.core.steppers import AbstractStepper
from nemic.processes.nudging import Nudging
from nemic.train.checkpoint import TrainCheckpoint
from nemic.train.loop import FitResult, default_optimizer, fit
from nemic.train.losses import mse
from nemic.train.windows import Windows, WindowSampler

__all__ = ["fit_online", "rollout_windows", "window_loss"]

Metric = Callable[[Any, Any], jax.Array]


class _TimeShifted(AbstractProcess):
    """``process`` seen from a clock that starts at ``offset``: tendency(state, t) = process(state, t - offset)."""

    process: AbstractProcess
    offset: Any

    def tendency(self, state: Any, t: Any, key: Any = None) -> Any:
        return self.process.tendency(state, t - self.offset)


def rollout_windows(model: AbstractProcess, stepper: AbstractStepper, windows: Windows, *, dt: float,
                    save_every: int = 1, checkpoint: bool = False, nudging_tau: Any = None,
                    key: jax.Array | None = None) -> Any:
    """Roll ``model`` out from every window start; return the saved states (B, n, ...) aligned with the targets.

    Each rollout starts at its window's ``t0`` and runs ``n * save_every`` steps of size ``dt``, saving every
    ``save_every`` steps. With ``nudging_tau`` it is nudged toward its own window
    (:class:`~nemic.processes.nudging.Nudging`, relaxation time ``nudging_tau``), which keeps long windows from
    drifting away while the loss still measures the model's own error. ``key`` (split over the batch) reaches
    stochastic processes through the rollout.
    """
    n = jax.tree_util.tree_leaves(windows.target)[0].shape[1]
    n_b = windows.t0.shape[0]

    def one(s0, target, t0, k):
        m = model
        if nudging_tau is not None:
            full = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), s0, target)
            # the reference times must be concrete; the window's own start time t0 may be traced (vmap)
            nudge = Nudging(full, nudging_tau, times=np.arange(n + 1) * (save_every * dt))
            m = model + _TimeShifted(nudge, t0)
        kw = {} if k is None else {"key": k}
        traj = rollout(m, stepper, s0, dt=dt, n_steps=n * save_every, save_every=save_every, t0=t0,
                       checkpoint=checkpoint, detect_blowup=False, **kw)
        return jax.tree_util.tree_map(lambda x: x[1:], traj.states)

    keys = None if key is None else jax.random.split(key, n_b)
    if keys is None:
        return jax.vmap(lambda s, y, t: one(s, y, t, None))(windows.start, windows.target, windows.t0)
    return jax.vmap(one)(windows.start, windows.target, windows.t0, keys)


def window_loss(model: AbstractProcess, stepper: AbstractStepper, windows: Windows, *, dt: float,
                save_every: int = 1, metric: Metric = mse, checkpoint: bool = False, nudging_tau: Any = None,
                key: jax.Array | None = None) -> jax.Array:
    """``metric(rollouts from the window starts, window targets)``; see :func:`rollout_windows`."""
    pred = rollout_windows(model, stepper, windows, dt=dt, save_every=save_every, checkpoint=checkpoint,
                           nudging_tau=nudging_tau, key=key)
    return metric(pred, windows.target)


def fit_online(
    trainable: Any,
    build_model: Callable[[Any], AbstractProcess],
    stepper: AbstractStepper,
    reference: Any,
    *,
    dt: float,
    save_every: int = 1,
    curriculum: Sequence[tuple[int, int]] = ((5, 300), (10, 300), (20, 300)),
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    key: jax.Array,
    loss: Metric = mse,
    extra_terms: Sequence[tuple[float, Callable]] = (),
    filter_spec: Any = eqx.is_inexact_array,
    ema_decay: float | None = None,
    stochastic: bool = False,
    checkpoint_grad: bool = False,
    reference_times: Any = None,
    nudging_tau: float | None = None,
    optimizer: Any = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 200,
    return_result: bool = False,
) -> tuple[Any, list[float]] | FitResult:
    """Train ``trainable`` so that rollouts of ``build_model(trainable)`` follow ``reference``.

    Args:
        trainable: the Equinox module holding the trained parameters (e.g. a ``NeuralTendency``).
        build_model: maps ``trainable`` to the full model, e.g. ``lambda c: physics + c``.
        stepper: the time stepper of the hybrid model.
        reference: a state pytree with a leading time axis of length T, saved every ``save_every`` model steps
            (``save_every * dt`` apart in time), e.g. the coarse-grained truth.
        dt: timestep of the hybrid model.
        save_every: model steps between two reference states (k).
        curriculum: ``(window length in reference saves, iterations)`` stages, run in order; a window of ``n``
            saves is ``n * save_every`` model steps.
        batch_size: windows per iteration (drawn uniformly from the reference).
        loss: pure ``metric(prediction, target) -> scalar`` on state pytrees with leaves (B, n, ...) (default
            :func:`~nemic.train.losses.mse`).
        extra_terms, filter_spec, ema_decay: as in :func:`~nemic.train.loop.fit` (``fn(trainable, windows, key)``).
        stochastic: pass a key to every rollout (for models with random processes).
        checkpoint_grad: use blockwise ``jax.checkpoint`` in the rollouts (O(sqrt n) memory).
        reference_times: times of the reference states, shape (T,) (default ``arange(T) * save_every * dt``).
        nudging_tau: if given, nudge every training rollout toward its window with this relaxation time.
        checkpoint_dir: save training state to ``<checkpoint_dir>/online.ckpt`` and resume from it.
        return_result: return the :class:`~nemic.train.loop.FitResult` (with EMA and aux history).

    Returns:
        ``(trained module, loss history over all stages)``, or the ``FitResult`` with ``return_result``.
    """
    check_finite("reference trajectory", reference)
    leaves = jax.tree_util.tree_leaves(reference)
    T = leaves[0].shape[0] if leaves and np.ndim(leaves[0]) else 0
    if not curriculum:
        raise ConfigError("curriculum must have at least one (rollout_saves, iterations) stage")
    if not isinstance(save_every, (int, np.integer)) or save_every < 1:
        raise ConfigError(f"save_every must be an integer >= 1, got {save_every!r}")
    for n, it in curriculum:
        if n < 1 or it < 0:
            raise ConfigError(f"curriculum stages need rollout_saves >= 1 and iterations >= 0, got ({n}, {it})")
        if n + 1 > T:
            raise DataError(f"reference has {T} states, too short for {n}-save windows")
    if nudging_tau is not None and not (float(nudging_tau) > 0):
        raise ConfigError(f"nudging_tau must be > 0, got {nudging_tau!r}")
    times = jnp.arange(T) * (save_every * dt) if reference_times is None else jnp.asarray(reference_times)
    if times.shape != (T,):
        raise DataError(f"reference_times must have shape ({T},), got {times.shape}")
    total = sum(it for _, it in curriculum)
    optimizer = optimizer or default_optimizer(learning_rate, total)
    ckpt = TrainCheckpoint(Path(checkpoint_dir) / "online.ckpt") if checkpoint_dir else None
    done = ckpt.step() if ckpt is not None and ckpt.exists() else 0

    def make_loss(metric: Metric) -> Callable:
        def window_batch_loss(module, windows, k):
            return window_loss(build_model(module), stepper, windows, dt=dt, save_every=save_every,
                               metric=metric, checkpoint=checkpoint_grad, nudging_tau=nudging_tau,
                               key=k if stochastic else None)

        return window_batch_loss

    result = FitResult(model=trainable, ema_model=None, opt_state=None, history=[], aux_history={}, step=0)
    ema = None
    end = 0
    for n_saves, iters in curriculum:
        start_stage, end = end, end + iters
        if done > end:  # finished before the interruption; the stage that holds ``done`` loads the checkpoint
            continue
        sampler = WindowSampler(reference, n_saves, batch_size, save_every=save_every, times=times)
        result = fit(result.model, make_loss(loss), sampler, optimizer=optimizer, n_iters=end, key=key,
                     filter_spec=filter_spec, extra_terms=extra_terms, ema_decay=ema_decay,
                     opt_state=result.opt_state, ema=ema, start=start_stage, history=result.history,
                     aux_history=result.aux_history, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                     progress=progress, description=f"online training ({n_saves}-save windows)")
        ema = eqx.filter(result.ema_model, filter_spec) if result.ema_model is not None else None
    if return_result:
        return result
    return result.model, result.history

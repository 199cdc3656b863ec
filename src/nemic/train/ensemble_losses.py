"""Training stochastic models with ensemble scores through rollouts of the solver.

Each iteration draws training windows from a reference trajectory (:class:`~nemic.train.windows.WindowSampler`),
runs ``n_members`` rollouts of the stochastic model from every window start with independent keys, and scores the
ensemble of saved states against the window's targets with a proper score: the fair CRPS (pointwise, Ferro 2014,
Q. J. R. Meteorol. Soc. 140, 1917, doi:10.1002/qj.2270) or the fair energy score (over the last axis, Gneiting &
Raftery 2007, doi:10.1198/016214506000001437). A proper score is minimised in expectation only by the true
distribution, so the model learns both its mean and its spread; with the fair estimators two members already
give an unbiased score (NeuralGCM's 2-member CRPS training, Kochkov et al. 2024, Nature 632, 1060,
doi:10.1038/s41586-024-07744-y).

:func:`fit_ensemble` runs the one training loop (:func:`~nemic.train.loop.fit`) stage by stage over a
rollout-length curriculum. Deterministic pre-training then stochastic fine-tuning is two calls: train the
deterministic closure with :func:`~nemic.train.online.fit_online` (MSE), build the stochastic closure from it
(e.g. :meth:`nemic.processes.stochastic.NoisyStencilMLP.from_deterministic`) and fine-tune it with
:func:`fit_ensemble`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite, check_int_at_least
from nemic.core.process import AbstractProcess
from nemic.core.steppers import AbstractStepper
from nemic.metrics.probabilistic import crps_ensemble, energy_score
from nemic.train.checkpoint import TrainCheckpoint
from nemic.train.loop import FitResult, default_optimizer, fit
from nemic.train.online import rollout_windows
from nemic.train.windows import Windows, WindowSampler

__all__ = ["SCORES", "crps_loss", "energy_score_loss", "ensemble_rollout_windows", "ensemble_window_loss",
           "fit_ensemble"]


def crps_loss(ensemble: Any, target: Any) -> jax.Array:
    """Fair CRPS of an ensemble of state pytrees (leaves (M, ...)) against a target (leaves (...)), averaged over
    all points of each leaf and summed over leaves. Needs M >= 2."""
    e_leaves, t_leaves = jax.tree_util.tree_leaves(ensemble), jax.tree_util.tree_leaves(target)
    return sum(jnp.mean(crps_ensemble(e, t, fair=True)) for e, t in zip(e_leaves, t_leaves))


def energy_score_loss(ensemble: Any, target: Any) -> jax.Array:
    """Fair energy score over the last axis of every leaf (e.g. the K sites of Lorenz-96), averaged over the other
    axes and summed over leaves. Needs M >= 2."""
    e_leaves, t_leaves = jax.tree_util.tree_leaves(ensemble), jax.tree_util.tree_leaves(target)
    return sum(jnp.mean(energy_score(e, t, fair=True)) for e, t in zip(e_leaves, t_leaves))


#: ensemble scores by name
SCORES: dict[str, Callable[[Any, Any], jax.Array]] = {"crps": crps_loss, "energy": energy_score_loss}


def _score(score: str | Callable) -> Callable:
    if callable(score):
        return score
    try:
        return SCORES[score]
    except KeyError:
        raise ConfigError(f"unknown ensemble score {score!r}; choose one of {sorted(SCORES)} or pass a function")


def ensemble_rollout_windows(model: AbstractProcess, stepper: AbstractStepper, windows: Windows, *,
                             n_members: int, key: jax.Array, dt: float, save_every: int = 1,
                             checkpoint: bool | int = False) -> Any:
    """``n_members`` rollouts of ``model`` from every window start with independent keys.

    Returns the saved states with leaves (M, B, n, ...), aligned with ``windows.target`` (B, n, ...).
    """
    keys = jax.random.split(key, n_members)
    return jax.vmap(lambda k: rollout_windows(model, stepper, windows, dt=dt, save_every=save_every,
                                              checkpoint=checkpoint, key=k))(keys)


def ensemble_window_loss(model: AbstractProcess, stepper: AbstractStepper, windows: Windows, *, n_members: int,
                         key: jax.Array, dt: float, save_every: int = 1, score: str | Callable = "crps",
                         checkpoint: bool | int = False) -> jax.Array:
    """The ensemble score of ``n_members`` rollouts from the window starts against the window targets."""
    pred = ensemble_rollout_windows(model, stepper, windows, n_members=n_members, key=key, dt=dt,
                                    save_every=save_every, checkpoint=checkpoint)
    return _score(score)(pred, windows.target)


def fit_ensemble(
    trainable: Any,
    build_model: Callable[[Any], AbstractProcess],
    stepper: AbstractStepper,
    reference: Any,
    *,
    dt: float,
    key: jax.Array,
    n_members: int = 2,
    score: str | Callable = "crps",
    save_every: int = 1,
    curriculum: Sequence[tuple[int, int]] = ((5, 200), (10, 200), (20, 200)),
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    extra_terms: Sequence[tuple[float, Callable]] = (),
    filter_spec: Any = eqx.is_inexact_array,
    ema_decay: float | None = None,
    checkpoint_grad: bool | int = False,
    reference_times: Any = None,
    optimizer: Any = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 200,
) -> FitResult:
    """Train ``trainable`` so that ensembles of ``build_model(trainable)`` score well against ``reference``.

    Args:
        trainable: the Equinox module holding the trained parameters (e.g. a ``StochasticNeuralClosure``).
        build_model: maps ``trainable`` to the full stochastic model, e.g. ``lambda c: physics + c``.
        stepper: time stepper.
        reference: state pytree with a leading time axis of length T, saved every ``save_every`` model steps.
        dt: model timestep. key: the run's key (batches, and every member's noise).
        n_members: ensemble size per window (>= 2; 2 is NeuralGCM's choice).
        score: ``"crps"`` (fair CRPS), ``"energy"`` (fair energy score over the last axis) or a function
            ``score(ensemble, target)`` with ensemble leaves (M, B, n, ...) and target leaves (B, n, ...).
        curriculum: ``(window length in reference saves, iterations)`` stages run in order.
        batch_size: windows per iteration.
        extra_terms, filter_spec, ema_decay, optimizer, progress: as in :func:`~nemic.train.loop.fit`.
        checkpoint_grad: ``jax.checkpoint`` levels in the rollouts.
        reference_times: times of the reference states (default ``arange(T) * save_every * dt``).
        checkpoint_dir: checkpoint to ``<checkpoint_dir>/ensemble.ckpt`` and resume from it.

    Returns:
        The :class:`~nemic.train.loop.FitResult` of the whole curriculum.
    """
    check_int_at_least("n_members", n_members, 2)
    check_int_at_least("save_every", save_every, 1)
    check_finite("reference trajectory", reference)
    scorer = _score(score)
    leaves = jax.tree_util.tree_leaves(reference)
    T = leaves[0].shape[0] if leaves and np.ndim(leaves[0]) else 0
    if not curriculum:
        raise ConfigError("curriculum must have at least one (rollout_saves, iterations) stage")
    for n, it in curriculum:
        if n < 1 or it < 0:
            raise ConfigError(f"curriculum stages need rollout_saves >= 1 and iterations >= 0, got ({n}, {it})")
        if n + 1 > T:
            raise DataError(f"reference has {T} states, too short for {n}-save windows")
    times = jnp.arange(T) * (save_every * dt) if reference_times is None else jnp.asarray(reference_times)
    total = sum(it for _, it in curriculum)
    optimizer = optimizer or default_optimizer(learning_rate, total)
    ckpt = TrainCheckpoint(Path(checkpoint_dir) / "ensemble.ckpt") if checkpoint_dir else None
    done = ckpt.step() if ckpt is not None and ckpt.exists() else 0

    def loss(module, windows, k):
        return ensemble_window_loss(build_model(module), stepper, windows, n_members=n_members, key=k, dt=dt,
                                    save_every=save_every, score=scorer, checkpoint=checkpoint_grad)

    result = FitResult(model=trainable, ema_model=None, opt_state=None, history=[], aux_history={}, step=0)
    ema, end = None, 0
    for n_saves, iters in curriculum:
        start, end = end, end + iters
        if done > end:
            continue
        sampler = WindowSampler(reference, n_saves, batch_size, save_every=save_every, times=times)
        result = fit(result.model, loss, sampler, optimizer=optimizer, n_iters=end, key=key,
                     filter_spec=filter_spec, extra_terms=extra_terms, ema_decay=ema_decay,
                     opt_state=result.opt_state, ema=ema, start=start, history=result.history,
                     aux_history=result.aux_history, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                     progress=progress, description=f"ensemble training ({n_members} members, {n_saves}-save windows)")
        ema = eqx.filter(result.ema_model, filter_spec) if result.ema_model is not None else None
    return result

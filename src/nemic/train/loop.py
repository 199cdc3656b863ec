"""The one training loop of nemic: :func:`fit`.

Every training in nemic (offline regression, online training through rollouts, the EBM hybrid, the Minkowski
surrogate) is ``fit(model, loss, sample, ...)``:

* ``loss(model, batch, key) -> scalar`` or ``-> (scalar, aux dict)`` is a pure function (traced under ``jit``);
* ``sample(key, iteration) -> batch`` draws the batch of one iteration; its key is
  ``fold_in(key, iteration)``, so a resumed run draws the same batches as an uninterrupted one (``iteration``
  arrives traced; a sampler that is an ``eqx.Module`` has its arrays passed as arguments, not baked into the
  compiled code, e.g. :class:`~nemic.train.windows.WindowSampler`); a sampler with ``on_host = True`` (one that
  reads files, e.g. :class:`~nemic.data.streaming.StreamingWindowSampler`) is called outside ``jit`` with the
  iteration as an ``int`` and its batch is put on the device;
* ``filter_spec`` chooses the trained leaves exactly as in ``equinox.partition`` (a callable on leaves, or a
  pytree of bools with the model's structure), so physics parameters can be frozen while network weights train;
  frozen leaves get no gradient and come back bit-for-bit unchanged;
* ``extra_terms``: ``(weight, fn)`` pairs with ``fn(model, batch, key) -> scalar`` added to the loss
  (regularisers, climate statistics); their values are recorded in ``aux_history`` as ``extra0``, ``extra1``...;
* ``ema_decay``: an exponential moving average of the trained leaves, ``ema <- d ema + (1 - d) params`` after each
  update, started at the initial parameters and without bias correction (``optax.ema(decay, debias=False)``
  applied to the parameters; Polyak & Juditsky 1992, SIAM J. Control Optim. 30, 838-855,
  doi:10.1137/0330046); returned as ``FitResult.ema_model``;
* a NaN/inf loss, gradient norm or updated weight stops the loop with a one-line
  :class:`TrainingDivergedError` naming the iteration and the quantity, before anything of that iteration is
  saved;
* a :class:`~nemic.train.checkpoint.TrainCheckpoint` every ``checkpoint_every`` iterations (model, optimiser
  state, EMA, history, key in one file); with ``resume=True`` the loop continues from it, bit-identical to an
  uninterrupted run;
* a Rich progress bar with the running mean of the last 10 losses;
* ``mesh`` (:func:`nemic.parallel.make_mesh`): data parallelism on a device mesh. The trained and frozen
  parameters, the optimiser state, the EMA and the sampler's arrays are replicated, each batch's leading axis is
  split over the mesh's ``batch_axes`` as it is drawn, and XLA's partitioner sums the gradients over devices (no
  hand-written reduction); the same code runs on one device, several, or several processes.

The optimiser is any Optax ``GradientTransformation`` (Kingma & Ba 2015, Adam, arXiv:1412.6980, by default).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nemic.core.errors import ConfigError, NemicError
from nemic.io.terminal import progress_bar
from nemic.parallel.mesh import batch_sharding, check_divides, replicate, replicated, shard_batch
from nemic.train.checkpoint import CheckpointError, TrainCheckpoint

__all__ = ["FitResult", "TrainingDivergedError", "default_optimizer", "fit", "train_loop"]

Loss = Callable[[Any, Any, jax.Array], Any]
Sampler = Callable[[jax.Array, jax.Array], Any]


class TrainingDivergedError(NemicError):
    """The training loss, the gradient norm or the updated weights became NaN or inf."""


def default_optimizer(learning_rate: float = 1e-3, n_iters: int | None = None, clip: float = 1.0):
    """Adam with global-norm gradient clipping and, if ``n_iters`` is given, a cosine-decayed learning rate.

    Kingma & Ba (2015), arXiv:1412.6980; Loshchilov & Hutter (2017), SGDR, arXiv:1608.03983 (cosine decay).
    """
    lr = optax.cosine_decay_schedule(learning_rate, max(n_iters, 1), alpha=0.05) if n_iters else learning_rate
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (trained leaves updated, frozen leaves as given).
        ema_model: the model with the EMA of the trained leaves (``None`` without ``ema_decay``).
        opt_state: the optimiser state (to continue training).
        history: total loss per iteration, from iteration 0 (also across a resume).
        aux_history: scalar auxiliary outputs of the loss and the extra terms per iteration, by name.
        step: number of iterations done.
    """

    model: Any
    ema_model: Any
    opt_state: Any
    history: list[float]
    aux_history: dict[str, list[float]]
    step: int

    @property
    def ema(self) -> Any:
        return self.ema_model


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _total_loss(loss: Loss, extra_terms: Sequence[tuple[float, Callable]]):
    def total(params, static, batch, key):
        model = eqx.combine(params, static)
        out = loss(model, batch, key)
        value, aux = (out[0], dict(out[1])) if isinstance(out, tuple) else (out, {})
        if extra_terms:
            aux["loss"] = value
            for i, (w, fn) in enumerate(extra_terms):
                v = fn(model, batch, key)
                aux[f"extra{i}"] = v
                value = value + w * v
        return value, aux

    return total


def make_step(loss: Loss, optimizer: optax.GradientTransformation, *,
              extra_terms: Sequence[tuple[float, Callable]] = (), ema_decay: float | None = None, mesh: Any = None):
    """A jitted update ``(params, static, opt_state, ema, batch, key) -> (params, opt_state, ema, stats)``.

    ``stats`` = (loss, aux dict, gradient global norm, all updated weights finite). With ``mesh`` the updated
    parameters, optimiser state and EMA are constrained to stay replicated on it.
    """
    grad_fn = eqx.filter_value_and_grad(_total_loss(loss, tuple(extra_terms)), has_aux=True)

    @eqx.filter_jit
    def step(params, static, opt_state, ema, batch, key):
        (value, aux), grads = grad_fn(params, static, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        new = eqx.apply_updates(params, updates)
        if ema_decay is not None:
            ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, new)
        if mesh is not None:
            new, opt_state, ema = jax.lax.with_sharding_constraint((new, opt_state, ema), replicated(mesh))
        return new, opt_state, ema, (value, aux, optax.tree.norm(grads), _all_finite(new))

    return step


@eqx.filter_jit
def _draw(sample, key, iteration):
    return sample(key, iteration)


def _sharded_draw(mesh, batch_axes):
    """``_draw`` whose batch comes out with its leading axis split over ``batch_axes`` of ``mesh``."""

    @eqx.filter_jit
    def draw(sample, key, iteration):
        batch = sample(key, iteration)
        return jax.tree_util.tree_map(
            lambda x: jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim, axes=batch_axes))
            if eqx.is_array(x) and x.ndim else x, batch)

    return draw


def _host_draw(mesh, batch_axes):
    """The draw of a host sampler: called with a Python ``int`` iteration, its batch put on the device(s)."""

    def draw(sample, key, iteration):
        batch = sample(key, int(iteration))
        return jax.device_put(batch) if mesh is None else shard_batch(batch, mesh, axes=batch_axes)

    return draw


def _check_batch(sample, key, mesh, batch_axes) -> None:
    """One-line ConfigError unless the mesh's batch axes divide the batch's leading axis (checked abstractly)."""
    shapes = eqx.filter_eval_shape(sample, key, jnp.asarray(0, jnp.int32))
    for x in jax.tree_util.tree_leaves(shapes):
        if hasattr(x, "shape"):
            check_divides(mesh, batch_axes, int(x.shape[0]) if len(x.shape) else 1, "batch elements")


def fit(
    model: Any,
    loss: Loss,
    sample: Sampler,
    *,
    optimizer: optax.GradientTransformation,
    n_iters: int,
    key: jax.Array,
    filter_spec: Any = eqx.is_inexact_array,
    extra_terms: Sequence[tuple[float, Callable]] = (),
    ema_decay: float | None = None,
    opt_state: Any = None,
    ema: Any = None,
    start: int = 0,
    history: list[float] | None = None,
    aux_history: dict[str, list[float]] | None = None,
    checkpoint: TrainCheckpoint | str | Path | None = None,
    checkpoint_every: int = 200,
    checkpoint_info: dict | None = None,
    resume: bool = True,
    progress: bool = True,
    description: str = "training",
    callback: Callable[[int, float], None] | None = None,
    mesh: Any = None,
    batch_axes: str | Sequence[str] = "batch",
) -> FitResult:
    """Run iterations ``start .. n_iters - 1`` of gradient descent on ``loss``; see the module docs.

    Args:
        model: the Equinox module (pytree) to train.
        loss: ``loss(model, batch, key) -> scalar | (scalar, aux)``, pure.
        sample: ``sample(key, iteration) -> batch``, traceable.
        optimizer: an Optax transformation (e.g. :func:`default_optimizer`).
        n_iters: total number of iterations (the loop ends at ``n_iters``; a resumed run counts from 0 too).
        key: the run's ``jax.random`` key; iteration ``i`` uses ``fold_in(key, i)`` for its batch and
            ``fold_in(fold_in(key, i), 1)`` for the loss.
        filter_spec: which leaves train (``equinox.partition`` semantics); default every inexact array.
        extra_terms: ``(weight, fn)`` pairs added to the loss, ``fn(model, batch, key) -> scalar``.
        ema_decay: decay ``d`` in [0, 1) of an EMA of the trained leaves, or ``None``.
        opt_state, ema, start, history, aux_history: state to continue from (e.g. the previous stage of a
            curriculum); ``opt_state``/``ema`` default to fresh ones.
        checkpoint: a :class:`TrainCheckpoint` or a file path; saved every ``checkpoint_every`` iterations and
            at the end, and (with ``resume``) loaded first if it exists and its step lies in
            ``[start, n_iters]``.
        checkpoint_info: free JSON stored with every checkpoint.
        progress: show a Rich progress bar. description: its label and the prefix of error messages.
        callback: ``callback(iteration, loss)`` after each successful iteration.
        mesh: a ``jax.sharding.Mesh`` (:func:`nemic.parallel.make_mesh`) for data-parallel training, or ``None``.
        batch_axes: the mesh axis (or axes) that split each batch's leading axis.

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingDivergedError: a NaN/inf loss, gradient norm or updated weight (one line: iteration, quantity).
    """
    if not isinstance(n_iters, (int, np.integer)) or n_iters < 0:
        raise ConfigError(f"n_iters must be an integer >= 0, got {n_iters!r}")
    if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if ema_decay is not None and not (0.0 <= float(ema_decay) < 1.0):
        raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
    for term in extra_terms:
        if not (isinstance(term, tuple) and len(term) == 2 and callable(term[1])):
            raise ConfigError(f"extra_terms must be (weight, fn) pairs, got {term!r}")
    ckpt = TrainCheckpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    params, static = eqx.partition(model, filter_spec)
    if opt_state is None:
        opt_state = optimizer.init(params)
    if ema_decay is not None and ema is None:
        ema = params
    ema = ema if ema_decay is not None else None
    history = list(history or [])
    aux_history = {k: list(v) for k, v in (aux_history or {}).items()}

    if ckpt is not None and resume and ckpt.exists():
        saved_step = ckpt.step()
        if saved_step > n_iters:
            raise CheckpointError(f"'{ckpt.path}' is at iteration {saved_step}, past this training's end "
                                  f"({n_iters}); delete it to start again")
        if saved_step >= start:
            state = ckpt.load(model, opt_state, ema, key=key)
            model, opt_state, ema = state["model"], state["opt_state"], state["ema"]
            history, aux_history, start = state["history"], state["aux_history"], state["step"]
            params, static = eqx.partition(model, filter_spec)

    on_host = bool(getattr(sample, "on_host", False))
    draw = _host_draw(mesh, batch_axes) if on_host else _draw
    if mesh is not None:
        if not on_host:
            _check_batch(sample, key, mesh, batch_axes)
            draw = _sharded_draw(mesh, batch_axes)
        params, static, opt_state, ema, sample, key = replicate((params, static, opt_state, ema, sample, key), mesh)
    step = make_step(loss, optimizer, extra_terms=extra_terms, ema_decay=ema_decay, mesh=mesh)
    last_saved = None
    with progress_bar(progress) as pb:
        task = pb.add_task(description, total=n_iters, completed=start, info="")
        for it in range(start, n_iters):
            k_it = jax.random.fold_in(key, it)
            batch = draw(sample, k_it, it if on_host else jnp.asarray(it, jnp.int32))
            new, new_opt, new_ema, (value, aux, gnorm, ok) = step(params, static, opt_state, ema, batch,
                                                                  jax.random.fold_in(k_it, 1))
            # the shown and checked scalars come to the host in one transfer; weights stay on the device
            aux = {name: v for name, v in aux.items() if jnp.ndim(v) == 0}
            value, gnorm, ok, aux = jax.device_get((value, gnorm, ok, aux))
            value, gnorm, ok = float(value), float(gnorm), bool(ok)
            bad = (f"loss became {value}" if not math.isfinite(value) else
                   f"gradient norm became {gnorm}" if not math.isfinite(gnorm) else
                   "updated weights became NaN/inf (learning rate?)" if not ok else None)
            if bad is not None:
                where = (f"; the last good state (iteration {last_saved}) is in '{ckpt.path}'"
                         if last_saved is not None else "; nothing of this training was saved"
                         if ckpt is None or not ckpt.exists() else f"; '{ckpt.path}' holds an earlier good state")
                raise TrainingDivergedError(f"{description}: {bad} at iteration {it}{where}")
            params, opt_state, ema = new, new_opt, new_ema
            history.append(value)
            for name, v in aux.items():
                aux_history.setdefault(name, []).append(float(v))
            if callback is not None:
                callback(it, value)
            if it % 10 == 0 or it == n_iters - 1:
                pb.update(task, completed=it + 1, info=f"loss {np.mean(history[-10:]):.4g}")
            if ckpt is not None and ((it + 1) % checkpoint_every == 0 or it + 1 == n_iters):
                ckpt.save(it + 1, eqx.combine(params, static), opt_state, history, ema=ema, key=key,
                          aux_history=aux_history, info=checkpoint_info)
                last_saved = it + 1
    model = eqx.combine(params, static)
    ema_model = eqx.combine(ema, static) if ema is not None else None
    return FitResult(model=model, ema_model=ema_model, opt_state=opt_state, history=history,
                     aux_history=aux_history, step=max(start, n_iters))


#: the loop's name before it took a key in the loss; same function
train_loop = fit

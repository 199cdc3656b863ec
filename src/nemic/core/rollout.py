"""Rollouts: many steps of a stepper as one ``lax.scan``, saving every ``save_every`` steps.

Two entry points:

* :func:`rollout` is a pure function: jit it, ``vmap`` it over initial states (ensembles), differentiate it.
  With ``checkpoint=True`` the scan is split into blocks of about sqrt(n) steps, each wrapped in
  ``jax.checkpoint``, so reverse-mode memory grows like sqrt(n) instead of n (Griewank & Walther 2000,
  ACM TOMS 26, 19-45, doi:10.1145/347837.347846) at the price of one extra forward pass.
* :func:`simulate` is the host-side driver for long runs: it runs the pure rollout in segments under a Rich
  progress bar, and when a state becomes NaN/inf it replays the bad segment step by step to name the exact step
  and variable, and raises :class:`~nemic.core.errors.BlowUpError` carrying the trajectory up to the last finite
  saved state (or returns that trajectory with ``on_blowup="truncate"``).

Blow-up detection inside :func:`rollout` is at the granularity of saves: once a saved state is not finite the
state is frozen at the last finite one and ``Trajectory.blowup_step`` records the number of steps completed before
the bad block (``-1`` if none), so a jitted or differentiated rollout never propagates NaN into later saves.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import BlowUpError, ConfigError, check_dt, check_finite, is_concrete
from nemic.core.process import AbstractProcess, PyTree
from nemic.core.progress import progress_bar
from nemic.core.steppers import AbstractStepper


class Trajectory(eqx.Module):
    """Saved states of a rollout.

    Attributes:
        t: times of the saved states, shape (n_saved,) (the initial state is included).
        states: the state pytree with a leading axis of length n_saved.
        blowup_step: number of completed steps before the first block whose result was not finite, or -1.
            Shape () (or the batch shape under ``vmap``).
    """

    t: jax.Array
    states: PyTree
    blowup_step: jax.Array

    def __len__(self) -> int:
        return int(self.t.shape[-1])

    @property
    def final(self) -> PyTree:
        """The last saved state."""
        return jax.tree_util.tree_map(lambda x: x[-1], self.states)

    def take(self, n: int) -> "Trajectory":
        """The first ``n`` saved states."""
        return Trajectory(
            t=self.t[:n],
            states=jax.tree_util.tree_map(lambda x: x[:n], self.states),
            blowup_step=self.blowup_step,
        )


def checkpointed_scan(
    body: Callable[[Any], tuple[Any, Any]], carry: Any, length: int, checkpoint: bool = False
) -> tuple[Any, Any]:
    """``lax.scan`` of ``carry -> (carry, output)`` for ``length`` iterations, optionally with nested checkpointing.

    With ``checkpoint=True`` the iterations are grouped into blocks of ``ceil(sqrt(length))``; each block is a
    ``jax.checkpoint``-ed inner scan, so the backward pass stores one carry per block plus the intermediates of one
    block: O(sqrt(length)) memory for the carries, at the cost of recomputing each block once. Outputs are returned
    stacked along a leading axis of size ``length`` exactly as ``lax.scan`` would.
    """
    if length < 0:
        raise ConfigError(f"scan length must be >= 0, got {length}")
    f = lambda c, _: body(c)  # noqa: E731
    if not checkpoint or length <= 2:
        return jax.lax.scan(f, carry, None, length=length)
    m = max(1, math.isqrt(length - 1) + 1)  # ceil(sqrt(length))
    q, r = divmod(length, m)

    def block(length):
        # one rematerialised block: its forward is recomputed once in the backward pass, storing the
        # intermediates of at most m iterations
        return jax.checkpoint(lambda c, _: jax.lax.scan(f, c, None, length=length))

    carry, ys = jax.lax.scan(block(m), carry, None, length=q)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((q * m,) + y.shape[2:]), ys)
    if r:
        carry, ys_r = block(r)(carry, None)
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys_r)
    return carry, ys


def all_finite(tree: PyTree) -> jax.Array:
    """Scalar bool: every floating leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _validate(state0, dt, n_steps, save_every):
    check_dt(dt)
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ConfigError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if not isinstance(save_every, (int, np.integer)) or save_every < 1:
        raise ConfigError(f"save_every must be a positive integer, got {save_every!r}")
    if n_steps % save_every:
        raise ConfigError(f"n_steps ({n_steps}) must be a multiple of save_every ({save_every})")
    check_finite("initial state", state0)


def rollout(
    process: AbstractProcess,
    stepper: AbstractStepper,
    state0: PyTree,
    *,
    dt: float | jax.Array,
    n_steps: int,
    t0: float | jax.Array = 0.0,
    save_every: int = 1,
    checkpoint: bool = False,
    stepper_state: Any = None,
    detect_blowup: bool = True,
    return_stepper_state: bool = False,
) -> Trajectory | tuple[Trajectory, Any]:
    """Integrate ``process`` from ``state0`` for ``n_steps`` steps of size ``dt`` and save every ``save_every`` steps.

    Args:
        process: the model (any :class:`~nemic.core.process.AbstractProcess`, e.g. ``core + correction``).
        stepper: the time stepper.
        state0: initial state pytree.
        dt: timestep (model time units), > 0.
        n_steps: number of steps, a multiple of ``save_every``.
        t0: initial time.
        save_every: save one state every this many steps.
        checkpoint: blockwise ``jax.checkpoint`` for O(sqrt(n)) reverse-mode memory (n: the longer of the
            number of saves and the steps per save; the shorter loop is recomputed whole inside a block).
        stepper_state: history of a multistep stepper to continue from (default: ``stepper.init``).
        detect_blowup: freeze the state at the last finite save once a save is NaN/inf (see module docs).
        return_stepper_state: also return the final stepper state (to continue a run exactly).

    Returns:
        A :class:`Trajectory` with ``n_steps // save_every + 1`` saved states (the first is ``state0``).
    """
    if is_concrete((state0, dt)):
        _validate(state0, dt, n_steps, save_every)
    n_saves = n_steps // save_every
    ss0 = stepper.init(process, state0, t0, dt) if stepper_state is None else stepper_state
    # one level of sqrt(n) blocking, on the longer of the two loops (saves, steps per save): nesting it on both
    # would recompute every step several times for no further memory gain
    checkpoint_saves = checkpoint and n_saves >= save_every
    checkpoint_steps = checkpoint and not checkpoint_saves

    def one_step(carry):
        state, ss, i = carry
        new, ss = stepper.step(process, state, t0 + i * dt, dt, ss)
        return (new, ss, i + 1), None

    def one_save(carry):
        state, ss, i, bad = carry
        (new, ss_new, i_new), _ = checkpointed_scan(one_step, (state, ss, i), save_every, checkpoint_steps)
        if detect_blowup:
            ok = all_finite(new) & (bad < 0)
            bad = jnp.where((bad < 0) & ~ok, i, bad)
            new = _tree_where(ok, new, state)
            ss_new = _tree_where(ok, ss_new, ss)
        return (new, ss_new, i_new, bad), new

    init = (state0, ss0, jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32))
    (_, ss_final, _, bad), saved = checkpointed_scan(one_save, init, n_saves, checkpoint_saves)
    states = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), state0, saved)
    times = t0 + jnp.arange(n_saves + 1) * (save_every * dt)
    traj = Trajectory(t=times, states=states, blowup_step=bad)
    return (traj, ss_final) if return_stepper_state else traj


def _first_nonfinite_leaf(tree: PyTree) -> str:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            return jax.tree_util.keystr(path).lstrip(".") or "state"
    return "state"


def locate_blowup(process, stepper, state, stepper_state, *, t0, dt, first_step, max_steps):
    """Replay from ``state`` (after ``first_step`` steps) one step at a time; return (step, time, variable)."""
    step = eqx.filter_jit(lambda s, ss, t: stepper.step(process, s, t, dt, ss))
    for j in range(max_steps):
        t = t0 + (first_step + j) * dt
        state, stepper_state = step(state, stepper_state, t)
        if not bool(all_finite(state)):
            n = first_step + j + 1
            return n, float(t0 + n * dt), _first_nonfinite_leaf(state)
    n = first_step + max_steps
    return n, float(t0 + n * dt), _first_nonfinite_leaf(state)


def simulate(
    process: AbstractProcess,
    stepper: AbstractStepper,
    state0: PyTree,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    save_every: int = 1,
    segments: int | None = None,
    progress: bool | str = False,
    on_blowup: str = "raise",
) -> Trajectory:
    """Run a long simulation on the host in jitted segments, with a progress bar and exact blow-up reports.

    Args:
        process, stepper, state0, dt, n_steps, t0, save_every: as in :func:`rollout`.
        segments: number of jitted segments (default: about 20 for progress, else 1).
        progress: show a Rich progress bar (a string is used as its description).
        on_blowup: ``"raise"`` raises :class:`BlowUpError` (its ``trajectory`` holds the finite part);
            ``"truncate"`` returns the finite part of the trajectory.

    Returns:
        The :class:`Trajectory` (``blowup_step`` is -1 unless truncated after a blow-up).
    """
    if on_blowup not in ("raise", "truncate"):
        raise ConfigError(f"on_blowup must be 'raise' or 'truncate', got {on_blowup!r}")
    _validate(state0, dt, n_steps, save_every)
    n_saves = n_steps // save_every
    if segments is None:
        segments = min(20, n_saves) if progress else 1
    segments = max(1, min(segments, max(n_saves, 1)))
    per = [n_saves // segments + (1 if s < n_saves % segments else 0) for s in range(segments)]

    run = eqx.filter_jit(
        lambda p, s, ss, t, n: rollout(p, stepper, s, dt=dt, n_steps=n * save_every, t0=t,
                                       save_every=save_every, stepper_state=ss, return_stepper_state=True),
    )
    pieces_t, pieces_s = [np.asarray([t0], dtype=float)], [jax.tree_util.tree_map(lambda x: np.asarray(x)[None],
                                                                                   state0)]
    state, ss, done = state0, stepper.init(process, state0, t0, dt), 0

    with progress_bar(bool(progress)) as pb:
        task = pb.add_task(progress if isinstance(progress, str) else "simulating", total=n_steps, info="")
        for n in per:
            if n == 0:
                continue
            t_seg = t0 + done * dt
            traj, ss_new = run(process, state, ss, jnp.asarray(t_seg, float), n)
            bad = int(traj.blowup_step)  # steps completed in this segment before the bad block
            if bad >= 0:
                k_good = bad // save_every  # saves in this segment that are finite
                pieces_t.append(np.asarray(traj.t[1:k_good + 1]))
                pieces_s.append(jax.tree_util.tree_map(lambda x: np.asarray(x[1:k_good + 1]), traj.states))
                last = jax.tree_util.tree_map(lambda x: x[k_good], traj.states)
                # replay from the last finite save: the stepper history there is not stored, so for multistep
                # methods it is re-created by running the segment start up to that save (cheap: one segment).
                ss_last = ss
                if k_good > 0:
                    _, ss_last = run(process, state, ss, jnp.asarray(t_seg, float), k_good)
                step, time, var = locate_blowup(process, stepper, last, ss_last, t0=t0, dt=dt,
                                                first_step=done + bad, max_steps=save_every)
                out = _concat(pieces_t, pieces_s, step)
                if on_blowup == "raise":
                    raise BlowUpError(step, time, var, out)
                return out
            pieces_t.append(np.asarray(traj.t[1:]))
            pieces_s.append(jax.tree_util.tree_map(lambda x: np.asarray(x[1:]), traj.states))
            state, ss, done = traj.final, ss_new, done + n * save_every
            pb.update(task, advance=n * save_every)
    return _concat(pieces_t, pieces_s, -1)


def _concat(pieces_t, pieces_s, bad) -> Trajectory:
    t = jnp.asarray(np.concatenate(pieces_t))
    states = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)), *pieces_s)
    return Trajectory(t=t, states=states, blowup_step=jnp.asarray(bad, jnp.int32))

"""Rollouts: many steps of a stepper as one ``lax.scan``, saving every ``save_every`` steps.

Two entry points:

* :func:`rollout` is a pure function: jit it, ``vmap`` it over initial states (ensembles), differentiate it.
  With ``checkpoint=True`` the scan is split into blocks of about sqrt(n) steps, each wrapped in
  ``jax.checkpoint``, so reverse-mode memory grows like sqrt(n) instead of n (Griewank & Walther 2000,
  ACM TOMS 26, 19-45, doi:10.1145/347837.347846) at the price of one extra forward pass.
* :func:`nemic.core.simulate.simulate` is the host-side driver for long runs of every model: it runs the pure rollout in segments,
  reports progress through a callback (``nemic.io.terminal`` turns that into a Rich bar), and when a state becomes NaN/inf it replays the bad segment step by step to name the exact step
  and variable, and raises :class:`~nemic.core.errors.BlowUpError` carrying the trajectory up to the last finite
  saved state (or returns that trajectory with ``on_blowup="truncate"``).

Randomness: with ``key`` the rollout folds the global step index into the run key and splits it between the
advance of the process's noise state (random fields with memory, see :mod:`nemic.core.process`) and the step
itself, so the same key gives the same trajectory, whether run in one piece or in segments.

Ensembles: :func:`ensemble_rollout` ``vmap``s a rollout over members (initial states and/or keys) and marks the
leading axis of the result as the member axis, which :func:`nemic.io.output.to_xarray` names ``member``.

Blow-up detection inside :func:`rollout` is at the granularity of saves: once a saved state is not finite the
state is frozen at the last finite one and ``Trajectory.blowup_step`` records the number of steps completed before
the bad block (``-1`` if none), so a jitted or differentiated rollout never propagates NaN into later saves.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import BlowUpError, ConfigError, DataError, is_concrete
from nemic.core.checks import check_key, check_run_settings, check_state, check_tendency_structure
from nemic.core.process import AbstractProcess, PyTree
from nemic.core.scan import checkpointed_scan
from nemic.core.steppers import AbstractStepper


class Trajectory(eqx.Module):
    """Saved states (or observations) of a rollout.

    Attributes:
        t: times of the saved states, shape (n_saved,) (the initial state is included).
        states: the state pytree (or what ``observe`` returned) with a leading axis of length n_saved, preceded by
            the member axis in an ensemble.
        blowup_step: number of completed steps before the first block whose result was not finite, or -1.
            Shape () (or (n_members,) in an ensemble).
        member_axis: True when ``states`` and ``blowup_step`` carry a leading ensemble-member axis.
    """

    t: jax.Array
    states: PyTree
    blowup_step: jax.Array
    member_axis: bool = eqx.field(static=True, default=False)

    def __len__(self) -> int:
        return int(self.t.shape[-1])

    @property
    def n_members(self) -> int | None:
        """Number of ensemble members, or ``None`` for a single run."""
        if not self.member_axis:
            return None
        return int(jax.tree_util.tree_leaves(self.states)[0].shape[0])

    @property
    def final(self) -> PyTree:
        """The last saved state (of every member in an ensemble)."""
        return jax.tree_util.tree_map(lambda x: x[:, -1] if self.member_axis else x[-1], self.states)

    def take(self, n: int) -> "Trajectory":
        """The first ``n`` saved states."""
        return Trajectory(
            t=self.t[..., :n],
            states=jax.tree_util.tree_map(lambda x: x[:, :n] if self.member_axis else x[:n], self.states),
            blowup_step=self.blowup_step,
            member_axis=self.member_axis,
        )

    def member(self, i: int) -> "Trajectory":
        """The trajectory of ensemble member ``i``."""
        if not self.member_axis:
            raise ConfigError("this trajectory has no member axis")
        return Trajectory(t=self.t, states=jax.tree_util.tree_map(lambda x: x[i], self.states),
                          blowup_step=self.blowup_step[i])


class RolloutCarry(eqx.Module):
    """What a rollout needs to continue exactly: the stepper's history, the noise state and the step count, and
    (in a returned carry) the final state itself, which ``observe`` may have left out of the trajectory."""

    state: Any
    stepper_state: Any
    noise: Any
    step: jax.Array


def all_finite(tree: PyTree) -> jax.Array:
    """Scalar bool: every floating leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _run_keys(key: Any) -> tuple[Any, Any]:
    """The run key split into the key of the initial noise state and the key that step indices are folded into."""
    k_init, k_steps = jax.random.split(key)
    return k_init, k_steps


def init_carry(process: AbstractProcess, stepper: AbstractStepper, state0: PyTree, *, t0: Any = 0.0,
               dt: Any, key: Any = None) -> RolloutCarry:
    """The carry at the start of a run: the stepper's empty history and the process's initial noise state."""
    noise = process.init_noise(state0, _run_keys(key)[0]) if key is not None else None
    return RolloutCarry(state0, stepper.init(process, state0, t0, dt), noise, jnp.zeros((), jnp.int32))


def rollout(
    process: AbstractProcess,
    stepper: AbstractStepper,
    state0: PyTree,
    *,
    dt: float | jax.Array,
    n_steps: int,
    t0: float | jax.Array = 0.0,
    save_every: int = 1,
    checkpoint: bool | int = False,
    key: Any = None,
    observe: Callable[[PyTree, Any], PyTree] | None = None,
    stepper_state: Any = None,
    carry: RolloutCarry | None = None,
    detect_blowup: bool = True,
    return_stepper_state: bool = False,
    return_carry: bool = False,
) -> Any:
    """Integrate ``process`` from ``state0`` for ``n_steps`` steps of size ``dt`` and save every ``save_every`` steps.

    Args:
        process: the model (any :class:`~nemic.core.process.AbstractProcess`, e.g. ``core + correction``).
        stepper: the time stepper.
        state0: initial state pytree.
        dt: timestep (model time units), > 0.
        n_steps: number of steps, a multiple of ``save_every``.
        t0: initial time.
        save_every: save one state every this many steps.
        checkpoint: ``jax.checkpoint`` nesting levels for reverse mode (``True`` = one level, O(sqrt n) memory;
            2-3 levels for 10^4-10^5 steps; see :func:`checkpointed_scan`). Applied to the longer of the number
            of saves and the steps per save; the shorter loop is recomputed whole inside a block.
        key: ``jax.random`` key of the run (required when the process is stochastic). ``split(key)`` gives the
            key of the initial noise state and a step key; step ``i`` (counted from the start of the run, across
            continuations) uses ``fold_in(step_key, i)``.
        observe: ``observe(state, t) -> pytree`` saved instead of the state (derived fields, a few variables).
        stepper_state: history of a multistep stepper to continue from (default: ``stepper.init``).
        carry: a :class:`RolloutCarry` to continue a run exactly (stepper history, noise state, step count).
        detect_blowup: freeze the state at the last finite save once a save is NaN/inf (see module docs).
        return_stepper_state: also return the final stepper state.
        return_carry: also return the final :class:`RolloutCarry` (to continue a run exactly, noise included).

    Returns:
        A :class:`Trajectory` with ``n_steps // save_every + 1`` saved states (the first is ``state0``).
    """
    if is_concrete((state0, dt)):
        check_run_settings(state0, dt, n_steps, save_every)
        check_state(process, state0)
    check_key(process, key)
    if not isinstance(process, AbstractProcess):
        raise ConfigError(f"rollout needs a process (a model), got {type(process).__name__}")
    if not isinstance(stepper, AbstractStepper):
        raise ConfigError(f"rollout needs a stepper, got {type(stepper).__name__}")
    stepper.check_process(process)
    if is_concrete((state0, t0)):
        check_tendency_structure(process, state0, t0)
    n_saves = n_steps // save_every
    if carry is None:
        carry = init_carry(process, stepper, state0, t0=t0, dt=dt, key=key)
        if stepper_state is not None:
            carry = RolloutCarry(state0, stepper_state, carry.noise, carry.step)
    # one level of blocking, on the longer of the two loops (saves, steps per save): nesting it on both would
    # recompute every step several times for no further memory gain
    checkpoint_saves = checkpoint if n_saves >= save_every else False
    checkpoint_steps = checkpoint if n_saves < save_every else False
    i_start = carry.step
    k_steps = None if key is None else _run_keys(key)[1]
    obs = (lambda s, t: s) if observe is None else observe

    def one_step(c):
        state, ss, noise, i = c
        t = t0 + (i - i_start) * dt
        if key is None:
            new, ss = stepper.step(process, state, t, dt, ss)
        else:
            k_noise, k_step = jax.random.split(jax.random.fold_in(k_steps, i))
            noise = process.advance_noise(noise, k_noise, dt)
            new, ss = stepper.step(process.bind_noise(noise), state, t, dt, ss, k_step)
        return (new, ss, noise, i + 1), None

    def one_save(c):
        state, ss, noise, i, bad = c
        (new, ss_new, noise_new, i_new), _ = checkpointed_scan(one_step, (state, ss, noise, i), save_every,
                                                               checkpoint_steps)
        if detect_blowup:
            ok = all_finite(new) & (bad < 0)
            bad = jnp.where((bad < 0) & ~ok, i - i_start, bad)
            new = _tree_where(ok, new, state)
            ss_new = _tree_where(ok, ss_new, ss)
            noise_new = _tree_where(ok, noise_new, noise)
        return (new, ss_new, noise_new, i_new, bad), obs(new, t0 + (i_new - i_start) * dt)

    init = (state0, carry.stepper_state, carry.noise, carry.step, -jnp.ones((), jnp.int32))
    (state_final, ss_final, noise_final, i_final, bad), saved = checkpointed_scan(one_save, init, n_saves, checkpoint_saves)
    first = obs(state0, t0)
    states = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b]), first, saved)
    times = t0 + jnp.arange(n_saves + 1) * (save_every * dt)
    traj = Trajectory(t=times, states=states, blowup_step=bad)
    if return_carry:
        return traj, RolloutCarry(state_final, ss_final, noise_final, i_final)
    return (traj, ss_final) if return_stepper_state else traj


def ensemble_rollout(
    process: AbstractProcess,
    stepper: AbstractStepper,
    states0: PyTree,
    *,
    keys: Any = None,
    batch_size: int | None = None,
    **kwargs: Any,
) -> Trajectory:
    """A ``vmap`` of :func:`rollout` over ensemble members, with an explicit member axis.

    ``batch_size`` runs the members in vectorised chunks of that size one after another (``jax.lax.map``);
    ``None`` vectorises all of them at once. On a CPU, models whose cost is dominated by FFTs (two-layer QG) gain
    nothing from vectorising: XLA's CPU FFT costs the same per field in a batch, and a large batch leaves the
    cache, so ``batch_size=1`` is the fastest there (``benchmarks/ensemble.py``); small, elementwise models
    (Lorenz-96) and GPUs gain from full vectorisation.

    Args:
        states0: initial states with a leading member axis (n_members, ...), or one state shared by all members
            (then ``keys`` sets the number of members).
        keys: one ``jax.random`` key per member, shape (n_members,) (typed keys) or (n_members, 2); ``None`` for
            a deterministic ensemble of initial states.
        **kwargs: as :func:`rollout` (``dt``, ``n_steps``, ``save_every``, ``observe``, ...).

    Returns:
        A :class:`Trajectory` with ``member_axis=True``: states of shape (n_members, n_saved, ...), times
        (n_saved,).
    """
    for bad in ("carry", "stepper_state", "return_carry", "return_stepper_state"):
        if kwargs.get(bad):
            raise ConfigError(f"ensemble_rollout does not take {bad}; run members with rollout to continue them")
    states0 = _member_states(process, states0, keys)
    run = lambda s, k: rollout(process, stepper, s, key=k, **kwargs)  # noqa: E731
    traj = _map_members(run, states0, keys, batch_size)
    return Trajectory(t=traj.t[0], states=traj.states, blowup_step=traj.blowup_step, member_axis=True)


def _member_states(process, states0, keys):
    """``states0`` with a leading member axis (one state is broadcast to the members set by ``keys``)."""
    n_keys = None if keys is None else int(jnp.shape(keys)[0])
    lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(states0)}
    batched_states = True
    if keys is not None:
        # a single state (no member axis) shared by all members: decided against the model's own state rank
        batched_states = len(lead) == 1 and lead == {n_keys} and _has_member_axis(process, states0)
    if keys is None and not lead:
        raise DataError("ensemble initial states need a leading member axis")
    if keys is not None and batched_states is False:
        states0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_keys,) + jnp.shape(x)), states0)
    return states0


def _map_members(run, states0, keys, batch_size, *extra):
    """``run(state, key, *extra)`` over the members: one ``vmap`` or (``batch_size``) vectorised chunks in turn."""
    if batch_size is None:
        return jax.vmap(run, in_axes=(0, None if keys is None else 0) + (0,) * len(extra))(states0, keys, *extra)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return jax.lax.map(lambda a: run(a[0], None if keys is None else a[1], *a[2:]),
                       (states0, keys) + tuple(extra), batch_size=int(batch_size))


def ensemble_simulate(process: AbstractProcess, stepper: AbstractStepper | None, states0: PyTree, *,
                      dt: float, n_steps: int, t0: float = 0.0, save_every: int = 1, keys: Any = None,
                      observe: Callable[[PyTree, Any], PyTree] | None = None, batch_size: int | None = None,
                      segments: int | None = None, progress: Callable[[int, int], None] | None = None) -> Trajectory:
    """:func:`ensemble_rollout` driven from the host in segments, with ``progress(steps_done, n_steps)`` reports.

    Each segment is one compiled, vectorised call over all members that continues every member's carry (stepper
    history, noise state, step count), so the trajectory equals :func:`ensemble_rollout`'s, whatever the number
    of segments (default: about 20 with progress, else 1). A member whose state stops being finite stays at its
    last finite save, and its ``blowup_step`` counts the steps completed before the bad block (-1 if none), as in
    :func:`ensemble_rollout`; the other members run on.
    """
    if progress is False:
        progress = None
    if progress is not None and not callable(progress):
        raise ConfigError("progress must be a callable progress(steps_done, total) or None "
                          "(nemic.io.terminal.progress draws a bar)")
    check_run_settings(jax.tree_util.tree_map(lambda x: x[0], _member_states(process, states0, keys)), dt,
                       n_steps, save_every)
    check_key(process, None if keys is None else keys[0])
    stepper = _default_stepper(process) if stepper is None else stepper
    states0 = _member_states(process, states0, keys)
    n_saves = n_steps // save_every
    segments = (min(20, n_saves) if progress else 1) if segments is None else segments
    segments = max(1, min(segments, max(n_saves, 1)))
    per = [n_saves // segments + (1 if s < n_saves % segments else 0) for s in range(segments)]
    init = lambda s, k: init_carry(process, stepper, s, t0=t0, dt=dt, key=k)  # noqa: E731
    carry = jax.vmap(init, in_axes=(0, None if keys is None else 0))(states0, keys)

    @eqx.filter_jit
    def run(p, c, k, t, n):
        one = lambda s, kk, cc: rollout(p, stepper, s, dt=dt, n_steps=n * save_every, t0=t,  # noqa: E731
                                        save_every=save_every, key=kk, observe=observe, carry=cc, return_carry=True)
        return _map_members(one, c.state, k, batch_size, c)

    obs0 = states0 if observe is None else jax.vmap(lambda s: observe(s, t0))(states0)
    pieces = [jax.tree_util.tree_map(lambda x: np.asarray(x)[:, None], obs0)]
    bad = np.full(jax.tree_util.tree_leaves(states0)[0].shape[0], -1)
    done = 0
    for n in (m for m in per if m):
        traj, carry = run(process, carry, keys, jnp.asarray(t0 + done * dt, float), n)
        b = np.asarray(traj.blowup_step)
        bad = np.where((bad < 0) & (b >= 0), done + b, bad)
        pieces.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:, 1:], traj.states))
        done += n * save_every
        if progress is not None:
            progress(done, n_steps)
    last_ok = np.where(bad >= 0, bad // save_every, n_saves)  # index of each member's last finite save
    idx = np.minimum(np.arange(n_saves + 1)[None, :], last_ok[:, None])

    def freeze(*xs):
        x = np.concatenate(xs, axis=1)
        return jnp.asarray(np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1))

    states = jax.tree_util.tree_map(freeze, *pieces)
    t = t0 + jnp.arange(n_saves + 1) * (save_every * dt)
    return Trajectory(t=t, states=states, blowup_step=jnp.asarray(bad, jnp.int32), member_axis=True)


def _has_member_axis(process, states0) -> bool:
    """Whether ``states0`` already has a member axis: the model's ``state_ndim`` (or, lacking it, rank >= 2)."""
    core = getattr(process, "core", process)
    core = getattr(core, "core", core)
    ndim = getattr(core, "state_ndim", None)
    leaf = jax.tree_util.tree_leaves(states0)[0]
    if isinstance(ndim, dict):
        ndim = ndim.get("first")
    if isinstance(ndim, int):
        return np.ndim(leaf) > ndim
    return np.ndim(leaf) >= 2


def _first_nonfinite_leaf(tree: PyTree) -> str:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            return jax.tree_util.keystr(path).lstrip(".") or "state"
    return "state"


def locate_blowup(process, stepper, state, carry, *, t0, dt, first_step, max_steps, key=None):
    """Replay from ``state`` (after ``first_step`` steps) one step at a time; return (step, time, variable)."""
    run1 = eqx.filter_jit(lambda s, c, t: rollout(process, stepper, s, dt=dt, n_steps=1, t0=t, key=key, carry=c,
                                                   detect_blowup=False, return_carry=True))
    for j in range(max_steps):
        t = t0 + (first_step + j) * dt
        _, carry = run1(state, carry, jnp.asarray(t, float))
        state = carry.state
        if not bool(all_finite(state)):
            n = first_step + j + 1
            return n, float(t0 + n * dt), _first_nonfinite_leaf(state)
    n = first_step + max_steps
    return n, float(t0 + n * dt), _first_nonfinite_leaf(state)


def _default_stepper(process):
    for p in (process, getattr(process, "core", None)):
        if p is not None and hasattr(p, "default_stepper"):
            return p.default_stepper()
    raise ConfigError(f"{type(process).__name__} has no default stepper: pass one")


@eqx.filter_jit
def _segment(process, stepper, state, carry, t, n, dt, save_every, key, observe):
    """One segment of :func:`simulate`, compiled once per model and settings (not once per call)."""
    return rollout(process, stepper, state, dt=dt, n_steps=n * save_every, t0=t, save_every=save_every, key=key,
                   observe=observe, carry=carry, return_carry=True)


def _device_time(t: float) -> jax.Array:
    return jax.device_put(np.asarray(t, jax.dtypes.canonicalize_dtype(float)))


def simulate(
    process: AbstractProcess,
    stepper: AbstractStepper | None,
    state0: PyTree,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    save_every: int = 1,
    key: Any = None,
    observe: Callable[[PyTree, Any], PyTree] | None = None,
    segments: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_blowup: str = "raise",
) -> Trajectory:
    """Run any model on the host in jitted segments, with progress reports and exact blow-up reports.

    Args:
        process, state0, dt, n_steps, t0, save_every, key, observe: as in :func:`rollout`.
        stepper: the stepper, or ``None`` for the model's ``default_stepper()``.
        segments: number of jitted segments (default: about 20 with progress, else 1). The trajectory does not
            depend on it (keys are folded with the global step index).
        progress: ``progress(steps_done, n_steps)`` called after each segment (``nemic.io.terminal.progress``
            gives one that draws a Rich bar).
        on_blowup: ``"raise"`` raises :class:`BlowUpError` (its ``trajectory`` holds the finite part);
            ``"truncate"`` returns the finite part of the trajectory.

    Returns:
        The :class:`Trajectory` (``blowup_step`` is -1 unless truncated after a blow-up).
    """
    if on_blowup not in ("raise", "truncate"):
        raise ConfigError(f"on_blowup must be 'raise' or 'truncate', got {on_blowup!r}")
    if progress is False:
        progress = None
    if progress is not None and not callable(progress):
        raise ConfigError("progress must be a callable progress(steps_done, total) or None "
                          "(nemic.io.terminal.progress draws a bar)")
    check_run_settings(state0, dt, n_steps, save_every)
    check_state(process, state0)
    check_key(process, key)
    stepper = _default_stepper(process) if stepper is None else stepper
    n_saves = n_steps // save_every
    if segments is None:
        segments = min(20, n_saves) if progress else 1
    segments = max(1, min(segments, max(n_saves, 1)))
    per = [n_saves // segments + (1 if s < n_saves % segments else 0) for s in range(segments)]

    # strong types (a weak-typed state would compile the first segment twice); the carry stays on the device
    state0 = jax.tree_util.tree_map(lambda x: x.astype(x.dtype) if isinstance(x, jax.Array) else x, state0)
    obs0 = state0 if observe is None else observe(state0, t0)
    pieces_t = [np.asarray([t0], dtype=float)]
    pieces_s = [jax.tree_util.tree_map(lambda x: np.asarray(x)[None], obs0)]
    carry = init_carry(process, stepper, state0, t0=t0, dt=dt, key=key)
    state, done = state0, 0
    for n in per:
        if n == 0:
            continue
        t_seg = t0 + done * dt
        traj, carry_new = _segment(process, stepper, state, carry, _device_time(t_seg), n, dt, save_every, key,
                                   observe)
        t_h, s_h, bad = jax.device_get((traj.t, traj.states, traj.blowup_step))  # the saves: the only transfer
        bad = int(bad)  # steps completed in this segment before the bad block
        if bad >= 0:
            k_good = bad // save_every  # saves in this segment that are finite
            pieces_t.append(t_h[1:k_good + 1])
            pieces_s.append(jax.tree_util.tree_map(lambda x: x[1:k_good + 1], s_h))
            # replay from the last finite save: its state and carry are re-created by running the segment start
            # up to that save (cheap: one segment)
            last, carry_last = state, carry
            if k_good > 0:
                tr, carry_last = eqx.filter_jit(
                    lambda p, s, c, t: rollout(p, stepper, s, dt=dt, n_steps=k_good * save_every, t0=t,
                                               save_every=k_good * save_every, key=key, carry=c,
                                               return_carry=True))(process, state, carry, jnp.asarray(t_seg, float))
                last = carry_last.state
            step, time, var = locate_blowup(process, stepper, last, carry_last, t0=t0, dt=dt,
                                            first_step=done + bad, max_steps=save_every, key=key)
            out = _concat(pieces_t, pieces_s, step)
            if on_blowup == "raise":
                raise BlowUpError(step, time, var, out)
            return out
        pieces_t.append(t_h[1:])
        pieces_s.append(jax.tree_util.tree_map(lambda x: x[1:], s_h))
        carry, done, state = carry_new, done + n * save_every, carry_new.state
        if progress is not None:
            progress(done, n_steps)
    return _concat(pieces_t, pieces_s, -1)


def _concat(pieces_t, pieces_s, bad) -> Trajectory:
    t = jnp.asarray(np.concatenate(pieces_t))
    states = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)), *pieces_s)
    return Trajectory(t=t, states=states, blowup_step=jnp.asarray(bad, jnp.int32))

"""Ensembles sharded over the ``ensemble`` axis of a device mesh.

:func:`sharded_ensemble_rollout` is :func:`nemic.core.rollout.ensemble_rollout` (the same function, not a copy)
compiled once with ``jit`` (``equinox.filter_jit``), whose inputs and outputs carry ``NamedSharding``\\ s: the members are split over
the mesh's ``ensemble`` axis, the model's parameters are replicated, and XLA's partitioner runs each device's
members with no communication (members are independent). On one device it is the plain ensemble.
"""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from nemic.core.errors import ConfigError, DataError
from nemic.core.process import AbstractProcess
from nemic.core.rollout import Trajectory, _has_member_axis, ensemble_rollout
from nemic.core.steppers import AbstractStepper
from nemic.parallel.mesh import check_divides, member_sharding, replicate, replicated, shard_members

__all__ = ["sharded_ensemble_rollout", "gather"]


def _n_members(process, states0, keys) -> tuple[int, bool]:
    """(number of members, whether ``states0`` carries the member axis)."""
    leads = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(states0)}
    if keys is None:
        if not leads or None in leads or len(leads) != 1:
            raise DataError("ensemble initial states need one leading member axis on every field")
        return int(next(iter(leads))), True
    n = int(np.shape(keys)[0])
    batched = len(leads) == 1 and leads == {n} and _has_member_axis(process, states0)
    return n, batched


def sharded_ensemble_rollout(
    process: AbstractProcess,
    stepper: AbstractStepper,
    states0: Any,
    *,
    mesh: Mesh,
    keys: Any = None,
    axes: str | Sequence[str] = "ensemble",
    space_dim: int | None = None,
    **kwargs: Any,
) -> Trajectory:
    """:func:`~nemic.core.rollout.ensemble_rollout` with members split over ``axes`` of ``mesh``.

    The model's arrays are replicated on the mesh, the initial states (or the keys of members that share one
    state) split along the member axis, and the compiled call is cached by model structure and settings.

    Args:
        process, stepper, states0, keys, **kwargs: as :func:`~nemic.core.rollout.ensemble_rollout`
            (``dt``, ``n_steps``, ``save_every``, ``observe``, ``batch_size``...).
        mesh: a mesh from :func:`nemic.parallel.make_mesh`.
        axes: the mesh axis (or axes) that splits the members.
        space_dim: also split this dimension of every state field (e.g. ``-1``) over the mesh's ``space`` axis.

    Returns:
        The :class:`~nemic.core.rollout.Trajectory` (member axis first) as global arrays: ``states`` and
        ``blowup_step`` split over ``axes`` along the member axis, ``t`` replicated. :func:`gather` brings it to
        the host of every process.

    Raises:
        ConfigError: the mesh axis does not divide the number of members (one line), before anything is compiled.
    """
    if not isinstance(mesh, Mesh):
        raise ConfigError(f"mesh must be a jax.sharding.Mesh (nemic.parallel.make_mesh), got {type(mesh).__name__}")
    n, batched = _n_members(process, states0, keys)
    check_divides(mesh, axes, n, "ensemble members")
    if space_dim is not None:
        for x in jax.tree_util.tree_leaves(states0):
            check_divides(mesh, "space", int(np.shape(x)[space_dim]), "grid points of the split dimension")
    process = replicate(process, mesh)
    s0 = shard_members(states0, mesh, axes=axes, space_dim=space_dim) if batched else replicate(states0, mesh)
    k = None if keys is None else shard_members(keys, mesh, axes=axes)
    return _run(process, stepper, s0, k, mesh, axes if isinstance(axes, str) else tuple(axes), space_dim, kwargs)


@eqx.filter_jit
def _run(process, stepper, s0, k, mesh, axes, space_dim, kwargs) -> Trajectory:
    """The compiled ensemble (module level, so a second call with the same settings reuses the compiled code):
    inputs keep the shardings they were placed with, outputs are constrained to the mesh's layout."""
    traj = ensemble_rollout(process, stepper, s0, keys=k, **kwargs)
    wsc = jax.lax.with_sharding_constraint
    states = jax.tree_util.tree_map(
        lambda x: wsc(x, member_sharding(mesh, x.ndim, axes=axes, space_dim=space_dim)), traj.states)
    return Trajectory(t=wsc(traj.t, replicated(mesh)), states=states,
                      blowup_step=wsc(traj.blowup_step, member_sharding(mesh, 1, axes=axes)), member_axis=True)


def gather(tree: Any) -> Any:
    """Every array leaf of ``tree`` as a host NumPy array, in every process (``process_allgather`` of the shards
    across hosts; a plain ``device_get`` in one process)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)) if isinstance(x, jax.Array) else x,
        tree)

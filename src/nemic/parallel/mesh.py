"""Device meshes with named axes and the shardings of states, ensembles, batches and parameters.

nemic uses JAX's own engine for parallelism (``jax.sharding.Mesh``, ``NamedSharding`` and ``jit``; the
"GSPMD" partitioner of Xu et al. 2021, arXiv:2105.04663): arrays are laid out over a mesh of devices, the
program is written once as for one device, and XLA inserts the communication (e.g. the all-reduce of gradients
over the batch axis). There is no home-made parallelism.

The mesh always has the three axes

* ``ensemble``: the member axis of an ensemble (members are independent: no communication);
* ``batch``: the leading axis of a training batch (data parallelism; gradients are summed by XLA);
* ``space``: optionally one spatial dimension of the fields (XLA gathers what the FFT needs);

an axis of size 1 is free, so a mesh of one device runs the same code as a mesh of many. Parameters are
replicated on every device.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nemic.core.errors import ConfigError

__all__ = ["AXES", "make_mesh", "replicated", "member_sharding", "batch_sharding", "replicate", "shard_members",
           "shard_batch", "check_divides", "axis_size", "put_global"]

#: the names of the mesh axes, in order
AXES = ("ensemble", "batch", "space")


def make_mesh(ensemble: int = -1, batch: int = 1, space: int = 1, *,
              devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh of ``devices`` (default: all devices of all processes) with axes ``(ensemble, batch, space)``.

    Args:
        ensemble, batch, space: sizes of the axes; at most one may be ``-1`` ("the remaining devices").
        devices: the devices to use (their number must equal the product of the sizes).

    Returns:
        A ``jax.sharding.Mesh``.

    Raises:
        ConfigError: sizes that are not positive integers (or -1), or whose product is not the device count.
    """
    devs = list(jax.devices() if devices is None else devices)
    sizes = {"ensemble": ensemble, "batch": batch, "space": space}
    for name, v in sizes.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or (v < 1 and v != -1):
            raise ConfigError(f"mesh axis {name} must be a positive integer or -1, got {v!r}")
    free = [n for n, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ConfigError(f"at most one mesh axis may be -1, got {', '.join(free)}")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if len(devs) % fixed:
            raise ConfigError(f"a mesh with fixed axes of {fixed} devices does not divide the {len(devs)} devices")
        sizes[free[0]] = len(devs) // fixed
    n = math.prod(sizes.values())
    if n != len(devs):
        shape = " x ".join(f"{k}={v}" for k, v in sizes.items())
        raise ConfigError(f"a mesh {shape} needs {n} devices, but {len(devs)} are available")
    grid = np.asarray(devs, dtype=object).reshape(tuple(sizes[a] for a in AXES))
    return Mesh(grid, AXES)


def axis_size(mesh: Mesh, axes: str | Sequence[str]) -> int:
    """Number of devices along ``axes`` (one name or several) of ``mesh``."""
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    for a in names:
        if a not in mesh.shape:
            raise ConfigError(f"mesh has no axis {a!r} (its axes: {', '.join(mesh.axis_names)})")
    return math.prod(mesh.shape[a] for a in names)


def check_divides(mesh: Mesh, axes: str | Sequence[str], n: int, what: str) -> None:
    """One-line :class:`ConfigError` unless the ``axes`` of ``mesh`` divide a leading axis of length ``n``."""
    k = axis_size(mesh, axes)
    if n % k:
        name = axes if isinstance(axes, str) else "x".join(axes)
        raise ConfigError(f"the mesh's {name} axis ({k} devices) does not divide the {n} {what}; "
                          f"use a multiple of {k} or a mesh with a divisor of {n}")


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that holds a full copy on every device (parameters)."""
    return NamedSharding(mesh, P())


def _lead_spec(axes: str | Sequence[str], ndim: int, space_dim: int | None) -> P:
    spec: list[Any] = [None] * ndim
    if ndim:
        spec[0] = axes if isinstance(axes, str) else tuple(axes)
    if space_dim is not None and ndim >= 2:
        spec[space_dim % ndim] = "space"
    return P(*spec)


def member_sharding(mesh: Mesh, ndim: int = 1, *, axes: str | Sequence[str] = "ensemble",
                    space_dim: int | None = None) -> NamedSharding:
    """The sharding of an array of rank ``ndim`` whose leading axis is the member axis (split over ``axes``);
    with ``space_dim`` that dimension (e.g. -1, the last spatial one) is also split over the ``space`` axis."""
    return NamedSharding(mesh, _lead_spec(axes, ndim, space_dim))


def batch_sharding(mesh: Mesh, ndim: int = 1, *, axes: str | Sequence[str] = "batch") -> NamedSharding:
    """The sharding of a batch leaf of rank ``ndim`` (leading batch axis split over ``axes``)."""
    return NamedSharding(mesh, _lead_spec(axes, ndim, None))


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """Place ``x`` (the same host value in every process) with ``sharding``, also when the mesh spans devices of
    other processes (each process fills the shards it holds, ``jax.make_array_from_callback``)."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        data = put_global(jax.random.key_data(x), NamedSharding(sharding.mesh, P(*sharding.spec, None)))
        return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every array leaf of ``tree`` copied to all devices of ``mesh`` (other leaves unchanged)."""
    rep = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: put_global(x, rep) if _is_array(x) else x, tree)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def shard_members(tree: Any, mesh: Mesh, *, axes: str | Sequence[str] = "ensemble",
                  space_dim: int | None = None) -> Any:
    """Split the leading (member) axis of every array leaf of ``tree`` over ``axes`` of ``mesh``.

    Raises:
        ConfigError: the mesh axis does not divide the number of members (one line).
    """
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if _is_array(x)]
    for x in leaves:
        check_divides(mesh, axes, int(np.shape(x)[0]) if np.ndim(x) else 1, "ensemble members")
    return jax.tree_util.tree_map(
        lambda x: put_global(x, member_sharding(mesh, np.ndim(x), axes=axes, space_dim=space_dim))
        if _is_array(x) else x, tree)


def shard_batch(tree: Any, mesh: Mesh, *, axes: str | Sequence[str] = "batch") -> Any:
    """Split the leading (batch) axis of every array leaf of ``tree`` over ``axes`` of ``mesh``.

    Raises:
        ConfigError: the mesh axis does not divide the batch size (one line).
    """
    for x in jax.tree_util.tree_leaves(tree):
        if _is_array(x):
            check_divides(mesh, axes, int(np.shape(x)[0]) if np.ndim(x) else 1, "batch elements")
    return jax.tree_util.tree_map(
        lambda x: put_global(x, batch_sharding(mesh, np.ndim(x), axes=axes)) if _is_array(x) else x, tree)

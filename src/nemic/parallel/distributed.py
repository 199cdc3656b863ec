"""Several processes (hosts) as one JAX program: :func:`initialize` over ``jax.distributed.initialize``.

After :func:`initialize`, ``jax.devices()`` lists the devices of every process, a mesh from
:func:`nemic.parallel.make_mesh` spans them all, and every process runs the same program on its own shards
(JAX's multi-controller model). Outputs are written by one process: :func:`is_writer` is true in process 0 only,
:mod:`nemic.io.runs` commits results from it, and :mod:`nemic.train.checkpoint` writes checkpoints and weights
from it; the others wait at a barrier (:func:`sync`) and then read the same files (a file system shared by all
hosts, as on a cluster, is assumed).

The settings come from the arguments, else from the environment of common launchers:

* JAX's own: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
* Slurm (``srun``): ``SLURM_NTASKS``, ``SLURM_PROCID`` and the first host of ``SLURM_STEP_NODELIST`` /
  ``SLURM_JOB_NODELIST`` with port ``NEMIC_COORDINATOR_PORT`` (default 12321);
* Open MPI (``mpirun``): ``OMPI_COMM_WORLD_SIZE``, ``OMPI_COMM_WORLD_RANK`` (the coordinator must be given).

Bad settings are one-line :class:`~nemic.core.errors.ConfigError`\\ s, never a hang: a process id outside
``0 .. num_processes - 1``, a malformed address, and a coordinator that does not accept a connection within
``timeout`` seconds (checked with a plain TCP connection before JAX's client starts, because JAX's client aborts
the whole process when it cannot register).
"""

from __future__ import annotations

import os
import re
import socket
import time
from typing import Mapping

import jax
from jax._src import distributed as _jax_distributed  # its client's barrier takes a timeout

from nemic.core.errors import ConfigError

__all__ = ["initialize", "settings_from_env", "is_writer", "process_index", "process_count", "sync",
           "first_slurm_host"]

DEFAULT_PORT = 12321
_BARRIERS = {"n": 0}


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``"gpu[003-007,012],cpu1"`` -> ``"gpu003"``."""
    m = re.match(r"^([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ConfigError(f"cannot read the Slurm node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int(env: Mapping[str, str], name: str) -> int | None:
    v = env.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"environment variable {name}={v!r} is not an integer") from None


def settings_from_env(env: Mapping[str, str] | None = None) -> dict:
    """``{"coordinator", "num_processes", "process_id"}`` read from a launcher's environment (``None`` where
    absent), in the order JAX, Slurm, Open MPI."""
    env = os.environ if env is None else env
    out = {"coordinator": env.get("JAX_COORDINATOR_ADDRESS") or None,
           "num_processes": _int(env, "JAX_NUM_PROCESSES"), "process_id": _int(env, "JAX_PROCESS_ID")}
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        out["num_processes"] = out["num_processes"] if out["num_processes"] is not None else _int(env, "SLURM_NTASKS")
        out["process_id"] = out["process_id"] if out["process_id"] is not None else _int(env, "SLURM_PROCID")
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if out["coordinator"] is None and nodes:
            port = _int(env, "NEMIC_COORDINATOR_PORT") or DEFAULT_PORT
            out["coordinator"] = f"{first_slurm_host(nodes)}:{port}"
    elif "OMPI_COMM_WORLD_RANK" in env:
        out["num_processes"] = out["num_processes"] if out["num_processes"] is not None else _int(
            env, "OMPI_COMM_WORLD_SIZE")
        out["process_id"] = out["process_id"] if out["process_id"] is not None else _int(env, "OMPI_COMM_WORLD_RANK")
    return out


def _split_address(address: str) -> tuple[str, int]:
    m = re.match(r"^\[?([^\]]+?)\]?:(\d+)$", address.strip())
    if not m or not (0 < int(m.group(2)) < 65536):
        raise ConfigError(f"coordinator address must be HOST:PORT (e.g. node001:12321), got {address!r}")
    return m.group(1), int(m.group(2))


def _wait_for(host: str, port: int, timeout: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; one-line ConfigError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise ConfigError(f"the coordinator {host}:{port} did not answer within {timeout:g} s "
                                  "(is process 0 running, and is the address reachable?)") from None
            time.sleep(0.2)


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout: float = 60.0, *, local_device_ids: list[int] | None = None) -> bool:
    """Join (or, as process 0, start) a group of ``num_processes`` JAX processes.

    Must be called before any JAX computation. With one process (or nothing set anywhere) it does nothing.

    Args:
        coordinator: ``HOST:PORT`` of process 0 (default: from the environment, see the module docs).
        num_processes: number of processes (default: from the environment).
        process_id: this process's rank, ``0 .. num_processes - 1`` (default: from the environment).
        timeout: seconds to wait for the coordinator (and for JAX's registration of all processes).
        local_device_ids: the devices of this host that this process uses (default: all).

    Returns:
        True when a multi-process group was joined, False for a single process.

    Raises:
        ConfigError: a process id out of range, a missing or malformed coordinator address, a non-positive
            timeout, or a coordinator that does not answer within ``timeout`` (one line each).
    """
    env = settings_from_env()
    coordinator = coordinator if coordinator is not None else env["coordinator"]
    num_processes = num_processes if num_processes is not None else env["num_processes"]
    process_id = process_id if process_id is not None else env["process_id"]
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if num_processes is None and process_id is None and coordinator is None:
        return False
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise ConfigError(f"the number of processes must be an integer >= 1, got {num_processes!r}")
    if num_processes == 1 and process_id in (None, 0):
        return False
    if not isinstance(process_id, int) or isinstance(process_id, bool) or not 0 <= process_id < num_processes:
        raise ConfigError(f"process id {process_id!r} is out of range: expected 0 .. {num_processes - 1} "
                          f"for {num_processes} processes")
    if not coordinator:
        raise ConfigError("several processes need a coordinator address HOST:PORT (--coordinator, "
                          "JAX_COORDINATOR_ADDRESS or a Slurm job)")
    host, port = _split_address(coordinator)
    if jax.distributed.is_initialized():
        raise ConfigError("jax.distributed is already initialized in this process")
    if process_id != 0:
        _wait_for(host, port, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of several processes
    jax.distributed.initialize(f"{host}:{port}", num_processes, process_id, local_device_ids=local_device_ids,
                               initialization_timeout=max(1, int(timeout)))
    return True


def process_index() -> int:
    """This process's rank (0 in a single process; asks no backend to start unless ``jax.distributed`` is on)."""
    return jax.process_index() if jax.distributed.is_initialized() else 0


def process_count() -> int:
    """Number of processes (1 unless :func:`initialize`, or ``jax.distributed.initialize``, joined a group)."""
    return jax.process_count() if jax.distributed.is_initialized() else 1


def is_writer() -> bool:
    """True in the one process that writes outputs and checkpoints (process 0)."""
    return process_index() == 0


def sync(name: str, timeout: float = 600.0) -> None:
    """A barrier of all processes (nothing in a single process); a one-line ConfigError after ``timeout`` s."""
    if process_count() == 1:
        return
    _BARRIERS["n"] += 1
    try:
        _jax_distributed.global_state.client.wait_at_barrier(f"nemic-{name}-{_BARRIERS['n']}", int(timeout * 1000))
    except Exception as e:  # noqa: BLE001 (XlaRuntimeError: deadline exceeded)
        raise ConfigError(f"processes did not all reach '{name}' within {timeout:g} s ({type(e).__name__})") from None

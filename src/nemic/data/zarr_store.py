"""Reference trajectories and training sets larger than memory: chunked zarr stores with CF metadata.

* :func:`write_zarr` writes a Dataset (in memory or Dask-backed) as a zarr store chunked along ``(member, time)``,
  atomically (a temporary store renamed into place).
* :func:`generate_ensemble` runs a large reference ensemble in chunks of members and writes each chunk into its
  region of the store as soon as it finishes; a killed generation resumes where it stopped, recomputing no
  finished chunk (a sidecar file ``.<name>.chunks.json``, written atomically after each region, lists them).
* :func:`open_zarr` reads a store lazily (xarray + Dask): nothing is loaded until a batch asks for it.

Streaming the windows of such a store into training batches is :class:`nemic.data.streaming.StreamingWindowSampler`.

zarr: Miles et al., zarr-developers/zarr-python (format v3); CF conventions 1.10 for the attributes (units,
long_name, standard_name on every variable; the member axis has ``standard_name = "realization"``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import dask.array as da
import equinox as eqx
import jax
import numpy as np
import xarray as xr
import zarr

from nemic.core.errors import ConfigError, DataError
from nemic.core.process import AbstractProcess
from nemic.core.rollout import ensemble_rollout
from nemic.core.steppers import AbstractStepper
from nemic.io.files import write_json
from nemic.io.output import to_xarray
from nemic.parallel.distributed import is_writer, sync
from nemic.parallel.ensemble import gather, sharded_ensemble_rollout

__all__ = ["write_zarr", "open_zarr", "generate_ensemble", "done_chunks", "COMPLETE"]

#: store attribute set once every chunk of a generated store is written
COMPLETE = "nemic_complete"
_SETTINGS = "nemic_generation"


def _chunking(ds: xr.Dataset, chunks: Mapping[str, int] | None) -> dict[str, int]:
    chunks = dict(chunks or {})
    for dim, size in chunks.items():
        if dim not in ds.dims:
            raise ConfigError(f"cannot chunk along {dim!r}: the dataset's dimensions are {', '.join(map(str, ds.dims))}")
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ConfigError(f"chunk size along {dim!r} must be an integer >= 1, got {size!r}")
    return {d: int(chunks.get(d, ds.sizes[d])) for d in ds.dims}


def _encoding(ds: xr.Dataset, chunks: dict[str, int]) -> dict[str, dict]:
    return {v: {"chunks": tuple(chunks[d] for d in ds[v].dims)} for v in ds.data_vars}


def write_zarr(ds: xr.Dataset, path: str | os.PathLike, *, chunks: Mapping[str, int] | None = None) -> Path:
    """Write ``ds`` as a zarr store at ``path`` with the given chunk sizes per dimension (default: one chunk per
    dimension), atomically: into ``.<name>.partial`` first, renamed over ``path`` when complete. A Dask-backed
    ``ds`` is written chunk by chunk, never held in memory whole."""
    path = Path(path)
    ch = _chunking(ds, chunks)
    tmp = path.parent / f".{path.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ds.chunk({d: c for d, c in ch.items()}) if ds.chunks is not None or any(
        ch[d] < ds.sizes[d] for d in ds.dims) else ds
    out = out.copy()
    out.attrs = {**ds.attrs, COMPLETE: 1}
    for v in out.variables:
        out[v].encoding = {}
    out.to_zarr(tmp, mode="w", encoding=_encoding(out, ch), consolidated=False, zarr_format=3)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def open_zarr(path: str | os.PathLike, *, require_complete: bool = True) -> xr.Dataset:
    """Open a zarr store lazily (Dask arrays, one Dask chunk per zarr chunk).

    Raises:
        DataError: a missing path, a directory that is not a zarr store, or (with ``require_complete``) a
            generation that has not finished (one line).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no zarr store at '{path}'")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.GroupNotFoundError) as e:
        raise DataError(f"'{path}' is not a readable zarr store ({type(e).__name__})") from None
    if require_complete and not ds.attrs.get(COMPLETE):
        raise DataError(f"'{path}' is an unfinished generation ({len(done_chunks(path))} chunks written); "
                        "run the generation again to finish it")
    return ds


def _sidecar(path: Path) -> Path:
    return path.parent / f".{path.name}.chunks.json"


def done_chunks(path: str | os.PathLike) -> list[int]:
    """Indices of the member chunks of a generation at ``path`` that are written (all of them once complete)."""
    path = Path(path)
    side = _sidecar(path)
    if side.is_file():
        return sorted(json.loads(side.read_text())["done"])
    if path.exists():
        attrs = zarr.open_group(path, mode="r").attrs
        if attrs.get(COMPLETE):
            return list(range(int(json.loads(attrs[_SETTINGS])["n_chunks"])))
    return []


def _digest(*trees: Any) -> str:
    h = hashlib.sha256()
    for tree in trees:
        buf = io.BytesIO()
        arrays = eqx.filter(tree, eqx.is_array)
        if arrays is not None and jax.tree_util.tree_leaves(arrays):
            eqx.tree_serialise_leaves(buf, jax.tree_util.tree_map(
                lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                arrays))
        h.update(buf.getvalue())
    return h.hexdigest()[:16]


def generate_ensemble(
    path: str | os.PathLike,
    process: AbstractProcess,
    stepper: AbstractStepper,
    states0: Any,
    *,
    dt: float,
    n_steps: int,
    chunk_members: int,
    keys: Any = None,
    save_every: int = 1,
    time_chunk: int | None = None,
    attrs: Mapping[str, Any] | None = None,
    mesh: Any = None,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> Path:
    """Run an ensemble of ``n_members`` in chunks of ``chunk_members`` and write each chunk into the zarr store
    at ``path`` (dims ``(member, time, ...)``, chunked ``(chunk_members, time_chunk)``) as soon as it finishes.

    A rerun with the same settings skips the chunks already written (a killed generation resumes); a store
    written with other settings (model parameters, initial states, keys, steps) is refused, never mixed.

    Args:
        path: the zarr store (a directory).
        process, stepper, dt, n_steps, save_every, **kwargs: as :func:`~nemic.core.rollout.ensemble_rollout`.
        states0: initial states with a leading member axis (n_members, ...).
        chunk_members: members per chunk (must divide n_members); one chunk is computed at a time, so memory
            holds one chunk's trajectory, not the ensemble's.
        keys: one key per member (n_members,) or ``None``.
        time_chunk: saves per zarr chunk along time (default: all saves in one chunk).
        attrs: global attributes of the store (model parameters, ``model.to_attrs()``).
        mesh: run each chunk sharded over this mesh's ``ensemble`` axis (:mod:`nemic.parallel`).
        progress: ``progress(chunks_done, n_chunks)`` after each chunk; it also sees the skipped ones first.

    Returns:
        ``path``; open it with :func:`open_zarr`.
    """
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(states0)
    if not leaves or any(np.ndim(x) == 0 for x in leaves):
        raise DataError("generate_ensemble needs initial states with a leading member axis")
    n_members = int(np.shape(leaves[0])[0])
    if not isinstance(chunk_members, (int, np.integer)) or chunk_members < 1 or n_members % chunk_members:
        raise ConfigError(f"chunk_members must be a divisor of the {n_members} members, got {chunk_members!r}")
    if keys is not None and int(np.shape(keys)[0]) != n_members:
        raise DataError(f"{int(np.shape(keys)[0])} keys for {n_members} members")
    n_chunks = n_members // chunk_members
    settings = {"n_members": n_members, "chunk_members": int(chunk_members), "n_chunks": n_chunks,
                "n_steps": int(n_steps), "dt": float(dt), "save_every": int(save_every),
                "process": type(process).__name__, "digest": _digest(process, states0, keys)}
    side = _sidecar(path)
    done = set(_check_existing(path, settings))
    if progress is not None:
        progress(len(done), n_chunks)

    run = eqx.filter_jit(lambda p, s0, k: ensemble_rollout(p, stepper, s0, keys=k, dt=dt, n_steps=n_steps,
                                                             save_every=save_every, **kwargs))

    def run_chunk(i: int):
        sl = slice(i * chunk_members, (i + 1) * chunk_members)
        s0 = jax.tree_util.tree_map(lambda x: x[sl], states0)
        k = None if keys is None else keys[sl]
        if mesh is None:
            traj = run(process, s0, k)  # compiled once for all chunks
        else:
            traj = sharded_ensemble_rollout(process, stepper, s0, keys=k, mesh=mesh, dt=dt, n_steps=n_steps,
                                            save_every=save_every, **kwargs)
        return to_xarray(gather(traj), attrs=attrs)

    for i in range(n_chunks):
        if i in done:
            continue
        ds = run_chunk(i)
        if is_writer():
            if not path.exists():
                _create(path, ds, n_members, chunk_members, time_chunk, settings)
            region = ds.drop_vars([v for v in ds.variables if "member" not in ds[v].dims])
            region.to_zarr(path, region={"member": slice(i * chunk_members, (i + 1) * chunk_members)},
                           consolidated=False)
            done.add(i)
            write_json({"settings": settings, "done": sorted(done)}, side)
        else:
            done.add(i)
        sync(f"chunk {i} of {path.name}")
        if progress is not None:
            progress(len(done), n_chunks)
    if is_writer():
        zarr.open_group(path, mode="r+").attrs[COMPLETE] = 1
        side.unlink(missing_ok=True)
    sync(f"complete {path.name}")
    return path


def _check_existing(path: Path, settings: dict) -> list[int]:
    """The chunks already written by a generation with these settings; ConfigError for other settings."""
    side = _sidecar(path)
    if side.is_file():
        saved = json.loads(side.read_text())
        if saved["settings"] != settings:
            raise ConfigError(f"'{path}' holds a generation with other settings; delete it or choose another path")
        return saved["done"]
    if path.exists():
        try:
            attrs = dict(zarr.open_group(path, mode="r").attrs)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise ConfigError(f"'{path}' exists and is not a nemic zarr store; delete it or choose another "
                              "path") from None
        if attrs.get(_SETTINGS) and json.loads(attrs[_SETTINGS]) == settings:
            return list(range(settings["n_chunks"])) if attrs.get(COMPLETE) else []
        if attrs.get(_SETTINGS):
            raise ConfigError(f"'{path}' holds a generation with other settings; delete it or choose another path")
        # created but no chunk recorded (killed right after creation): start again
        shutil.rmtree(path)
    return []


def _create(path: Path, ds: xr.Dataset, n_members: int, chunk_members: int, time_chunk: int | None,
            settings: dict) -> None:
    """Write the store's metadata and coordinates; data variables are lazy zeros, never computed."""
    template = {}
    for name, var in ds.data_vars.items():
        shape = (n_members,) + var.shape[1:]
        chunks = tuple(chunk_members if d == "member" else (time_chunk or s) if d == "time" else s
                       for d, s in zip(var.dims, shape))
        template[name] = (var.dims, da.zeros(shape, dtype=var.dtype, chunks=chunks), var.attrs)
    tpl = xr.Dataset(template, coords={"time": ds["time"], "member": ("member", np.arange(n_members),
                                                                       ds["member"].attrs)})
    for c in ds.coords:
        if c not in tpl.coords and "member" not in ds[c].dims:
            tpl = tpl.assign_coords({c: ds[c]})
    tpl.attrs = {**ds.attrs, _SETTINGS: json.dumps(settings, sort_keys=True), COMPLETE: 0}
    enc = {v: {"chunks": tpl[v].data.chunksize} for v in tpl.data_vars}
    tpl.to_zarr(path, mode="w", compute=False, encoding=enc, consolidated=False, zarr_format=3)

"""One file format for saved weights and training checkpoints, written atomically, read with one-line errors.

A nemic ``.eqx`` file is one unit::

    line 1   b"nemic-eqx 1 " + JSON header + b"\\n"     (readable with ``head -1 file.eqx``)
    rest     the array leaves, ``equinox.tree_serialise_leaves`` (numpy ``.npy`` records, no pickle)

The header holds what the file is (``format``: ``"module"`` or ``"train-checkpoint"``), the size and SHA-256 of
the leaf payload (so a truncated or corrupt file is detected before anything is read), the *fingerprint* of the
saved pytree (path, shape and dtype of every leaf, so a file from another module is rejected with the first leaf
that differs), and the format's own fields:

* weights (:func:`save_module` / :func:`load_module`): the module ``kind`` (a name in :mod:`nemic.nn.registry`)
  and its ``config`` (JSON hyperparameters that rebuild the skeleton), plus free ``extra`` metadata;
* training checkpoints (:class:`TrainCheckpoint`): step, loss history, the run's PRNG key and free ``info``,
  with the model, the optimiser state and the EMA weights in the payload, all in one file, so the pieces
  always belong together.

Files are written to a temporary file in the target directory, flushed to disk and renamed over the target
(``os.replace``), so an interrupted write leaves the previous file intact; their mode follows the umask (0644
under umask 022), unlike ``tempfile.mkstemp``'s 0600. With several processes (``jax.distributed``) files are
written once, by process 0, and the others wait for them (:mod:`nemic.parallel.distributed`). Every failure to read is one :class:`CheckpointError`
line naming the file and what is wrong. Weights written by nemic before this format (``<name>.eqx`` + a
``<name>.json`` holding ``kind``/``config`` or ``format: nemic.MinkowskiSurrogate/1``) still load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from nemic import __version__
from nemic.core.errors import DataError, NemicError
from nemic.nn.registry import module_spec, register_module, spec_of
from nemic.parallel.distributed import is_writer, sync

__all__ = ["CheckpointError", "TrainCheckpoint", "atomic_write_bytes", "fingerprint", "load_module",
           "read_header", "register_module", "save_module"]

MAGIC = b"nemic-eqx 1 "
_MAX_HEADER = 256 * 1024 * 1024


class CheckpointError(DataError):
    """A weights or checkpoint file is missing, truncated, corrupt, or does not match what it is loaded into."""


# ---------------------------------------------------------------------------------------------- low-level file I/O


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, chunks: list[bytes]) -> Path:
    """Write ``chunks`` to ``path`` atomically (temp file + fsync + ``os.replace``) with mode ``0o666 & ~umask``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _is_leaf_array(x: Any) -> bool:
    return eqx.is_array_like(x)


def fingerprint(tree: Any) -> list[list[Any]]:
    """``[path, shape, dtype]`` of every leaf that ``tree_serialise_leaves`` writes (arrays and Python scalars)."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not _is_leaf_array(leaf):
            continue
        if isinstance(leaf, (bool, int, float, complex)):
            out.append([jax.tree_util.keystr(path), [], type(leaf).__name__])
        else:
            out.append([jax.tree_util.keystr(path), list(np.shape(leaf)), str(np.asarray(leaf).dtype)
                        if not isinstance(leaf, jax.Array) else str(leaf.dtype)])
    return out


def _compare(path: Path, saved: list, wanted: list, what: str) -> None:
    """Raise a one-line :class:`CheckpointError` at the first leaf whose path or shape differs."""
    for i, (s, w) in enumerate(zip(saved, wanted)):
        if s[0] != w[0]:
            raise CheckpointError(f"'{path}' does not match the {what}: leaf {i} is '{s[0]}' in the file but "
                                  f"'{w[0]}' in the {what}")
        if list(s[1]) != list(w[1]):
            raise CheckpointError(f"'{path}' does not match the {what}: leaf '{s[0]}' has shape {tuple(s[1])} in "
                                  f"the file but {tuple(w[1])} in the {what}")
    if len(saved) != len(wanted):
        raise CheckpointError(f"'{path}' does not match the {what}: {len(saved)} leaves in the file, "
                              f"{len(wanted)} in the {what}")


def _write(path: str | os.PathLike, header: dict[str, Any], tree: Any) -> Path:
    """Write one nemic file. With several processes (``jax.distributed``) only process 0 writes; every process
    waits at a barrier until the file is in place, so all of them can read it next."""
    if not is_writer():
        sync(f"write {Path(path).name}")
        return Path(path)
    try:
        return _write_file(path, header, tree)
    finally:
        sync(f"write {Path(path).name}")


def _write_file(path: str | os.PathLike, header: dict[str, Any], tree: Any) -> Path:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    payload = buf.getvalue()
    header = {**header, "leaves": fingerprint(tree), "payload_bytes": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest(), "nemic_version": __version__}
    try:
        text = json.dumps(header, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot write '{path}': its config/metadata is not plain JSON ({e})") from None
    return atomic_write_bytes(path, [MAGIC, text.encode(), b"\n", payload])


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, jax.Array)):
        return np.asarray(o).tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a nemic ``.eqx`` file, after checking that the payload is complete and intact."""
    header, _ = _read(Path(path))
    return header


def _read(path: Path) -> tuple[dict[str, Any], bytes]:
    if not path.exists():
        raise CheckpointError(f"'{path}' does not exist")
    if not path.is_file():
        raise CheckpointError(f"'{path}' is not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                raise CheckpointError(f"'{path}' is not a nemic weights/checkpoint file (it does not start with "
                                      f"{MAGIC.decode().strip()!r})")
            line = f.readline(_MAX_HEADER)
            payload = f.read()
    except OSError as e:
        raise CheckpointError(f"'{path}' cannot be read: {e.strerror or e}") from None
    if not line.endswith(b"\n"):
        raise CheckpointError(f"'{path}' is truncated inside its header")
    try:
        header = json.loads(line)
        size, digest = int(header["payload_bytes"]), str(header["payload_sha256"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"'{path}' has a corrupt header (not the JSON nemic writes)") from None
    if len(payload) < size:
        raise CheckpointError(f"'{path}' is truncated: {len(payload)} of {size} bytes of weights")
    if len(payload) > size or hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"'{path}' is corrupt: the weights do not match the checksum in its header")
    return header, payload


def _cast_to_saved(like: Any, saved: list) -> Any:
    """Give the array leaves of ``like`` the dtypes recorded in the file (e.g. float32 weights under x64)."""
    dtypes = {p: d for p, _, d in saved}

    def cast(path, leaf):
        d = dtypes.get(jax.tree_util.keystr(path))
        if isinstance(leaf, (jax.Array, np.ndarray)) and d is not None and str(leaf.dtype) != d:
            return jax.numpy.asarray(leaf).astype(d)
        return leaf

    return jax.tree_util.tree_map_with_path(cast, like)


def _load_tree(path: Path, header: dict[str, Any], payload: bytes, like: Any, what: str) -> Any:
    _compare(path, header.get("leaves", []), fingerprint(like), what)
    like = _cast_to_saved(like, header.get("leaves", []))
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as e:  # noqa: BLE001  (numpy's reader raises several types on bad records)
        raise CheckpointError(f"'{path}' is corrupt: its weights cannot be read ({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------------------- weights


def _weights_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.suffix == ".eqx" else p.with_name(p.name + ".eqx")


def save_module(path: str | os.PathLike, module: Any, config: dict[str, Any] | None = None, *,
                kind: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Save ``module`` to one file ``path`` (``.eqx`` appended if missing): kind + config + weights.

    Args:
        path: target file.
        module: an Equinox module of a registered kind (:mod:`nemic.nn.registry`).
        config: hyperparameters that rebuild its skeleton (default: the registry's ``config(module)``).
        kind: registry name (default: that of ``type(module)``).
        extra: free JSON metadata (recipe, scores), returned by :func:`read_header`.

    Returns:
        The path written. Refuses (one line) to save a module with a NaN/inf weight.
    """
    spec = module_spec(kind) if kind is not None else spec_of(module)
    config = spec.config(module) if config is None else config
    _check_finite_tree(module, f"weights to be saved in '{_weights_path(path)}'")
    header = {"format": "module", "kind": spec.kind, "config": config, "extra": extra or {}}
    return _write(_weights_path(path), header, module)


def load_module(path: str | os.PathLike, *, kind: str | None = None) -> Any:
    """Rebuild a module saved by :func:`save_module` (or by earlier nemic versions) from ``path``.

    Args:
        path: the ``.eqx`` file (the suffix may be left out).
        kind: if given, the registry kind the file must hold (a file of another kind is an error).

    Every failure (missing, truncated or corrupt file, another module kind, mismatched shapes) is one
    :class:`CheckpointError` line naming the file.
    """
    p = Path(path)
    if not p.exists() and _weights_path(p).exists():
        p = _weights_path(p)
    legacy = _legacy_header(p)
    if legacy is not None:
        header, payload = legacy
    else:
        header, payload = _read(p)
        if header.get("format") != "module":
            raise CheckpointError(f"'{p}' holds a {header.get('format', 'unknown')!r}, not module weights")
    found = header.get("kind")
    if kind is not None and found != kind:
        raise CheckpointError(f"'{p}' holds weights of a {found!r}, not of a {kind!r}")
    try:
        spec = module_spec(found)
        skeleton = spec.build(dict(header.get("config") or {}), jax.random.PRNGKey(0))
    except NemicError as e:
        raise CheckpointError(f"'{p}': {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"'{p}': its config does not rebuild a {found!r} ({e})") from None
    if legacy is not None:
        # old files carry no fingerprint: assume the skeleton's structure with the file's float dtype, check after
        dtype = header.get("extra", {}).get("dtype") or header.get("dtype")
        header = {**header, "leaves": [[p, shp, dtype if dtype and d.startswith("float") else d]
                                       for p, shp, d in fingerprint(skeleton)]}
        out = _load_tree(p, header, payload, skeleton, f"module kind {found!r}")
        _compare(p, fingerprint(out), fingerprint(skeleton), f"module kind {found!r}")
        return out
    return _load_tree(p, header, payload, skeleton, f"module kind {found!r} rebuilt from its config")


def _legacy_header(path: Path) -> tuple[dict[str, Any], bytes] | None:
    """Weights of earlier nemic versions: bare ``<name>.eqx`` + ``<name>.json`` (kind/config or surrogate)."""
    meta_path = path.with_suffix(".json")
    if path.suffix == ".json":
        meta_path, path = path, path.with_suffix(".eqx")
    if not (path.is_file() and meta_path.is_file()):
        return None
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            return None
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError):
        raise CheckpointError(f"'{meta_path}' is not valid JSON") from None
    if isinstance(meta, dict) and "kind" in meta and "config" in meta:
        header = {"kind": meta["kind"], "config": meta["config"], "extra": meta.get("extra", {}),
                  "dtype": meta.get("dtype")}
    elif isinstance(meta, dict) and str(meta.get("format", "")).startswith("nemic.MinkowskiSurrogate/"):
        header = {"kind": "MinkowskiSurrogate", "config": meta.get("hyperparameters", {}), "extra": meta}
    else:
        raise CheckpointError(f"'{meta_path}' does not describe nemic weights (no 'kind'/'config')")
    return {**header, "format": "module"}, path.read_bytes()


def _check_finite_tree(tree: Any, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if eqx.is_inexact_array(leaf) and not bool(np.all(np.isfinite(np.asarray(leaf)))):
            raise CheckpointError(f"refusing to save NaN/inf {what} (leaf '{jax.tree_util.keystr(path)}')")


# -------------------------------------------------------------------------------------------- training checkpoints


class TrainCheckpoint:
    """A training checkpoint: one file holding model, optimiser state, EMA weights, step, history, key and info.

    Args:
        path: the checkpoint file (conventionally ``<name>.ckpt``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def step(self) -> int:
        """The iteration count stored in the checkpoint (header only; checks the file's integrity)."""
        return int(read_header(self.path)["step"])

    def save(self, step: int, model: Any, opt_state: Any, history: list[float], *, ema: Any = None,
             key: Any = None, aux_history: dict[str, list[float]] | None = None,
             info: dict[str, Any] | None = None) -> Path:
        """Write everything at once (atomic); refuses NaN/inf weights (a diverged state is never saved)."""
        _check_finite_tree((model, ema), f"weights to be checkpointed in '{self.path}'")
        header = {"format": "train-checkpoint", "step": int(step), "history": [float(v) for v in history],
                  "aux_history": {k: [float(x) for x in v] for k, v in (aux_history or {}).items()},
                  "key": _key_list(key), "info": info or {}}
        return _write(self.path, header, (model, opt_state, ema))

    def load(self, model_like: Any, opt_state_like: Any, ema_like: Any = None, *,
             key: Any = None) -> dict[str, Any]:
        """Read the checkpoint into the structure of the ``*_like`` pytrees.

        Returns a dict with ``step``, ``model``, ``opt_state``, ``ema``, ``history``, ``aux_history`` and ``info``.
        With ``key`` given, a checkpoint written by a run with another key is a :class:`CheckpointError` (its
        batches would differ from an uninterrupted run's).
        """
        header, payload = _read(self.path)
        if header.get("format") != "train-checkpoint":
            raise CheckpointError(f"'{self.path}' holds {header.get('format', 'unknown')!r}, not a training "
                                  "checkpoint")
        if key is not None and header.get("key") is not None and header["key"] != _key_list(key):
            raise CheckpointError(f"'{self.path}' was written by a training with another random key; delete it "
                                  "or use the same seed")
        model, opt_state, ema = _load_tree(self.path, header, payload, (model_like, opt_state_like, ema_like),
                                           "model and optimiser being trained")
        return {"step": int(header["step"]), "model": model, "opt_state": opt_state, "ema": ema,
                "history": list(header.get("history", [])), "aux_history": dict(header.get("aux_history", {})),
                "info": header.get("info", {})}


def _key_list(key: Any) -> list[int] | None:
    if key is None:
        return None
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(getattr(key, "dtype", None),
                                                               jax.dtypes.prng_key) else key
    return np.asarray(data).astype(np.int64).ravel().tolist()

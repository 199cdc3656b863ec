"""Runs as transactions: a command writes its results into a staging directory that replaces the results
directory whole, in one step, only when the run has finished.

A failed or interrupted rerun therefore leaves the earlier results exactly as they were, and a results directory
never mixes files of two runs. The staging directory ``.<name>.partial`` beside the results directory survives a
failure, so training checkpoints written there let the next run resume; it is removed once the run is in place.

The swap uses Linux's ``renameat2(RENAME_EXCHANGE)`` (one atomic step) where available; elsewhere two renames,
with the old directory kept as ``.<name>.old`` until the new one is in place (and restored by the next run if
the process died between the two renames). A finished run holds ``run.json`` (command, settings, start and end
time, the files written, nemic's version); a directory without it was not written by a finished nemic run.

With several processes (``jax.distributed``, :mod:`nemic.parallel.distributed`) only process 0 stages and commits
the results; the other processes run the same code in a private scratch directory that is discarded, whose
``checkpoints`` entry links to process 0's, so a resumed training reads in every process the checkpoint that
process 0 wrote. Barriers make every process wait until the staging directory exists and until the results are
in place.

Usage::

    with run_transaction(out, command="ebm run", settings=cfg) as stage:
        write_netcdf(ds, stage / "equilibrium.nc")
    # here `out` holds the new results, or (after an exception) the old ones, untouched
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from nemic import __version__
from nemic.core.errors import NemicError
from nemic.io.files import atomic_write, current_umask
from nemic.parallel.distributed import is_writer, process_count, process_index, sync

MANIFEST = "run.json"
#: the entry of a staging directory that every process of a multi-process run shares
SHARED = "checkpoints"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_dir(out: Path) -> Path:
    """The staging directory of results directory ``out``: ``.<name>.partial`` beside it."""
    return out.parent / f".{out.name}.partial"


def _old_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        return lib if hasattr(lib, "renameat2") else None
    except OSError:
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths (Linux renameat2); False where unsupported."""
    lib = _libc()
    if lib is None:
        return False
    res = lib.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(a))


def recover(out: str | os.PathLike) -> None:
    """Finish a swap that a killed process left half done: restore ``out`` from ``.<name>.old`` if it is missing,
    and remove the old copy if ``out`` is complete."""
    out = Path(out)
    old = _old_dir(out)
    if old.exists():
        if not out.exists():
            os.replace(old, out)
        else:
            shutil.rmtree(old, ignore_errors=True)


def _commit(stage: Path, out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise NemicError(f"results path '{out}' exists and is not a directory")
        if _exchange(stage, out):  # stage now holds the old results
            shutil.rmtree(stage, ignore_errors=True)
            return
        old = _old_dir(out)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _prepare(out: Path, resume: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NemicError(f"results path '{out}' exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NemicError(f"cannot create '{out.parent}': {e.strerror or e}") from None
    recover(out)
    stage = staging_dir(out)
    if stage.exists() and not resume:
        shutil.rmtree(stage)
    try:
        stage.mkdir(exist_ok=True)
        os.chmod(stage, 0o777 & ~current_umask())
        probe = stage / ".nemic-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise NemicError(f"results directory '{out}' cannot be written: {e.strerror or e}") from None
    return stage


@contextmanager
def run_transaction(
    out: str | os.PathLike,
    *,
    command: str = "",
    settings: Mapping[str, Any] | None = None,
    resume: bool = True,
) -> Iterator[Path]:
    """Stage a run's outputs and put them in place at ``out`` only when the block finishes without an exception.

    Args:
        out: the results directory (replaced whole on success; untouched on failure).
        command: the command name recorded in ``run.json``.
        settings: the run's settings recorded in ``run.json`` (JSON-serialisable).
        resume: keep an existing staging directory (its checkpoints let a killed run resume); ``False`` starts
            from an empty one.

    Yields:
        The staging directory to write into.
    """
    out = Path(out)
    if process_count() > 1 and not is_writer():
        yield from _follow(out)
        return
    stage = _prepare(out, resume)
    if process_count() > 1:
        (stage / SHARED).mkdir(exist_ok=True)
        sync(f"stage {out.name}")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    yield stage
    if process_count() > 1 and (stage / SHARED).is_dir() and not any((stage / SHARED).iterdir()):
        (stage / SHARED).rmdir()
    manifest = {"command": command, "settings": dict(settings or {}), "started": started,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "nemic_version": __version__,
                "files": [f for f in _files(stage) if f != MANIFEST]}
    atomic_write(stage / MANIFEST, lambda tmp: Path(tmp).write_text(
        json.dumps(manifest, indent=2, default=str, allow_nan=False) + "\n"))
    _commit(stage, out)
    if process_count() > 1:
        sync(f"commit {out.name}")


def _follow(out: Path) -> Iterator[Path]:
    """A process other than 0: a scratch directory (discarded) whose ``checkpoints`` links to process 0's."""
    sync(f"stage {out.name}")
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.process{process_index()}."))
    try:
        (scratch / SHARED).symlink_to(staging_dir(out).resolve() / SHARED, target_is_directory=True)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sync(f"commit {out.name}")


def is_finished_run(path: str | os.PathLike) -> bool:
    """True when ``path`` holds the results of a finished nemic run (its ``run.json`` lists files that exist)."""
    p = Path(path)
    m = p / MANIFEST
    if not m.is_file():
        return False
    try:
        files = json.loads(m.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return False
    return all((p / f).is_file() for f in files)

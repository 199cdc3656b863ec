"""Files written safely: atomic writes (temporary file, then rename) with the umask's mode, and JSON that is
always valid (non-finite numbers are written as ``null``). Light: imports no xarray or matplotlib."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nemic.core.errors import NemicError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it; raise a one-line error otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".nemic-write-test-"):
            pass
    except OSError as e:
        raise NemicError(f"output directory '{p}' cannot be written: {e.strerror or e}") from None
    return p


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename to ``path``, so an interrupted write never leaves a partial file.

    The file's mode follows the umask (0644 under umask 022), not the 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically; NaN and infinities become ``null`` (JSON has no NaN)."""
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(finite_json(obj), f, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
            f.write("\n")

    return atomic_write(path, w)


def finite_json(obj: Any) -> Any:
    """``obj`` with arrays as lists and every non-finite float replaced by ``None``."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        a = np.asarray(obj)
        return finite_json(a.item() if a.ndim == 0 else a.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.generic,)):
        return o.item()
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")

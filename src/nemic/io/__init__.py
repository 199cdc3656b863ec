"""Files, terminals and plots: CF-annotated xarray output, atomic writes, run transactions, progress bars.

The only package (with :mod:`nemic.cli` and the recipes) that knows about files and the terminal; the physics
(:mod:`nemic.core`, :mod:`nemic.models`) never imports it. Names are loaded on first use (PEP 562), so that
``import nemic.io.runs`` or a command's ``--help`` does not pay for xarray and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "atomic_write": "files", "ensure_writable_dir": "files", "write_json": "files", "finite_json": "files",
    "save_figure": "output", "to_xarray": "output", "write_netcdf": "output",
    "progress": "terminal", "progress_bar": "terminal",
    "run_transaction": "runs", "is_finished_run": "runs",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"nemic.io.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'nemic.io' has no attribute {name!r}")

"""Experiment configurations and runs: dataclasses that reject unknown keys, wrong types and impossible values with
one-line errors, readable-file checks, and :func:`staged_run`, the one way a recipe writes its results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, TypeVar

from nemic.core.errors import ConfigError, NemicError
from nemic.io.runs import is_finished_run, run_transaction

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover  (Python 3.10)
    import tomli as tomllib

C = TypeVar("C")

#: the folder of a staging directory that survives a failed run (training checkpoints, for resuming)
CHECKPOINTS = "checkpoints"


def _check_type(cls_name: str, key: str, default: Any, v: Any) -> Any:
    """``v`` converted to the type of ``default`` (int -> float allowed), or a :class:`ConfigError`."""
    if default is None:
        return v
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"config key {key!r} of {cls_name} must be true or false, got {v!r}")
    elif isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"config key {key!r} of {cls_name} must be an integer, got {v!r}")
    elif isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"config key {key!r} of {cls_name} must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"config key {key!r} of {cls_name} must be finite, got {v!r}")
    elif isinstance(default, str):
        if not isinstance(v, str):
            raise ConfigError(f"config key {key!r} of {cls_name} must be a string, got {v!r}")
    elif isinstance(default, tuple):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"config key {key!r} of {cls_name} must be a list, got {v!r}")
        v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return v


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build the dataclass ``cls`` from ``values``, rejecting unknown keys (with the list of known ones) and values
    whose type differs from the default's (an integer where a number is expected is accepted)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a {cls.__name__} configuration must be a table of key = value settings, "
                          f"got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}; known keys: {sorted(known)}")
    kwargs = {}
    for k, v in values.items():
        f = known[k]
        default = f.default if not isinstance(f.default, dataclasses._MISSING_TYPE) else None
        kwargs[k] = _check_type(cls.__name__, k, default, v)
    try:
        return cls(**kwargs)
    except NemicError:
        raise
    except (TypeError, ValueError) as e:  # a check comparing values of the wrong kind
        raise ConfigError(f"invalid {cls.__name__} settings: {' '.join(str(e).split())}") from None


def check_readable_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path if it is an existing, readable regular file; a one-line :class:`ConfigError` otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} '{p}' does not exist")
    if p.is_dir():
        raise ConfigError(f"{what} '{p}' is a directory, expected a file")
    if not p.is_file():
        raise ConfigError(f"{what} '{p}' is not a regular file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{what} '{p}' cannot be read (permission denied)")
    return p


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in a TOML (``.toml``) or JSON (any other suffix) file, as a dict; one-line errors for a missing,
    unreadable, binary or malformed file."""
    p = check_readable_file(path, "config file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}' is binary or not UTF-8 text; expected TOML or JSON") from None
    except OSError as e:
        raise ConfigError(f"config file '{p}' cannot be read: {e.strerror or e}") from None
    if "\x00" in text:
        raise ConfigError(f"config file '{p}' is binary; expected TOML or JSON")
    kind = "TOML" if p.suffix == ".toml" else "JSON"
    try:
        values = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file '{p}' is not valid {kind}: {' '.join(str(e).split())}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{p}' must hold a table of settings, got a {type(values).__name__}")
    return values


def load_config(cls: type[C], path: str | Path | None, overrides: dict[str, Any] | None = None) -> C:
    """Read a TOML or JSON file into ``cls`` (missing keys keep their defaults), then apply ``overrides``."""
    values: dict[str, Any] = {} if path is None else read_config_file(path)
    values.update(overrides or {})
    return from_dict(cls, values)


def quick_keeping_changes(cfg: C, quick: C) -> C:
    """The quick settings ``quick`` with every setting of ``cfg`` that differs from its class's defaults kept:
    what a user changed in ``--config`` or on the command line wins over the quick sizes."""
    defaults = type(cfg)()
    changed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
               if getattr(cfg, f.name) != getattr(defaults, f.name)}
    return dataclasses.replace(quick, **changed)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short hash of JSON-serialisable settings (checkpoints resume only under the very same settings)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_replaceable(out: str | os.PathLike) -> None:
    """Refuse (one line) a results path that a run must not replace: a file, or a non-empty directory that is not
    a finished nemic run (no ``run.json``), such as a home directory given as ``--out`` by mistake."""
    p = Path(out)
    if not p.exists():
        return
    if not p.is_dir():
        raise ConfigError(f"results path '{p}' exists and is not a directory")
    if any(p.iterdir()) and not is_finished_run(p):
        raise ConfigError(f"'{p}' is not empty and does not hold the results of a finished nemic run (no run.json); "
                          "a run replaces its --out whole, so choose a new or empty directory")


@contextmanager
def staged_run(out: str | os.PathLike, command: str, settings: Mapping[str, Any] | None = None, *,
               keep_checkpoints: bool = False) -> Iterator[Path]:
    """Write a run's results into a staging directory that replaces ``out`` whole when the block succeeds
    (:func:`nemic.io.runs.run_transaction`); after a failure or an interrupt ``out`` is exactly as it was.

    Files left in the staging directory by an earlier failed run are removed first, except its ``checkpoints/``
    folder, which lets a killed training resume (keyed by a hash of its settings). The checkpoints are removed
    before the results are put in place unless ``keep_checkpoints``. A directory that holds other files than a
    finished nemic run's is refused (:func:`check_replaceable`), never replaced.
    """
    check_replaceable(out)
    with run_transaction(out, command=command, settings=settings or {}, resume=True) as stage:
        for p in list(stage.iterdir()):
            if p.name == CHECKPOINTS and p.is_dir():
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        yield stage
        if not keep_checkpoints:
            shutil.rmtree(stage / CHECKPOINTS, ignore_errors=True)

"""Experiment configurations: dataclasses that reject unknown keys and impossible values with one-line errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from nemic.core.errors import ConfigError, NemicError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover  (Python 3.10)
    import tomli as tomllib

C = TypeVar("C")


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build the dataclass ``cls`` from ``values``, rejecting unknown keys (with the list of known ones)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}; known keys: {sorted(known)}")
    kwargs = {}
    for k, v in values.items():
        default = getattr(cls, k, None) if not isinstance(known[k].default, dataclasses._MISSING_TYPE) else None
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kwargs[k] = v
    return cls(**kwargs)


def load_config(cls: type[C], path: str | Path | None, overrides: dict[str, Any] | None = None) -> C:
    """Read a TOML or JSON file into ``cls`` (missing keys keep their defaults), then apply ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise NemicError(f"config file '{p}' does not exist")
        text = p.read_text()
        try:
            values = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"config file '{p}' is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}") from None
    values.update(overrides or {})
    return from_dict(cls, values)

"""Saving and loading modules and training state without pickle.

A module is saved as two files: ``<name>.eqx`` holding its array leaves (``equinox.tree_serialise_leaves``) and
``<name>.json`` holding the class name and the hyperparameters needed to rebuild its skeleton. Loading rebuilds the
skeleton from the JSON and fills in the leaves, so saved weights survive JAX/Equinox upgrades.

Training state (model + optimiser state + step + loss history) is saved the same way by :class:`TrainCheckpoint`
so long trainings can resume. All writes are atomic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax

from nemic import __version__
from nemic.core.errors import ConfigError, NemicError
from nemic.core.output import atomic_write, write_json

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_module(name: str, builder: Callable[..., Any]) -> None:
    """Register ``builder(**config, key=...)`` that rebuilds the skeleton of modules saved under ``name``."""
    _BUILDERS[name] = builder


def _builtin_builders() -> None:
    if "LocalStencilMLP" not in _BUILDERS:
        from nemic.nn.mlp import LocalStencilMLP

        register_module("LocalStencilMLP", LocalStencilMLP)


def save_module(path: str | Path, module: Any, config: dict[str, Any], *, kind: str | None = None,
                extra: dict[str, Any] | None = None) -> Path:
    """Save ``module`` to ``path.eqx`` + ``path.json``; ``config`` rebuilds it via the registered builder."""
    path = Path(path)
    kind = kind or type(module).__name__
    atomic_write(path.with_suffix(".eqx"), lambda tmp: eqx.tree_serialise_leaves(tmp, module))
    write_json({"kind": kind, "config": config, "nemic_version": __version__, "extra": extra or {}},
               path.with_suffix(".json"))
    return path.with_suffix(".eqx")


def load_module(path: str | Path) -> Any:
    """Load a module saved by :func:`save_module`."""
    _builtin_builders()
    path = Path(path)
    meta_path, leaves_path = path.with_suffix(".json"), path.with_suffix(".eqx")
    for p in (meta_path, leaves_path):
        if not p.exists():
            raise NemicError(f"saved module file '{p}' does not exist")
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind not in _BUILDERS:
        raise ConfigError(f"no builder registered for saved module kind {kind!r}")
    skeleton = _BUILDERS[kind](**meta["config"], key=jax.random.PRNGKey(0))
    return eqx.tree_deserialise_leaves(leaves_path, skeleton)


class TrainCheckpoint:
    """Save and resume ``(model, opt_state)`` with the step count and loss history in directory ``directory``."""

    def __init__(self, directory: str | Path, name: str = "train_state"):
        self.dir = Path(directory)
        self.name = name

    @property
    def leaves_path(self) -> Path:
        return self.dir / f"{self.name}.eqx"

    @property
    def meta_path(self) -> Path:
        return self.dir / f"{self.name}.json"

    def exists(self) -> bool:
        return self.leaves_path.exists() and self.meta_path.exists()

    def save(self, step: int, model: Any, opt_state: Any, history: list[float], info: dict | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.leaves_path, lambda tmp: eqx.tree_serialise_leaves(tmp, (model, opt_state)))
        write_json({"step": step, "history": history, "info": info or {}}, self.meta_path)

    def load(self, model_like: Any, opt_state_like: Any) -> tuple[int, Any, Any, list[float], dict]:
        """Return ``(step, model, opt_state, history, info)``; the ``*_like`` pytrees give the structure."""
        meta = json.loads(self.meta_path.read_text())
        model, opt_state = eqx.tree_deserialise_leaves(self.leaves_path, (model_like, opt_state_like))
        return int(meta["step"]), model, opt_state, list(meta["history"]), meta.get("info", {})

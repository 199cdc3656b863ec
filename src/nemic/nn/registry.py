"""A registry of module kinds, so that saved weights can rebuild the module they came from.

Every network class that may be saved registers itself where it is defined::

    @register_module("LocalStencilMLP")
    class LocalStencilMLP(eqx.Module):
        ...
        def config(self) -> dict: ...   # JSON hyperparameters that rebuild the skeleton

A :class:`ModuleSpec` holds the class, ``build(config, key) -> module`` (default ``cls(**config, key=key)``) and
``config(module) -> dict`` (default ``module.config()``). Classes defined elsewhere (e.g. ``equinox.nn.MLP``) are
registered with explicit ``build``/``config`` functions. :func:`nemic.train.checkpoint.save_module` stores the kind
and the config next to the weights, and :func:`nemic.train.checkpoint.load_module` rebuilds the skeleton through
this registry before filling in the weights (the Equinox serialisation pattern,
https://docs.kidger.site/equinox/examples/serialisation/).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from nemic.core.errors import ConfigError

__all__ = ["ModuleSpec", "module_spec", "register_module", "registered_kinds", "spec_of"]


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """How to rebuild and describe one kind of saved module.

    Attributes:
        kind: the name stored in weight files.
        cls: the class of the modules of this kind.
        build: ``build(config: dict, key) -> module``, a skeleton with the right structure (any weights).
        config: ``config(module) -> dict``, JSON-serialisable hyperparameters that ``build`` accepts.
    """

    kind: str
    cls: type
    build: Callable[[dict[str, Any], Any], Any]
    config: Callable[[Any], dict[str, Any]]


_REGISTRY: dict[str, ModuleSpec] = {}
_BY_CLASS: dict[type, ModuleSpec] = {}


def _default_build(cls: type) -> Callable[[dict[str, Any], Any], Any]:
    def build(config: dict[str, Any], key: Any) -> Any:
        return cls(**config, key=key)

    return build


def _default_config(module: Any) -> dict[str, Any]:
    return module.config()


def register_module(kind: str, cls: type | None = None, *, build: Callable | None = None,
                    config: Callable | None = None):
    """Register a module class under ``kind``; usable as a class decorator (``@register_module("Name")``).

    Registering the same class under the same kind again (e.g. on a module reload) replaces the entry; a
    different class under an existing kind is a :class:`ConfigError`.
    """

    def add(c: type) -> type:
        old = _REGISTRY.get(kind)
        if old is not None and old.cls.__qualname__ != c.__qualname__:
            raise ConfigError(f"module kind {kind!r} is already registered for {old.cls.__qualname__}")
        spec = ModuleSpec(kind, c, build or _default_build(c), config or _default_config)
        _REGISTRY[kind] = spec
        _BY_CLASS[c] = spec
        return c

    return add(cls) if cls is not None else add


def module_spec(kind: str) -> ModuleSpec:
    """The :class:`ModuleSpec` registered under ``kind``; a one-line :class:`ConfigError` if there is none."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"no module kind {kind!r} is registered (known: {', '.join(sorted(_REGISTRY))}); "
                          "import the module that defines it first") from None


def spec_of(module: Any) -> ModuleSpec:
    """The :class:`ModuleSpec` of ``module``'s class (exact class, not a subclass)."""
    try:
        return _BY_CLASS[type(module)]
    except KeyError:
        raise ConfigError(f"{type(module).__qualname__} is not a registered module kind; register it with "
                          "nemic.nn.registry.register_module") from None


def registered_kinds() -> list[str]:
    """Names of all registered module kinds, sorted."""
    return sorted(_REGISTRY)

"""The one model API: a model is a Process with a static grid, an initial state, a default stepper and
parameters that round-trip through dataset attributes.

Every nemic model (Lorenz-96, the energy balance model, two-layer QG, the global atmosphere) subclasses
:class:`AbstractModel`, so one driver (:func:`nemic.core.rollout.simulate`) runs all of them and one pair of
functions (:meth:`AbstractModel.to_attrs`, :meth:`AbstractModel.from_attrs`) writes a model into a netCDF file
and rebuilds it from one. Closures, coarseners, guards and nudging terms hold the model's *grid* (a small static
object), never the model, so a hybrid model's pytree holds each physical parameter once.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from typing import Any, Mapping

import jax
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.core.process import AbstractProcess, PyTree

#: dataset attribute holding the model's class name; its parameters are stored as ``<prefix><name>``
MODEL_ATTR = "nemic_model"


def _plain(v: Any) -> Any:
    """A parameter value as a netCDF-attribute-friendly Python number, string or list."""
    if isinstance(v, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a.tolist()
    if isinstance(v, bool):
        return int(v)
    return v


class AbstractModel(AbstractProcess):
    """Base class of nemic models.

    A subclass provides ``tendency`` (the process), :meth:`initial_state`, :meth:`default_stepper` and, when
    its constructor arguments are not all fields of the same name, :meth:`params`. Shape-determining settings
    (grid sizes) are static fields; calibratable parameters are array fields (``jax.grad`` reaches them).
    """

    @abc.abstractmethod
    def initial_state(self, key: Any = None, **kwargs: Any) -> PyTree:
        """A valid initial state (random when the model's initial state is random: then ``key`` is required)."""

    @abc.abstractmethod
    def default_stepper(self) -> Any:
        """The stepper this model is meant to be run with (e.g. RK4, pyqg's filtered AB3, IMEX)."""

    @property
    def grid(self) -> Any:
        """The model's static grid (hashable, holds no trainable arrays); ``None`` for grid-free models."""
        return None

    def check_state(self, state: PyTree) -> None:
        """Raise a one-line :class:`DataError` when ``state`` cannot be stepped by this model."""

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model, as plain numbers (for dataset attributes).

        Default: every constructor argument that is also a field or property of the model.
        """
        out = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name == "self" or not hasattr(self, name):
                continue
            out[name] = _plain(getattr(self, name))
        return out

    def to_attrs(self, prefix: str = "") -> dict[str, Any]:
        """Dataset attributes describing this model: its class name under ``<prefix>nemic_model`` and each
        parameter under ``<prefix><name>``."""
        attrs = {f"{prefix}{MODEL_ATTR}": type(self).__name__}
        attrs.update({f"{prefix}{k}": v for k, v in self.params().items()})
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], prefix: str = "", source: str = "dataset") -> "AbstractModel":
        """Rebuild a model from the attributes written by :meth:`to_attrs` (one-line error if they don't fit)."""
        name = attrs.get(f"{prefix}{MODEL_ATTR}")
        if name is not None and name != cls.__name__:
            raise DataError(f"{source} describes a {name}, not a {cls.__name__}")
        sig = inspect.signature(cls.__init__).parameters
        kwargs = {}
        for k in sig:
            if k == "self":
                continue
            if f"{prefix}{k}" in attrs:
                v = attrs[f"{prefix}{k}"]
                kwargs[k] = v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v
            elif sig[k].default is inspect.Parameter.empty:
                raise DataError(f"{source} has no attribute '{prefix}{k}' needed to rebuild the {cls.__name__}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: cannot rebuild the {cls.__name__} from its attributes: {e}") from None


def field_names(module: Any) -> list[str]:
    """Names of the dataclass fields of an Equinox module."""
    return [f.name for f in dataclasses.fields(module)]

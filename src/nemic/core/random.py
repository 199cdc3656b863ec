"""Stochastic processes: random forcings drawn from the key a rollout supplies.

* :class:`WhiteNoise` draws a new Gaussian forcing every step (held constant over the step).
* :class:`AR1Noise` is the additive AR(1) noise of Arnold et al. (2013, Phil. Trans. R. Soc. A 371, 20110479,
  doi:10.1098/rsta.2011.0479, eq. 2.3 of their additive scheme): ``e_{n+1} = phi e_n + sigma sqrt(1 - phi^2) z_n``
  with ``z_n ~ N(0, 1)`` i.i.d., started from its stationary law ``N(0, sigma^2)``. Its stationary variance is
  ``sigma^2`` and its lag-1 autocorrelation ``phi``; the field is a *noise state* the rollout carries and advances
  once per step, and the process adds ``e_n`` to the tendency of the chosen state variable during step ``n``.

Both act on a state leaf selected by ``field`` (an attribute name such as ``"x"``) or on every leaf (``None``),
and need a key: ``rollout(..., key=jax.random.key(0))``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_positive, is_concrete
from nemic.core.process import AbstractProcess, PyTree, tree_zeros_like


def _select(state: PyTree, field: str | None) -> PyTree:
    if field is None:
        return state
    if not hasattr(state, field):
        raise ConfigError(f"the state {type(state).__name__} has no field {field!r} for the noise to act on")
    return getattr(state, field)


def _embed(state: PyTree, field: str | None, value: PyTree) -> PyTree:
    """A tendency that is ``value`` on ``field`` and zero elsewhere."""
    if field is None:
        return value
    zero = tree_zeros_like(state)
    return eqx.tree_at(lambda s: getattr(s, field), zero, value)


def _normal_like(key: Any, tree: PyTree) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)])


class WhiteNoise(AbstractProcess):
    """Additive white noise: tendency ``sigma z`` with ``z ~ N(0, 1)`` drawn afresh every step.

    Args:
        sigma: standard deviation of the forcing (state units per time unit), scalar or shaped like the field.
        field: the state field it acts on (``None``: every leaf).
    """

    sigma: jax.Array
    field: str | None = eqx.field(static=True)
    stochastic: ClassVar[bool] = True

    def __init__(self, sigma: Any, field: str | None = None):
        check_positive("WhiteNoise sigma", sigma, allow_zero=True)
        self.sigma = jnp.asarray(sigma, dtype=float)
        self.field = field

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        if key is None:
            raise ConfigError("WhiteNoise needs a key: pass key=jax.random.key(seed) to the rollout")
        target = _select(state, self.field)
        noise = jax.tree_util.tree_map(lambda z: self.sigma * z, _normal_like(key, target))
        return _embed(state, self.field, noise)


class AR1Noise(AbstractProcess):
    """Additive AR(1) noise (Arnold et al. 2013): ``e_{n+1} = phi e_n + sigma sqrt(1 - phi^2) z_n``.

    Args:
        sigma: stationary standard deviation of the forcing (state units per time unit).
        phi: lag-1 autocorrelation per step, in [0, 1). For a decorrelation time ``tau`` and step ``dt``,
            ``phi = exp(-dt / tau)``.
        field: the state field it acts on (``None``: every leaf).
        value: the current noise field (bound by the rollout each step; ``None`` outside a rollout).
    """

    sigma: jax.Array
    phi: jax.Array
    field: str | None = eqx.field(static=True)
    value: Any = None
    stochastic: ClassVar[bool] = True

    def __init__(self, sigma: Any, phi: Any, field: str | None = None, value: Any = None):
        check_positive("AR1Noise sigma", sigma, allow_zero=True)
        if is_concrete(phi):  # numpy, not jnp: inside a trace jnp comparisons of constants are tracers
            p = np.asarray(phi, dtype=float)
            if not np.all((p >= 0) & (p < 1)):
                raise ConfigError(f"AR1Noise phi must be in [0, 1), got {phi!r}")
        self.sigma = jnp.asarray(sigma, dtype=float)
        self.phi = jnp.asarray(phi, dtype=float)
        self.field = field
        self.value = value

    def init_noise(self, state, key):
        target = _select(state, self.field)
        return jax.tree_util.tree_map(lambda z: self.sigma * z, _normal_like(key, target))

    def advance_noise(self, noise, key, dt):
        innov = jnp.sqrt(1.0 - self.phi**2) * self.sigma
        return jax.tree_util.tree_map(lambda e, z: self.phi * e + innov * z, noise, _normal_like(key, noise))

    def bind_noise(self, noise):
        return AR1Noise(self.sigma, self.phi, self.field, noise)

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        if self.value is None:
            raise ConfigError("AR1Noise has no noise state: run it through rollout/simulate with a key")
        return _embed(state, self.field, self.value)

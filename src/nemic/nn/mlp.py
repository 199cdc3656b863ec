"""Multilayer perceptrons, including the local periodic-stencil MLP used as a translation-invariant closure."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError
from nemic.nn.registry import register_module

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu,
                "softplus": jax.nn.softplus}


def activation(name: str):
    """The activation function called ``name`` (tanh, relu, gelu, silu, softplus)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


def zero_last_layer(mlp: eqx.nn.MLP) -> eqx.nn.MLP:
    """Return ``mlp`` with the weights and bias of its last layer set to zero (its output is exactly 0)."""
    last = mlp.layers[-1]
    mlp = eqx.tree_at(lambda m: m.layers[-1].weight, mlp, jnp.zeros_like(last.weight))
    if last.bias is not None:
        mlp = eqx.tree_at(lambda m: m.layers[-1].bias, mlp, jnp.zeros_like(last.bias))
    return mlp


@register_module("LocalStencilMLP")
class LocalStencilMLP(eqx.Module):
    """A pointwise MLP applied to every site of a periodic 1-D field together with its neighbours.

    For a field ``x`` of shape (K,), site k sees ``(x_{k-w}, ..., x_{k+w})`` (periodic), normalised by the fixed
    ``in_mean``/``in_std``; the MLP output is multiplied by ``out_scale``. Because the same MLP is applied at every
    site the map is local and commutes with cyclic shifts (translation invariance), like a 1-D convolution with a
    nonlinear kernel (e.g. Rasp 2020, Geosci. Model Dev. 13, 2185-2196, doi:10.5194/gmd-13-2185-2020).

    Normalisation constants are not trained (gradients are stopped).

    Hyperparameters (``config()``): ``halfwidth``, ``width``, ``depth``, ``activation``, ``zero_init``.
    """

    mlp: eqx.nn.MLP
    in_mean: jax.Array
    in_std: jax.Array
    out_scale: jax.Array
    halfwidth: int = eqx.field(static=True)
    activation_name: str = eqx.field(static=True)

    def __init__(self, halfwidth: int = 2, width: int = 32, depth: int = 2, activation_name: str = "tanh",
                 *, key: jax.Array, in_mean: float = 0.0, in_std: float = 1.0, out_scale: float = 1.0,
                 zero_init: bool = False):
        if halfwidth < 0 or width < 1 or depth < 1:
            raise ConfigError(f"need halfwidth >= 0, width >= 1, depth >= 1; got {halfwidth}, {width}, {depth}")
        self.mlp = eqx.nn.MLP(2 * halfwidth + 1, "scalar", width, depth, activation=activation(activation_name),
                              key=key)
        if zero_init:
            self.mlp = zero_last_layer(self.mlp)
        self.in_mean = jnp.asarray(in_mean, dtype=float)
        self.in_std = jnp.asarray(in_std, dtype=float)
        self.out_scale = jnp.asarray(out_scale, dtype=float)
        self.halfwidth = halfwidth
        self.activation_name = activation_name

    def config(self) -> dict[str, Any]:
        """Hyperparameters needed to rebuild this module's skeleton (see :func:`nemic.train.checkpoint.save_module`)."""
        return {"halfwidth": self.halfwidth, "width": self.mlp.width_size, "depth": self.mlp.depth,
                "activation_name": self.activation_name}

    def stencil(self, x: jax.Array) -> jax.Array:
        """Periodic neighbourhoods: (..., K) -> (..., K, 2w+1) with offsets -w..w."""
        w = self.halfwidth
        return jnp.stack([jnp.roll(x, -o, axis=-1) for o in range(-w, w + 1)], axis=-1)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Map a field of shape (..., K) to a field of the same shape."""
        mean, std, scale = (jax.lax.stop_gradient(v) for v in (self.in_mean, self.in_std, self.out_scale))
        z = (self.stencil(x) - mean) / std
        flat = z.reshape(-1, z.shape[-1])
        out = jax.vmap(self.mlp)(flat).reshape(x.shape)
        return scale * out


def _mlp_config(mlp: eqx.nn.MLP) -> dict[str, Any]:
    names = {fn: name for name, fn in _ACTIVATIONS.items()}
    act = names.get(mlp.activation)
    probe = jnp.asarray([-2.0, 0.5, 3.0])
    if act is None or not bool(jnp.array_equal(mlp.final_activation(probe), probe)):
        raise ConfigError("only MLPs with a named activation (tanh, relu, gelu, silu, softplus) and no final "
                          "activation can be saved")
    return {"in_size": mlp.in_size, "out_size": mlp.out_size, "width_size": mlp.width_size, "depth": mlp.depth,
            "activation": act, "use_bias": mlp.use_bias, "use_final_bias": mlp.use_final_bias}


def _mlp_build(config: dict[str, Any], key: jax.Array) -> eqx.nn.MLP:
    config = dict(config)
    return eqx.nn.MLP(activation=activation(config.pop("activation")), key=key, **config)


# ``equinox.nn.MLP`` (e.g. inside NeuralDiffusivity) saved as kind "MLP"
register_module("MLP", eqx.nn.MLP, build=_mlp_build, config=_mlp_config)

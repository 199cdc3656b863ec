"""A U-Net for super-resolution of precipitation fields (deterministic downscaling).

:class:`SuperResolutionUNet` is the encoder-decoder with skip connections of Ronneberger, Fischer & Brox (2015,
"U-Net: convolutional networks for biomedical image segmentation", MICCAI, doi:10.1007/978-3-319-24574-4_28),
as used for the OPERA super-resolution experiment of the Minkowski image loss (Quarenghi, Cotsakis & Beucler
2026, arXiv:2604.11422):

* **upsampling head**: the coarse input (in_channels, h, w) is repeated over ``factor x factor`` blocks onto the
  fine grid (nearest neighbour; ``factor = 1`` takes an input already on the fine grid);
* **encoder**: ``depth`` levels of [two 3x3 convolutions, GroupNorm, activation] each followed by 2x2 average
  pooling, channels ``width * 2**level``;
* **bottleneck** and **decoder**: nearest-neighbour 2x upsampling, concatenation with the encoder's skip
  features, two convolutions per level;
* **output**: a 1x1 convolution to ``out_channels``; with ``residual`` (default) it is added to the upsampled
  input, and the output convolution starts at zero, so the untrained network *is* nearest-neighbour upsampling
  (a well-defined baseline to improve on, and a stable start).

Convolutions pad with zeros (the patch edges are not periodic). The fine grid's sides must be divisible by
``2**depth``. Shapes are per sample: ``(in_channels, h, w) -> (out_channels, h factor, w factor)``;
:meth:`SuperResolutionUNet.upscale` maps batches of single-channel fields ``(..., h, w) -> (..., H, W)``.

Registered as ``"SuperResolutionUNet"`` in :mod:`nemic.nn.registry`, so it saves and loads with
:func:`nemic.train.checkpoint.save_module` / :func:`~nemic.train.checkpoint.load_module`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError
from nemic.nn.mlp import activation
from nemic.nn.registry import register_module

__all__ = ["ConvBlock", "SuperResolutionUNet"]


def _groups(channels: int, max_groups: int) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class ConvBlock(eqx.Module):
    """Two [3x3 convolution, GroupNorm (Wu & He 2018, arXiv:1803.08494), activation] layers: (C_in, H, W) ->
    (C_out, H, W)."""

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    activation_name: str = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, activation_name: str = "gelu", max_groups: int = 8,
                 *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.conv1 = eqx.nn.Conv2d(in_channels, out_channels, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(out_channels, out_channels, 3, padding=1, key=k2)
        g = _groups(out_channels, max_groups)
        self.norm1 = eqx.nn.GroupNorm(g, out_channels)
        self.norm2 = eqx.nn.GroupNorm(g, out_channels)
        self.activation_name = activation_name

    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation_name)
        x = act(self.norm1(self.conv1(x)))
        return act(self.norm2(self.conv2(x)))


def _pool2(x: jax.Array) -> jax.Array:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _up(x: jax.Array, f: int) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, f, axis=-2), f, axis=-1) if f > 1 else x


@register_module("SuperResolutionUNet")
class SuperResolutionUNet(eqx.Module):
    """U-Net super-resolution network; see the module docstring.

    Args:
        in_channels: input channels (1: the coarse rain rate; more for extra predictors).
        out_channels: output channels (1: the fine rain rate).
        factor: upsampling factor of the head (e.g. 8 or 16 for 128-point patches; 1 if the input is already on
            the fine grid).
        width: channels of the first level (doubled at each level down).
        depth: number of pooling levels (the fine sides must be divisible by ``2**depth``).
        activation_name: ``gelu``, ``relu``, ``silu``, ``tanh`` or ``softplus``.
        residual: add the network's output to the upsampled input channel(s) (needs ``out_channels`` equal to
            ``in_channels`` or 1; with several inputs the first is used).
        max_groups: largest number of GroupNorm groups.
        key: ``jax.random`` key.
    """

    head: eqx.nn.Conv2d
    down: tuple[ConvBlock, ...]
    bottleneck: ConvBlock
    up_convs: tuple[eqx.nn.Conv2d, ...]
    up: tuple[ConvBlock, ...]
    out: eqx.nn.Conv2d
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    factor: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation_name: str = eqx.field(static=True)
    residual: bool = eqx.field(static=True)
    max_groups: int = eqx.field(static=True)

    def __init__(self, in_channels: int = 1, out_channels: int = 1, factor: int = 8, width: int = 32,
                 depth: int = 3, activation_name: str = "gelu", residual: bool = True, max_groups: int = 8,
                 *, key: jax.Array):
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("factor", factor, 1), ("width", width, 1), ("depth", depth, 0), ("max_groups", max_groups, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"SuperResolutionUNet: {name} must be an integer >= {lo}, got {v!r}")
        activation(activation_name)  # one-line error for an unknown name
        if residual and out_channels not in (1, in_channels):
            raise ConfigError(f"residual output needs out_channels 1 or {in_channels}, got {out_channels}")
        keys = iter(jax.random.split(key, 3 * depth + 4))
        chans = [width * 2**i for i in range(depth + 1)]
        self.head = eqx.nn.Conv2d(in_channels, width, 3, padding=1, key=next(keys))
        self.down = tuple(ConvBlock(chans[max(i - 1, 0)] if i else width, chans[i], activation_name, max_groups,
                                    key=next(keys)) for i in range(depth))
        self.bottleneck = ConvBlock(chans[depth - 1] if depth else width, chans[depth], activation_name, max_groups,
                                    key=next(keys))
        self.up_convs = tuple(eqx.nn.Conv2d(chans[i + 1], chans[i], 3, padding=1, key=next(keys))
                              for i in reversed(range(depth)))
        self.up = tuple(ConvBlock(2 * chans[i], chans[i], activation_name, max_groups, key=next(keys))
                        for i in reversed(range(depth)))
        out = eqx.nn.Conv2d(chans[0], out_channels, 1, key=next(keys))
        if residual:
            out = eqx.tree_at(lambda c: (c.weight, c.bias), out, (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)))
        self.out = out
        self.in_channels, self.out_channels, self.factor = in_channels, out_channels, factor
        self.width, self.depth, self.activation_name = width, depth, activation_name
        self.residual, self.max_groups = residual, max_groups

    def config(self) -> dict[str, Any]:
        """Hyperparameters that rebuild this network's skeleton (see :func:`nemic.train.checkpoint.save_module`)."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "factor": self.factor,
                "width": self.width, "depth": self.depth, "activation_name": self.activation_name,
                "residual": self.residual, "max_groups": self.max_groups}

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """(in_channels, h, w) -> (out_channels, h factor, w factor). ``key`` is unused (deterministic)."""
        if x.ndim != 3 or x.shape[0] != self.in_channels:
            raise DataError(f"SuperResolutionUNet expects (in_channels={self.in_channels}, h, w), got {x.shape}")
        hf, wf = x.shape[1] * self.factor, x.shape[2] * self.factor
        m = 2**self.depth
        if hf % m or wf % m:
            raise DataError(f"the fine grid {hf} x {wf} is not divisible by 2**depth = {m}; use patches whose "
                            f"fine sides are multiples of {m}")
        base = _up(x.astype(self.head.weight.dtype), self.factor)  # the network computes in its weights' dtype
        h = self.head(base)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = _pool2(h)
        h = self.bottleneck(h)
        for conv, block, skip in zip(self.up_convs, self.up, reversed(skips)):
            h = conv(_up(h, 2))
            h = block(jnp.concatenate([h, skip], axis=0))
        y = self.out(h)
        if self.residual:
            y = y + (base if self.out_channels == self.in_channels else base[:1])
        return y

    def upscale(self, coarse: jax.Array) -> jax.Array:
        """Single-channel fields with any leading axes: (..., h, w) -> (..., h factor, w factor)."""
        if self.in_channels != 1 or self.out_channels != 1:
            raise ConfigError("upscale is for single-channel networks; call the network on (C, h, w) samples")
        coarse = jnp.asarray(coarse)
        if coarse.ndim < 2:
            raise DataError(f"upscale needs fields (..., h, w), got shape {coarse.shape}")
        lead = coarse.shape[:-2]
        flat = coarse.reshape((-1, 1) + coarse.shape[-2:])
        out = jax.vmap(self)(flat)
        return out.reshape(lead + out.shape[-2:])

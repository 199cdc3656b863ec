r"""Lipschitz-bounded layers: spectrally normalised convolutions and residual blocks (Equinox modules).

A convolution with kernel :math:`W \in \mathbb{R}^{c_o \times c_i \times k \times k}` maps
:math:`x \mapsto W_{\mathrm{mat}}\,\mathrm{im2col}(x)` with :math:`W_{\mathrm{mat}} \in
\mathbb{R}^{c_o \times c_i k^2}`; since every input pixel appears at most :math:`k^2` times in
:math:`\mathrm{im2col}(x)`, :math:`\|\mathrm{conv}\|_2 \le k\,\|W_{\mathrm{mat}}\|_2` (Tsuzuku, Sato & Sugiyama
2018, "Lipschitz-margin training", NeurIPS, arXiv:1802.04034). :class:`SpectralConv2d` divides its kernel by
:math:`k\,\sigma_{\max}(W_{\mathrm{mat}})`, so it is 1-Lipschitz in the L2 norm for any weights: the spectral
normalisation of Miyato et al. (2018, ICLR, arXiv:1802.05957) made rigorous for convolutions.

Unlike ``equinox.nn.SpectralNorm`` (a power iteration whose vectors are carried as mutable state), the largest
singular value here is computed exactly by an SVD of the small reshaped kernel at every call: the layer is a
pure function of its weights (no ``eqx.nn.State`` to thread through training and inference) and its bound
holds exactly, not only after the power iteration has converged. The kernels are small (at most a few hundred
columns), so the SVD is cheap next to the convolution.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["LipschitzResidualBlock", "SpectralConv2d", "SpectralLinear", "pixel_unshuffle"]


def _spectral_norm(mat: jax.Array) -> jax.Array:
    return jnp.linalg.norm(mat, ord=2)


class SpectralConv2d(eqx.Module):
    """2-D convolution (channels-first, 'same' zero padding, stride 1), 1-Lipschitz in L2 by construction.

    Input (c_in, H, W) -> output (c_out, H, W). The effective kernel is ``weight / (k * sigma_max)``
    (Tsuzuku et al. 2018, arXiv:1802.04034); the bias does not change the Lipschitz constant.
    """

    weight: jax.Array
    bias: jax.Array
    kernel_size: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, key: jax.Array):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = jax.random.normal(key, (out_channels, in_channels, kernel_size, kernel_size)) / math.sqrt(
            fan_in
        )
        self.bias = jnp.zeros((out_channels,))
        self.kernel_size = kernel_size

    def normalised_weight(self) -> jax.Array:
        """The kernel actually applied: ``weight / (kernel_size * sigma_max(weight reshaped to c_out x rest))``."""
        mat = self.weight.reshape(self.weight.shape[0], -1)
        return self.weight / (self.kernel_size * _spectral_norm(mat) + 1e-12)

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.kernel_size // 2
        y = jax.lax.conv_general_dilated(
            x[None], self.normalised_weight().astype(x.dtype), (1, 1), [(p, p), (p, p)],
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )[0]
        return y + self.bias[:, None, None].astype(x.dtype)


class SpectralLinear(eqx.Module):
    """Linear layer ``W x + b`` with ``W`` divided by its largest singular value: 1-Lipschitz in L2.

    (in,) -> (out,). Miyato et al. (2018), arXiv:1802.05957, with the exact singular value.
    """

    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_features: int, out_features: int, *, key: jax.Array):
        self.weight = jax.random.normal(key, (out_features, in_features)) / math.sqrt(in_features)
        self.bias = jnp.zeros((out_features,))

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight / (_spectral_norm(self.weight) + 1e-12)
        return w.astype(x.dtype) @ x + self.bias.astype(x.dtype)


class LipschitzResidualBlock(eqx.Module):
    r"""Residual block :math:`x + \tfrac12\,\mathrm{conv}_2(\phi(\mathrm{conv}_1(\phi(x))))`: (C, H, W) -> (C, H, W).

    Both convolutions are :class:`SpectralConv2d` and :math:`\phi` is 1-Lipschitz (ReLU by default), so the block
    is at most :math:`1 + 1/2 = 3/2`-Lipschitz (He et al. 2016, "Deep residual learning", CVPR,
    doi:10.1109/CVPR.2016.90; Lipschitz residual networks: Behrmann et al. 2019, arXiv:1811.00995).
    """

    conv1: SpectralConv2d
    conv2: SpectralConv2d
    residual_scale: float = eqx.field(static=True)

    def __init__(self, channels: int, kernel_size: int = 3, *, key: jax.Array, residual_scale: float = 0.5):
        k1, k2 = jax.random.split(key)
        self.conv1 = SpectralConv2d(channels, channels, kernel_size, key=k1)
        self.conv2 = SpectralConv2d(channels, channels, kernel_size, key=k2)
        self.residual_scale = float(residual_scale)

    def lipschitz_bound(self) -> float:
        """Upper bound of the block's L2 Lipschitz constant: ``1 + residual_scale``."""
        return 1.0 + self.residual_scale

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.residual_scale * self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """Space-to-depth (C, H, W) -> (C f^2, H/f, W/f): a permutation of the pixels, so an isometry (Lipschitz 1).

    Shi et al. (2016), "Real-time single image and video super-resolution using an efficient sub-pixel
    convolutional neural network", CVPR, doi:10.1109/CVPR.2016.207 (the inverse of their pixel shuffle).
    """
    c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"H and W ({h}, {w}) must be multiples of {factor}")
    x = x.reshape(c, h // factor, factor, w // factor, factor)
    return x.transpose(0, 2, 4, 1, 3).reshape(c * factor * factor, h // factor, w // factor)

r"""The learned Minkowski surrogate network: a Lipschitz CNN with hard geometric constraints, and its unconstrained baseline.

The surrogate maps a rain-rate patch (H, W) in mm/h to area, perimeter, Euler characteristic and number of
components (8-connectivity) at T fixed thresholds, as a differentiable emulator of the exact measures
(Quarenghi, Cotsakis & Beucler 2026, arXiv:2604.11422). Architecture:

1. input channels: :math:`\ell = \log(1 + x)` and, for each threshold, :math:`\tanh((\ell - \log(1+u_k))/s)`
   (a fixed, 1/s-Lipschitz threshold-centred encoding);
2. space-to-depth by a factor ``f`` (an isometry), a spectrally normalised convolution and residual blocks
   (:mod:`nemic.nn.lipschitz`; every layer has a proven L2 Lipschitz bound);
3. a 1x1 convolution to 4T local *densities*, averaged over the image (Minkowski functionals are additive,
   Hadwiger 1957, so a mean of local densities is the natural read-out);
4. a constraint layer that makes every output geometrically possible, whatever the weights:

   * area :math:`A_1 = D\,\sigma(z_1)`, :math:`A_k = A_{k-1}\,\sigma(z_k)`: in :math:`[0, D]` (:math:`D = HW`)
     and non-increasing in the threshold (excursion sets are nested);
   * perimeter :math:`P_k = P_{\min}(A_k) + s_P\,\mathrm{softplus}(z)`, with :math:`P_{\min}(n) =
     2\lceil 2\sqrt{n}\,\rceil` the least perimeter of n unit squares (Harary & Harborth 1976, "Extremal
     animals", J. Combin. Inform. System Sci. 1, 1-8; it also bounds unions of several polyominoes);
   * components :math:`N_k = s_N\,\mathrm{softplus}(z) \ge 0` and holes :math:`H_k = s_H\,\mathrm{softplus}(z)
     \ge 0`, Euler characteristic :math:`\chi_k = N_k - H_k \le N_k`.

The baseline (``constrained=False``) has the same layers without spectral normalisation and predicts the four
measures directly (``mean + std * z``), so it can break every constraint.
:func:`nemic.metrics.minkowski.surrogate.constraint_violations` checks them; the fitting lives in
:mod:`nemic.train.surrogate`.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski._validate import check_thresholds
from nemic.metrics.minkowski.exact import MinkowskiMeasures
from nemic.metrics.minkowski.surrogate import polyomino_min_perimeter
from nemic.nn.lipschitz import LipschitzResidualBlock, SpectralConv2d, pixel_unshuffle
from nemic.nn.registry import register_module

__all__ = ["MinkowskiSurrogate"]


class _Conv2d(eqx.Module):
    """Plain 'same' convolution (C_in, H, W) -> (C_out, H, W), for the unconstrained baseline."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, cin: int, cout: int, k: int, *, key: jax.Array):
        self.weight = jax.random.normal(key, (cout, cin, k, k)) / math.sqrt(cin * k * k)
        self.bias = jnp.zeros((cout,))

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.weight.shape[-1] // 2
        y = jax.lax.conv_general_dilated(
            x[None], self.weight.astype(x.dtype), (1, 1), [(p, p), (p, p)], dimension_numbers=("NCHW", "OIHW", "NCHW")
        )[0]
        return y + self.bias[:, None, None].astype(x.dtype)


class _PlainBlock(eqx.Module):
    conv1: _Conv2d
    conv2: _Conv2d

    def __init__(self, c: int, k: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.conv1, self.conv2 = _Conv2d(c, c, k, key=k1), _Conv2d(c, c, k, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + 0.5 * self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))


@register_module("MinkowskiSurrogate")
class MinkowskiSurrogate(eqx.Module):
    """Learned Minkowski measures of rain-rate patches (see the module docstring for the architecture).

    Args:
        thresholds: strictly increasing thresholds (T,) in mm/h.
        channels: width of the convolutional trunk.
        blocks: number of residual blocks.
        factor: space-to-depth factor (H and W must be multiples of it).
        constrained: ``True``: Lipschitz layers + hard constraints; ``False``: the unconstrained CNN baseline.
        scales: (4, T) output scales; for the constrained model (area unused, s_P, s_N, s_H), for the baseline
            the standard deviations of the four measures; ``offsets`` (4, T): the baseline's means. Both are set
            from training data by :func:`nemic.train.surrogate.train_surrogate` and are not trained.
        encoding_scale: ``s`` of the threshold-centred input encoding, in units of log(1 + mm/h).
        key: PRNG key for the initial weights.

    Calling it on a field (..., H, W) returns :class:`~nemic.metrics.minkowski.exact.MinkowskiMeasures` with
    ``area``, ``perimeter``, ``euler`` and ``components`` of shape (..., T) (floats, in pixels / edges / counts).
    """

    thresholds: jax.Array
    stem: Any
    blocks: tuple
    head: Any
    scales: jax.Array
    offsets: jax.Array
    out_scale: jax.Array
    out_bias: jax.Array
    channels: int = eqx.field(static=True)
    factor: int = eqx.field(static=True)
    constrained: bool = eqx.field(static=True)
    encoding_scale: float = eqx.field(static=True)

    def __init__(
        self,
        thresholds: Any,
        channels: int = 16,
        blocks: int = 2,
        factor: int = 2,
        constrained: bool = True,
        scales: Any = None,
        offsets: Any = None,
        encoding_scale: float = 0.1,
        *,
        key: jax.Array,
    ):
        thr = np.asarray(check_thresholds(thresholds), dtype=float)
        if np.any(thr < 0):
            raise ConfigError(f"surrogate thresholds must be rain rates >= 0, got {thr.tolist()}")
        for name, v, lo in (("channels", channels, 1), ("blocks", blocks, 0), ("factor", factor, 1)):
            if not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        t = thr.size
        cin = (t + 1) * factor * factor
        keys = jax.random.split(key, blocks + 2)
        if constrained:
            self.stem = SpectralConv2d(cin, channels, 3, key=keys[0])
            self.blocks = tuple(LipschitzResidualBlock(channels, 3, key=k) for k in keys[1:-1])
            self.head = SpectralConv2d(channels, 4 * t, 1, key=keys[-1])
        else:
            self.stem = _Conv2d(cin, channels, 3, key=keys[0])
            self.blocks = tuple(_PlainBlock(channels, 3, key=k) for k in keys[1:-1])
            self.head = _Conv2d(channels, 4 * t, 1, key=keys[-1])
        self.thresholds = jnp.asarray(thr)
        self.scales = jnp.ones((4, t)) if scales is None else jnp.asarray(scales, dtype=float).reshape(4, t)
        self.offsets = jnp.zeros((4, t)) if offsets is None else jnp.asarray(offsets, dtype=float).reshape(4, t)
        # trainable affine read-out of the pooled densities (both models); for the constrained model the
        # Lipschitz bound is max|out_scale| times the product of the layer bounds (see lipschitz_bound)
        self.out_scale = jnp.full((4, t), 4.0 if constrained else 1.0, dtype=self.scales.dtype)
        self.out_bias = jnp.zeros((4, t))
        self.channels = channels
        self.factor = factor
        self.constrained = bool(constrained)
        self.encoding_scale = float(encoding_scale)

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this module's structure (see :meth:`config`)."""
        return {
            "thresholds": np.asarray(self.thresholds).tolist(),
            "channels": self.channels,
            "blocks": len(self.blocks),
            "factor": self.factor,
            "constrained": self.constrained,
            "encoding_scale": self.encoding_scale,
        }

    def config(self) -> dict[str, Any]:
        """The hyperparameters for :func:`nemic.train.checkpoint.save_module` (same as :meth:`hyperparameters`)."""
        return self.hyperparameters()

    def lipschitz_bound(self) -> float:
        r"""Upper bound of the L2 Lipschitz constant of the pooled read-out (4, T) w.r.t. :math:`\log(1+x)`.

        Only for the constrained model: (encoding: :math:`\sqrt{1 + T/s^2}`) x (stem, head: 1) x (blocks:
        3/2 each) x (mean pooling over n pixels: :math:`1/\sqrt n`, not included, so the bound is per unit of
        pooled density) x ``max|out_scale|``. The constraint layer that follows is smooth but not globally
        Lipschitz (area enters through a square root in the perimeter bound).
        """
        if not self.constrained:
            raise ConfigError("the unconstrained baseline has no Lipschitz bound")
        t = self.thresholds.shape[0]
        enc = math.sqrt(1.0 + t / self.encoding_scale**2)
        blocks = math.prod(b.lipschitz_bound() for b in self.blocks) if self.blocks else 1.0
        return enc * blocks * float(jnp.max(jnp.abs(self.out_scale)))

    def _raw(self, field: jax.Array) -> jax.Array:
        """Pooled head outputs (4, T) for one field (H, W)."""
        t = self.thresholds.shape[0]
        thr = jax.lax.stop_gradient(self.thresholds)  # fixed, never trained
        ell = jnp.log1p(jnp.maximum(field, 0.0))
        enc = jnp.tanh((ell[None] - jnp.log1p(thr)[:, None, None]) / self.encoding_scale)
        x = pixel_unshuffle(jnp.concatenate([ell[None], enc], 0), self.factor)
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        d = self.head(jax.nn.relu(h))
        return self.out_scale * jnp.mean(d, axis=(-2, -1)).reshape(4, t) + self.out_bias

    def _single(self, field: jax.Array) -> jax.Array:
        z = self._raw(field)
        scales = jax.lax.stop_gradient(self.scales)
        offsets = jax.lax.stop_gradient(self.offsets)
        if not self.constrained:
            return offsets + scales * z
        domain = field.shape[-1] * field.shape[-2]
        area = domain * jnp.exp(jnp.cumsum(jax.nn.log_sigmoid(z[0])))
        perimeter = polyomino_min_perimeter(area) + scales[1] * jax.nn.softplus(z[1])
        components = scales[2] * jax.nn.softplus(z[2])
        holes = scales[3] * jax.nn.softplus(z[3])
        # area: the running product of sigmoids, computed as exp(cumsum(log sigmoid)), is monotone by
        # construction; clip against round-off so that A_k <= A_{k-1} and A <= D hold exactly
        area = jnp.minimum(area, domain)
        area = jax.lax.cummin(area, axis=0)
        return jnp.stack([area, perimeter, components - holes, components])

    def __call__(self, field: Any) -> MinkowskiMeasures:
        field = jnp.asarray(field)
        if field.ndim < 2:
            raise DataError(f"field must have at least 2 dimensions (..., H, W), got shape {field.shape}")
        h, w = field.shape[-2:]
        if not isinstance(field, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(field))):
            raise DataError("the rain-rate field given to the Minkowski surrogate contains NaN/inf values; fill "
                            "missing pixels (e.g. with 0) first")
        if h % self.factor or w % self.factor:
            raise DataError(f"patch size {h} x {w} must be a multiple of the surrogate's factor {self.factor}")
        return _apply(self, field)


@eqx.filter_jit
def _apply(model: MinkowskiSurrogate, field: jax.Array) -> MinkowskiMeasures:
    h, w = field.shape[-2:]
    flat = field.reshape((-1, h, w))
    out = jax.vmap(model._single)(flat).reshape(field.shape[:-2] + (4, model.thresholds.shape[0]))
    return MinkowskiMeasures(out[..., 0, :], out[..., 1, :], out[..., 2, :], out[..., 3, :])

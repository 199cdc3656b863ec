r"""Learned Minkowski surrogate: a Lipschitz CNN with hard geometric constraints, and its unconstrained baseline.

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
measures directly (``mean + std * z``), so it can break every constraint. :func:`constraint_violations`
checks them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski._validate import check_thresholds
from nemic.metrics.minkowski.exact import MinkowskiMeasures
from nemic.nn.lipschitz import LipschitzResidualBlock, SpectralConv2d, pixel_unshuffle

__all__ = [
    "MinkowskiSurrogate",
    "constraint_violations",
    "init_readout",
    "load_default_surrogate",
    "load_surrogate",
    "polyomino_min_perimeter",
    "r2_scores",
    "save_surrogate",
    "stack_measures",
    "train_surrogate",
]

MEASURE_NAMES = ("area", "perimeter", "euler", "components")


def polyomino_min_perimeter(area: Any) -> jax.Array:
    r"""Least perimeter (in pixel edges) of a union of ``area`` unit squares: :math:`2\lceil 2\sqrt{n}\rceil`, 0 at 0.

    Harary & Harborth (1976), "Extremal animals", J. Combin. Inform. System Sci. 1, 1-8. For real ``area`` the
    same formula is used (non-decreasing in ``area``); negative areas give 0.
    """
    a = jnp.maximum(jnp.asarray(area), 0.0)
    return jnp.where(a > 0, 2.0 * jnp.ceil(2.0 * jnp.sqrt(a) - 1e-9), 0.0)


def stack_measures(m: MinkowskiMeasures) -> jax.Array:
    """(area, perimeter, euler, components) as one array (..., 4, T) of floats."""
    return jnp.stack([jnp.asarray(v, dtype=float) for v in (m.area, m.perimeter, m.euler, m.components)], axis=-2)


def constraint_violations(measures: Any, domain: float, atol: float = 1e-6) -> dict[str, np.ndarray]:
    """Which (sample, threshold) pairs break a geometric constraint; boolean arrays (..., T) by constraint.

    Args:
        measures: array (..., 4, T) of (area, perimeter, euler, components), e.g. from :func:`stack_measures`.
        domain: number of pixels of a patch.
        atol: tolerance (in pixels / edges / counts).

    Constraints: ``area_range`` (0 <= A <= D), ``area_monotone`` (A non-increasing in the threshold),
    ``perimeter_bound`` (P >= 2 ceil(2 sqrt(A))), ``components_nonnegative`` (N >= 0), ``holes_nonnegative``
    (chi <= N); ``any`` is their union.
    """
    m = np.asarray(measures, dtype=float)
    a, p, e, n = (m[..., i, :] for i in range(4))
    out = {
        "area_range": (a < -atol) | (a > domain + atol),
        "area_monotone": np.concatenate([np.zeros_like(a[..., :1], bool), a[..., 1:] > a[..., :-1] + atol], -1),
        "perimeter_bound": p < np.asarray(polyomino_min_perimeter(a)) - atol,
        "components_nonnegative": n < -atol,
        "holes_nonnegative": e > n + atol,
    }
    out["any"] = np.logical_or.reduce([v for v in out.values()])
    return out


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
            from training data by :func:`train_surrogate` and are not trained.
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
        """JSON-serialisable settings that rebuild this module's structure (see :func:`save_surrogate`)."""
        return {
            "thresholds": np.asarray(self.thresholds).tolist(),
            "channels": self.channels,
            "blocks": len(self.blocks),
            "factor": self.factor,
            "constrained": self.constrained,
            "encoding_scale": self.encoding_scale,
        }

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
        if h % self.factor or w % self.factor:
            raise DataError(f"patch size {h} x {w} must be a multiple of the surrogate's factor {self.factor}")
        return _apply(self, field)


@eqx.filter_jit
def _apply(model: MinkowskiSurrogate, field: jax.Array) -> MinkowskiMeasures:
    h, w = field.shape[-2:]
    flat = field.reshape((-1, h, w))
    out = jax.vmap(model._single)(flat).reshape(field.shape[:-2] + (4, model.thresholds.shape[0]))
    return MinkowskiMeasures(out[..., 0, :], out[..., 1, :], out[..., 2, :], out[..., 3, :])


def save_surrogate(model: MinkowskiSurrogate, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``<path>.eqx`` (weights, ``eqx.tree_serialise_leaves``) and ``<path>.json`` (hyperparameters + extra).

    Both files are written atomically. Returns the path of the JSON file.
    """
    from nemic.core.output import atomic_write, write_json

    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".eqx", ".json") else base
    atomic_write(base.with_suffix(".eqx"), lambda tmp: eqx.tree_serialise_leaves(tmp, model))
    meta = {"format": "nemic.MinkowskiSurrogate/1", "hyperparameters": model.hyperparameters(),
            "dtype": str(jnp.asarray(model.stem.weight).dtype)}
    meta.update(extra or {})
    return write_json(meta, base.with_suffix(".json"))


def load_surrogate(path: str | os.PathLike) -> MinkowskiSurrogate:
    """Rebuild a surrogate from ``<path>.json`` and load its weights from ``<path>.eqx``."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".eqx", ".json") else base
    js, wt = base.with_suffix(".json"), base.with_suffix(".eqx")
    if not js.is_file() or not wt.is_file():
        raise DataError(f"surrogate checkpoint '{base}' needs both {js.name} and {wt.name}")
    meta = json.loads(js.read_text())
    hp = meta.get("hyperparameters")
    if not isinstance(hp, dict):
        raise DataError(f"'{js}' has no 'hyperparameters' entry: not a nemic surrogate checkpoint")
    skeleton = MinkowskiSurrogate(key=jax.random.PRNGKey(0), **hp)
    dtype = jnp.dtype(meta.get("dtype", "float32"))
    skeleton = jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, skeleton)
    return eqx.tree_deserialise_leaves(wt, skeleton)


def load_default_surrogate(constrained: bool = True) -> MinkowskiSurrogate:
    """The surrogate weights shipped with nemic (``nemic/resources/opera/surrogate*``; recipe in their JSON)."""
    from importlib import resources

    name = "surrogate" if constrained else "surrogate_unconstrained"
    ref = resources.files("nemic").joinpath("resources", "opera", f"{name}.json")
    if not ref.is_file():
        raise DataError(f"no shipped surrogate weights '{name}' in this installation")
    with resources.as_file(ref) as js:
        return load_surrogate(Path(js))


def r2_scores(pred: Any, target: Any) -> np.ndarray:
    r"""Coefficient of determination :math:`1 - \sum (y - \hat y)^2 / \sum (y - \bar y)^2` over the first axis.

    (N, ...) x (N, ...) -> (...); NaN where the target is constant.
    """
    p, t = np.asarray(pred, float), np.asarray(target, float)
    ss_res = np.sum((t - p) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def _dihedral(x: jax.Array, k: jax.Array) -> jax.Array:
    """One of the 8 symmetries of the square (the measures are invariant under all of them)."""
    x = jax.lax.switch(k % 4, [lambda a: a, lambda a: jnp.rot90(a, 1, (-2, -1)),
                               lambda a: jnp.rot90(a, 2, (-2, -1)), lambda a: jnp.rot90(a, 3, (-2, -1))], x)
    return jnp.where(k >= 4, jnp.flip(x, -1), x)


def init_readout(model: MinkowskiSurrogate, patches: Any, targets: Any) -> MinkowskiSurrogate:
    """Set a surrogate's output scales and read-out biases from training data (done by :func:`train_surrogate`).

    Constrained model: scales (s_P, s_N, s_H) = standard deviations (+1) of perimeter, components and holes per
    threshold; read-out biases so that an all-zero trunk predicts the training means (area ratios
    A_k / A_{k-1} through a logit, the other measures through an inverse softplus of their mean excess over the
    constraint). Baseline: ``offsets`` = means and ``scales`` = standard deviations (+1). (N, H, W), (N, 4, T).
    """
    x = jnp.asarray(patches, dtype=float)
    y = jnp.asarray(targets, dtype=float)
    std = jnp.std(y, axis=0) + 1.0
    mean = jnp.mean(y, axis=0)
    if not model.constrained:
        return eqx.tree_at(lambda m: (m.scales, m.offsets), model, (std, mean))
    holes = y[:, 3] - y[:, 2]
    scales = jnp.stack([std[0], std[1], std[3], jnp.std(holes, axis=0) + 1.0])
    domain = x.shape[-1] * x.shape[-2]
    frac = jnp.clip(jnp.mean(y[:, 0], axis=0) / domain, 1e-4, 1 - 1e-4)
    ratio = jnp.clip(frac / jnp.concatenate([jnp.ones(1), frac[:-1]]), 1e-4, 1 - 1e-4)
    excess = jnp.stack([
        jnp.mean(y[:, 1] - polyomino_min_perimeter(y[:, 0]), axis=0) / scales[1],
        jnp.mean(y[:, 3], axis=0) / scales[2],
        jnp.mean(holes, axis=0) / scales[3],
    ])
    inv_softplus = jnp.log(jnp.expm1(jnp.clip(excess, 1e-3, 30.0)))
    bias = jnp.concatenate([jnp.log(ratio / (1 - ratio))[None], inv_softplus])
    return eqx.tree_at(lambda m: (m.scales, m.offsets, m.out_bias), model, (scales, jnp.zeros_like(scales), bias))


def train_surrogate(
    model: MinkowskiSurrogate,
    patches: Any,
    targets: Any,
    *,
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    key: jax.Array,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[MinkowskiSurrogate, list[float]]:
    """Fit a surrogate to exact measures with Adam; returns the trained model and the loss history.

    Args:
        model: initial :class:`MinkowskiSurrogate` (its scales, offsets and read-out biases are first set from
            ``targets`` by :func:`init_readout`).
        patches: (N, H, W) rain rate in mm/h.
        targets: (N, 4, T) exact (area, perimeter, euler, components) of the patches at ``model.thresholds``.
        steps, batch_size, learning_rate: optimisation settings (cosine-decayed Adam, Kingma & Ba 2015,
            arXiv:1412.6980).
        key: PRNG key for minibatches and random dihedral augmentation.
        callback: called as ``callback(step, loss)`` after every step (e.g. a progress bar).

    Loss: mean squared error of the four measures, each divided by its standard deviation over ``targets``
    (per threshold).
    """
    import optax

    x = jnp.asarray(patches, dtype=float)
    y = jnp.asarray(targets, dtype=float)
    if x.ndim != 3 or y.ndim != 3 or y.shape[0] != x.shape[0] or y.shape[1:] != (4, model.thresholds.shape[0]):
        raise DataError(f"patches (N, H, W) and targets (N, 4, T) do not match: {x.shape}, {y.shape}")
    square = x.shape[-1] == x.shape[-2]  # rotations by 90 degrees only for square patches
    std = jnp.std(y, axis=0) + 1.0
    model = init_readout(model, x, y)
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)

    def loss_fn(p, xb, yb):
        m = eqx.combine(p, static)
        pred = stack_measures(m(xb))
        return jnp.mean(((pred - yb) / std) ** 2)

    @eqx.filter_jit
    def step(p, s, k):
        k1, k2 = jax.random.split(k)
        idx = jax.random.choice(k1, x.shape[0], (batch_size,), replace=x.shape[0] < batch_size)
        sym = jax.random.randint(k2, (batch_size,), 0, 8 if square else 4) * (1 if square else 2)
        xb = jax.vmap(_dihedral)(x[idx], sym)
        loss, g = jax.value_and_grad(loss_fn)(p, xb, y[idx])
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    history = []
    for i in range(steps):
        key, sub = jax.random.split(key)
        params, state, loss = step(params, state, sub)
        history.append(float(loss))
        if callback is not None:
            callback(i, history[-1])
    return eqx.combine(params, static), history

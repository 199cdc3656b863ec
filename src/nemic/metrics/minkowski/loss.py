r"""The Minkowski image loss: squared differences of (relaxed or learned) Minkowski measures of two fields.

.. math:: L(\hat x, x) = \sum_{m} w_m \,\operatorname{mean}_{b,k}
   \Big(\frac{M_m(\hat x_b; u_k) - M_m(x_b; u_k)}{H W}\Big)^2

over the measures :math:`m \in` {area, perimeter, Euler characteristic (, components)}, thresholds :math:`u_k` and
samples :math:`b`; dividing by the number of pixels :math:`HW` turns every measure into a density of order one.
The measures :math:`M_m` come from the analytic relaxation (``method="relaxed"``) or from a trained
:class:`~nemic.nn.minkowski_surrogate.MinkowskiSurrogate` (``method="surrogate"``), applied to both fields
so that :math:`\hat x = x` is a minimiser. Quarenghi, Cotsakis & Beucler (2026), arXiv:2604.11422.
"""

from __future__ import annotations

from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite, is_concrete
from nemic.metrics.minkowski._validate import check_connectivity, check_thresholds
from nemic.metrics.minkowski.exact import MinkowskiMeasures
from nemic.metrics.minkowski.relaxed import _check_temperature, _check_tnorm, relaxed_minkowski_functionals

__all__ = ["MEASURES", "MinkowskiLoss"]

MEASURES = ("area", "perimeter", "euler", "components")
_TRANSFORMS = {"identity": lambda x: x, "log1p": jnp.log1p}


class MinkowskiLoss(eqx.Module):
    """Minkowski image loss between a predicted and a target field, usable inside ``jax.grad``.

    Args:
        thresholds: strictly increasing thresholds (T,), in the units of the *untransformed* field (e.g. mm/h).
        method: ``"relaxed"`` (analytic relaxation with ``temperature``) or ``"surrogate"`` (needs
            ``surrogate``, whose thresholds must equal ``thresholds``).
        weights: per-measure weights, a mapping from ``"area"``, ``"perimeter"``, ``"euler"`` (and, for the
            surrogate, ``"components"``) to floats >= 0; missing measures get 0. Default: 1 for area, perimeter
            and Euler characteristic.
        temperature: sigmoid width of the relaxed method, in units of the *transformed* field.
        connectivity: 4 or 8 (relaxed method).
        tnorm: ``"product"`` or ``"min"`` (relaxed method).
        transform: ``"identity"`` or ``"log1p"`` applied to fields and thresholds before the relaxed measures
            (monotone, so the excursion sets are unchanged; only the soft masks' shape changes).
        surrogate: a trained :class:`~nemic.nn.minkowski_surrogate.MinkowskiSurrogate`.

    Calling ``loss(prediction, target)`` with two arrays (..., H, W) of the same shape returns a scalar.
    """

    thresholds: jax.Array
    weights: tuple[float, ...] = eqx.field(static=True)
    temperature: jax.Array
    method: str = eqx.field(static=True)
    connectivity: int = eqx.field(static=True)
    tnorm: str = eqx.field(static=True)
    transform: str = eqx.field(static=True)
    surrogate: Any

    def __init__(
        self,
        thresholds: Any,
        method: str = "relaxed",
        weights: Mapping[str, float] | None = None,
        temperature: float = 0.1,
        connectivity: int = 8,
        tnorm: str = "product",
        transform: str = "identity",
        surrogate: Any = None,
    ):
        if method not in ("relaxed", "surrogate"):
            raise ConfigError(f"method must be 'relaxed' or 'surrogate', got {method!r}")
        thr = check_thresholds(thresholds)
        weights = {"area": 1.0, "perimeter": 1.0, "euler": 1.0} if weights is None else dict(weights)
        unknown = set(weights) - set(MEASURES)
        if unknown:
            raise ConfigError(f"unknown measure(s) {sorted(unknown)} in weights; known: {MEASURES}")
        if method == "relaxed" and weights.get("components", 0.0):
            raise ConfigError("the relaxed method has no component count; use method='surrogate' for it")
        w = tuple(float(weights.get(m, 0.0)) for m in MEASURES)
        if any(not np.isfinite(v) or v < 0 for v in w):
            raise ConfigError(f"weights must be finite and >= 0, got {weights}")
        if transform not in _TRANSFORMS:
            raise ConfigError(f"transform must be one of {tuple(_TRANSFORMS)}, got {transform!r}")
        if method == "surrogate":
            if surrogate is None:
                raise ConfigError("method='surrogate' needs a trained MinkowskiSurrogate (surrogate=...)")
            st = np.asarray(surrogate.thresholds)
            if st.shape != tuple(thr.shape) or not np.allclose(st, np.asarray(thr)):
                raise ConfigError(
                    f"the surrogate was trained for thresholds {st.tolist()}, not {np.asarray(thr).tolist()}"
                )
        _check_temperature(temperature)
        self.thresholds = thr
        self.method = method
        self.weights = w
        self.temperature = jnp.asarray(temperature, dtype=float)
        self.connectivity = check_connectivity(connectivity)
        self.tnorm = _check_tnorm(tnorm)
        self.transform = transform
        self.surrogate = surrogate

    def measures(self, field: jax.Array) -> MinkowskiMeasures:
        """The (relaxed or learned) measures of ``field`` (..., H, W), each (..., T); differentiable."""
        if self.method == "surrogate":
            return self.surrogate(field)
        tf = _TRANSFORMS[self.transform]
        return relaxed_minkowski_functionals(
            tf(field), tf(self.thresholds), self.temperature, self.connectivity, self.tnorm
        )

    def __call__(self, prediction: jax.Array, target: jax.Array) -> jax.Array:
        """Scalar loss; ``prediction`` and ``target`` have the same shape (..., H, W)."""
        if jnp.shape(prediction) != jnp.shape(target):
            raise DataError(f"prediction shape {jnp.shape(prediction)} != target shape {jnp.shape(target)}")
        if len(jnp.shape(prediction)) < 2:
            raise DataError(f"fields must have at least 2 dimensions (..., H, W), got {jnp.shape(prediction)}")
        if is_concrete(self.temperature):
            _check_temperature(self.temperature)
        check_finite("Minkowski loss prediction", prediction)  # concrete values only; traced ones pass
        check_finite("Minkowski loss target", target)
        h, w = jnp.shape(prediction)[-2:]
        mp = self.measures(prediction)
        mt = self.measures(jax.lax.stop_gradient(jnp.asarray(target)))
        total = jnp.zeros(())
        for k, wk in enumerate(self.weights):
            if wk == 0.0:
                continue
            a, b = mp[k], mt[k]
            total = total + wk * jnp.mean(((a - b) / (h * w)) ** 2)
        return total

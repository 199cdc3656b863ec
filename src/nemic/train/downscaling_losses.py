r"""Training losses for precipitation downscaling, all of the form ``loss(model, batch, key) -> (scalar, aux)`` for
the one training loop :func:`nemic.train.loop.fit`. A batch is ``{"coarse": (B, h, w), "fine": (B, H, W)}`` in
mm/h (:class:`nemic.data.patches.PatchSampler`).

Deterministic U-Net (:class:`~nemic.nn.unet.SuperResolutionUNet`, applied in log-rain space by
:func:`predict_log`, so that the output :math:`R = \exp(\max(y, 0)) - 1` is non-negative):

* :func:`mse_loss`: :math:`\overline{(y - \log(1 + R_{true}))^2}`;
* :func:`mse_minkowski_loss` with a relaxed :class:`~nemic.metrics.minkowski.MinkowskiLoss` (analytic soft
  excursion sets) or with a :class:`TrustGatedMinkowski` (the learned surrogate behind a trust gate), both added
  with a weight :math:`\lambda` to the MSE (Quarenghi, Cotsakis & Beucler 2026, arXiv:2604.11422).

Generative model (:class:`~nemic.nn.flow.ConditionalFlow`):

* :func:`flow_matching_loss`: the conditional flow-matching loss (Lipman et al. 2023, arXiv:2210.02747), with
  an optional Minkowski term on the rain of the one-step denoised estimate
  :math:`\hat x_1 = x_t + (1 - t) v_\theta(x_t, t)`, weighted per sample by the flow time :math:`t` (the
  estimate is a blur of the data at small :math:`t` and sharp near :math:`t = 1`).

**Trust gate.** A learned surrogate is only useful as a loss where it is accurate. Its error on the *target* of
each sample, :math:`e_b = \operatorname{mean}_{m,k} \big(\operatorname{slog}\,S_m(y_b; u_k) -
\operatorname{slog}\,M_m(y_b; u_k)\big)^2` against the exact measures :math:`M_m` (with
:math:`\operatorname{slog} x = \operatorname{sign}(x)\log(1 + |x|)`), sets the sample's weight
:math:`g_b = \exp(-\tau e_b)` (held constant in the gradient). :math:`\tau` is calibrated on training targets
(:func:`calibrate_trust`) so that the weight is 0.1 at the 90th percentile of the error, the calibration of the
Minkowski-loss authors' public code (Mink-DDPM, ``calibrate_tau``); patches on which the surrogate is wrong then
barely move the network.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski import MinkowskiLoss, minkowski_functionals
from nemic.nn.flow import ConditionalFlow, log_rain, rain_from_log

__all__ = [
    "TrustGatedMinkowski",
    "calibrate_trust",
    "flow_matching_loss",
    "mse_loss",
    "mse_minkowski_loss",
    "predict_log",
    "predict_rain",
    "surrogate_error",
]

_MEASURE_INDEX = {"area": 0, "perimeter": 1, "euler": 2, "components": 3}


def predict_log(net: Any, coarse: jax.Array) -> jax.Array:
    """``log(1 + R)`` on the fine grid from coarse rain (B, h, w) in mm/h, by a single-channel U-Net applied to
    ``log(1 + coarse)`` (with a residual U-Net, the untrained network is nearest-neighbour upsampling)."""
    return net.upscale(log_rain(coarse))


def predict_rain(net: Any, coarse: jax.Array) -> jax.Array:
    """Fine rain rate (B, H, W) in mm/h (>= 0) from coarse rain (B, h, w)."""
    return rain_from_log(predict_log(net, coarse))


def mse_loss(net: Any, batch: Mapping[str, jax.Array], key: jax.Array | None = None):
    """Mean squared error in log-rain space: the baseline of arXiv:2604.11422 (its fields are log-transformed)."""
    err = jnp.mean((predict_log(net, batch["coarse"]) - log_rain(batch["fine"])) ** 2)
    return err, {"mse": err}


def _slog(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def surrogate_error(surrogate: Any, fields: jax.Array, measures: tuple[str, ...] = ("area", "perimeter", "euler"),
                    connectivity: int = 8) -> jax.Array:
    """Per-sample error :math:`e_b` of a surrogate against the exact measures (see the module docstring), (B,)."""
    thr = surrogate.thresholds
    exact = minkowski_functionals(fields, thr, connectivity)
    learned = surrogate(fields)
    errs = [(_slog(jnp.asarray(learned[_MEASURE_INDEX[m]], fields.dtype))
             - _slog(jnp.asarray(exact[_MEASURE_INDEX[m]], fields.dtype))) ** 2 for m in measures]
    return jnp.mean(jnp.stack(errs, axis=-1), axis=(-2, -1))


def calibrate_trust(surrogate: Any, fields: Any, weight_at_p90: float = 0.1, batch: int = 64,
                    connectivity: int = 8) -> tuple[float, dict[str, float]]:
    """The gate's :math:`\\tau` such that :math:`\\exp(-\\tau e_{90}) =` ``weight_at_p90`` on ``fields`` (N, H, W).

    Returns (tau, statistics of the error: p50, p90, mean).
    """
    if not 0.0 < weight_at_p90 < 1.0:
        raise ConfigError(f"weight_at_p90 must be in (0, 1), got {weight_at_p90!r}")
    fields = np.asarray(fields)
    if fields.ndim != 3 or fields.shape[0] < 1:
        raise DataError(f"calibrate_trust needs fields (N, H, W), got shape {fields.shape}")
    err_fn = eqx.filter_jit(lambda s, f: surrogate_error(s, f, connectivity=connectivity))
    errs = np.concatenate([np.asarray(err_fn(surrogate, jnp.asarray(fields[i:i + batch])))
                           for i in range(0, fields.shape[0], batch)])
    p50, p90 = (float(np.percentile(errs, q)) for q in (50, 90))
    tau = float(-np.log(weight_at_p90) / max(p90, 1e-8))
    return tau, {"p50": p50, "p90": p90, "mean": float(errs.mean()), "weight_at_p50": float(np.exp(-tau * p50))}


class TrustGatedMinkowski(eqx.Module):
    """Surrogate Minkowski loss with the trust gate of the module docstring.

    Args:
        surrogate: a trained :class:`~nemic.nn.minkowski_surrogate.MinkowskiSurrogate` (frozen: gradients reach
            the prediction, never the surrogate).
        tau: gate sharpness (:func:`calibrate_trust`); 0 turns the gate off (weight 1 everywhere).
        weights: per-measure weights (``area``, ``perimeter``, ``euler``, ``components``); default 1 for the
            first three.
        connectivity: of the exact measures the gate compares with.

    ``loss(prediction, target)`` on (B, H, W) rain fields returns ``(scalar, mean gate weight)``: the mean over
    samples of :math:`g_b \\sum_m w_m \\operatorname{mean}_k ((S_m(\\hat y_b) - S_m(y_b)) / HW)^2`.
    """

    surrogate: Any
    tau: float = eqx.field(static=True)
    weights: tuple[float, ...] = eqx.field(static=True)
    connectivity: int = eqx.field(static=True)

    def __init__(self, surrogate: Any, tau: float, weights: Mapping[str, float] | None = None,
                 connectivity: int = 8):
        w = {"area": 1.0, "perimeter": 1.0, "euler": 1.0} if weights is None else dict(weights)
        unknown = set(w) - set(_MEASURE_INDEX)
        if unknown:
            raise ConfigError(f"unknown measure(s) {sorted(unknown)}; known: {tuple(_MEASURE_INDEX)}")
        if not (np.isfinite(tau) and tau >= 0):
            raise ConfigError(f"tau must be finite and >= 0, got {tau!r}")
        self.surrogate = surrogate
        self.tau = float(tau)
        self.weights = tuple(float(w.get(m, 0.0)) for m in _MEASURE_INDEX)
        self.connectivity = connectivity

    def per_sample(self, prediction: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(ungated term per sample (B,), gate weight per sample (B,))."""
        if prediction.shape != target.shape or prediction.ndim != 3:
            raise DataError(f"prediction {prediction.shape} and target {target.shape} must both be (B, H, W)")
        sur = _frozen(self.surrogate)
        h, w = prediction.shape[-2:]
        mp = sur(prediction)
        mt = sur(jax.lax.stop_gradient(target))
        term = jnp.zeros(prediction.shape[0], prediction.dtype)
        for k, wk in enumerate(self.weights):
            if wk:
                term = term + wk * jnp.mean(((mp[k] - mt[k]) / (h * w)) ** 2, axis=-1)
        if self.tau == 0.0:
            return term, jnp.ones_like(term)
        gate = jnp.exp(-self.tau * surrogate_error(sur, jax.lax.stop_gradient(target),
                                                  connectivity=self.connectivity))
        return term, jax.lax.stop_gradient(gate)

    def __call__(self, prediction: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
        term, gate = self.per_sample(prediction, target)
        return jnp.mean(gate * term), jnp.mean(gate)


def _frozen(module: Any) -> Any:
    """``module`` with ``stop_gradient`` on its array leaves (non-array leaves, e.g. an MLP's activation function,
    stay as they are)."""
    params, static = eqx.partition(module, eqx.is_array)
    return eqx.combine(jax.lax.stop_gradient(params), static)


def _minkowski_term(minkowski: Any, pred: jax.Array, target: jax.Array,
                    sample_weights: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A relaxed :class:`MinkowskiLoss` or a :class:`TrustGatedMinkowski` between rain fields (B, H, W)."""
    if isinstance(minkowski, TrustGatedMinkowski):
        term, gate = minkowski.per_sample(pred, target)
        g = gate if sample_weights is None else gate * sample_weights
        return jnp.mean(g * term), {"gate": jnp.mean(gate)}
    if isinstance(minkowski, MinkowskiLoss):
        if sample_weights is None:
            return minkowski(pred, target), {}
        per = jax.vmap(lambda p, q: minkowski(p[None], q[None]))(pred, target)
        return jnp.mean(sample_weights * per), {}
    raise ConfigError(f"minkowski must be a MinkowskiLoss or a TrustGatedMinkowski, got {type(minkowski).__name__}")


def mse_minkowski_loss(minkowski: Any, weight: float) -> Callable:
    """``loss(net, batch, key) = MSE + weight * Minkowski(rain(net), rain_true)`` for :func:`fit`.

    ``minkowski``: a relaxed :class:`~nemic.metrics.minkowski.MinkowskiLoss` (e.g. ``transform="log1p"``) or a
    :class:`TrustGatedMinkowski`. Aux: ``mse``, ``minkowski`` (and ``gate``, the mean trust weight).
    """
    if not (np.isfinite(weight) and weight >= 0):
        raise ConfigError(f"the Minkowski weight must be finite and >= 0, got {weight!r}")

    def loss(net, batch, key=None):
        y = predict_log(net, batch["coarse"])
        mse = jnp.mean((y - log_rain(batch["fine"])) ** 2)
        mink, aux = _minkowski_term(minkowski, rain_from_log(y), batch["fine"])
        return mse + weight * mink, {"mse": mse, "minkowski": mink, **aux}

    return loss


def flow_matching_loss(minkowski: Any = None, weight: float = 0.0) -> Callable:
    """The conditional flow-matching loss of :class:`ConditionalFlow` for :func:`fit`, with an optional Minkowski
    term (weight ``weight``) on the one-step denoised estimate, weighted per sample by the flow time ``t``.

    Per sample: :math:`t \\sim U(0, 1)`, :math:`x_0 \\sim N(0, I)`, :math:`x_1` the transformed target,
    :math:`x_t = (1 - t) x_0 + t x_1`; loss :math:`\\overline{(v_\\theta(x_t, t) - (x_1 - x_0))^2}`.
    Aux: ``flow_matching`` (and ``minkowski``, ``gate``).
    """
    if not (np.isfinite(weight) and weight >= 0):
        raise ConfigError(f"the Minkowski weight must be finite and >= 0, got {weight!r}")
    if weight > 0 and minkowski is None:
        raise ConfigError("a Minkowski weight > 0 needs a Minkowski loss (minkowski=...)")

    def loss(model: ConditionalFlow, batch, key):
        coarse, fine = batch["coarse"], batch["fine"]
        b = fine.shape[0]
        k_t, k_x = jax.random.split(key)
        t = jax.random.uniform(k_t, (b,), dtype=fine.dtype)
        x1 = model.to_latent(fine, coarse)
        x0 = jax.random.normal(k_x, x1.shape, dtype=fine.dtype)
        tb = t[:, None, None]
        xt = (1.0 - tb) * x0 + tb * x1
        v = jax.vmap(model.velocity)(xt, t, coarse)
        fm = jnp.mean((v - (x1 - x0)) ** 2)
        aux = {"flow_matching": fm}
        if minkowski is None or weight == 0.0:
            return fm, aux
        x1_hat = xt + (1.0 - tb) * v
        mink, extra = _minkowski_term(minkowski, model.from_latent(x1_hat, coarse), fine, sample_weights=t)
        return fm + weight * mink, {**aux, "minkowski": mink, **extra}

    return loss

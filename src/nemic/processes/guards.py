"""Guards for hybrid runs: novelty detection, a guarded learned tendency, output clipping and run reports.

A learned tendency is only trustworthy on inputs like those it was trained on. :class:`MahalanobisDetector` is
fitted on feature vectors of the training inputs: it stores their mean ``mu`` and (ridge-regularised) covariance
``C`` and scores a feature vector ``f`` by the Mahalanobis distance (Mahalanobis 1936, Proc. Natl. Inst. Sci.
India 2, 49-55; used for out-of-distribution detection by Lee et al. 2018, NeurIPS, arXiv:1807.03888)::

    d(f) = sqrt((f - mu)^T C^{-1} (f - mu))

The threshold is the ``quantile`` of ``d`` over the training features, so the false-alarm rate on in-distribution
data is about ``1 - quantile`` by construction; :meth:`MahalanobisDetector.false_alarm_rate` measures it on
held-out data.

:class:`GuardedTendency` wraps a learned process: for states whose features are novel it replaces the learned
tendency by zero (the model falls back to physics only), optionally with a linear taper between ``threshold`` and
``taper * threshold`` instead of a hard switch, and it can bound the learned output smoothly
(``c * tanh(out / c)``). A process has no memory, so counting happens after a run: :func:`guard_report` scores
every saved state of a trajectory and reports the number and fraction of flagged states, the first flagged time,
the largest distance and whether the run blew up; :func:`guard_dataset` returns the per-time diagnostics as CF
variables.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite
from nemic.core.process import AbstractProcess, PyTree
from nemic.core.rollout import Trajectory


def moment_features(x: jax.Array) -> jax.Array:
    """Per-state statistics of a field: mean, standard deviation and mean absolute value, shape (1, 3).

    Suited to detecting a shifted climate (different forcing -> different mean and variance). Input: a field of
    any shape (one state); output: one feature vector (leading axis of length 1 = one "site").
    """
    x = jnp.ravel(x)
    return jnp.stack([jnp.mean(x), jnp.std(x), jnp.mean(jnp.abs(x))])[None, :]


def stencil_features(halfwidth: int = 2) -> Callable[[jax.Array], jax.Array]:
    """Local periodic neighbourhoods of a 1-D field: (K,) -> (K, 2w+1), the inputs of a local-stencil network."""

    def feats(x: jax.Array) -> jax.Array:
        return jnp.stack([jnp.roll(x, -o, axis=-1) for o in range(-halfwidth, halfwidth + 1)], axis=-1)

    return feats


class MahalanobisDetector(eqx.Module):
    """Novelty score ``d(f) = sqrt((f - mu)^T P (f - mu))`` with ``P`` the inverse training covariance.

    Attributes:
        mean: (D,) training mean of the features.
        precision: (D, D) inverse of the ridge-regularised training covariance.
        threshold: distances above it are novel (the ``quantile`` of the training distances).
        quantile: the training quantile that set the threshold.
    """

    mean: jax.Array
    precision: jax.Array
    threshold: jax.Array
    quantile: float = eqx.field(static=True)

    @classmethod
    def fit(cls, features: Any, quantile: float = 0.999, ridge: float = 1e-6) -> "MahalanobisDetector":
        """Fit on training features of shape (N, D) (N >= D + 1 samples); ``ridge`` is relative to the trace."""
        f = np.asarray(features, dtype=float)
        if f.ndim != 2:
            raise DataError(f"detector features must have shape (N, D), got {f.shape}")
        if f.shape[0] < f.shape[1] + 1:
            raise DataError(f"need at least D + 1 = {f.shape[1] + 1} training samples, got {f.shape[0]}")
        check_finite("detector training features", f)
        if not 0.0 < quantile < 1.0:
            raise ConfigError(f"quantile must be in (0, 1), got {quantile!r}")
        mu = f.mean(axis=0)
        cov = np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
        cov = cov + ridge * max(np.trace(cov) / f.shape[1], 1e-300) * np.eye(f.shape[1])
        prec = np.linalg.inv(cov)
        z = f - mu
        d = np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", z, prec, z), 0.0))
        thr = float(np.quantile(d, quantile))
        return cls(mean=jnp.asarray(mu), precision=jnp.asarray(prec), threshold=jnp.asarray(thr),
                   quantile=float(quantile))

    def distance(self, features: jax.Array) -> jax.Array:
        """Mahalanobis distance of features of shape (..., D) -> (...)."""
        z = features - self.mean
        return jnp.sqrt(jnp.maximum(jnp.einsum("...i,ij,...j->...", z, self.precision, z), 0.0))

    def is_novel(self, features: jax.Array) -> jax.Array:
        """Boolean (...): distance above the threshold."""
        return self.distance(features) > self.threshold

    def false_alarm_rate(self, features: Any) -> float:
        """Fraction of (held-out, in-distribution) feature vectors of shape (N, D) flagged as novel."""
        return float(jnp.mean(self.is_novel(jnp.asarray(features))))


class GuardedTendency(AbstractProcess):
    """A learned process switched off (tendency 0, physics only) for states whose features are novel.

    Args:
        learned: the learned process (e.g. a :class:`~nemic.processes.neural.NeuralTendency`).
        detector: a fitted :class:`MahalanobisDetector`.
        features: static function mapping the guarded field of one state to features of shape (M, D); the state
            is novel when the largest of its M distances exceeds the threshold.
        field: name of the state field the features are computed from.
        taper: ``None`` for a hard switch; a number > 1 for a linear taper of the learned tendency from full weight
            at ``d = threshold`` to zero at ``d = taper * threshold``.
        clip: ``None`` or a bound c > 0 applied as ``c * tanh(out / c)`` to every learned tendency field.

    The weight of the learned tendency, w(state) in [0, 1], is :meth:`weight`. Shapes and units: those of the
    wrapped process.
    """

    learned: AbstractProcess
    detector: MahalanobisDetector
    features: Callable = eqx.field(static=True)
    field: str = eqx.field(static=True)
    taper: float | None = eqx.field(static=True)
    clip: float | None = eqx.field(static=True)

    def __init__(self, learned: AbstractProcess, detector: MahalanobisDetector, features: Callable = moment_features,
                 field: str = "x", taper: float | None = None, clip: float | None = None):
        if taper is not None and not taper > 1.0:
            raise ConfigError(f"taper must be > 1 (a multiple of the threshold), got {taper!r}")
        if clip is not None and not clip > 0:
            raise ConfigError(f"clip must be > 0, got {clip!r}")
        self.learned, self.detector, self.features = learned, detector, features
        self.field, self.taper, self.clip = field, None if taper is None else float(taper), clip

    def distance(self, state: PyTree) -> jax.Array:
        """Largest Mahalanobis distance over the state's feature vectors, shape ()."""
        return jnp.max(self.detector.distance(self.features(getattr(state, self.field))))

    def weight(self, state: PyTree) -> jax.Array:
        """Weight of the learned tendency: 1 in distribution, 0 when novel (linear in between with a taper)."""
        d, thr = self.distance(state), self.detector.threshold
        if self.taper is None:
            return jnp.where(d > thr, 0.0, 1.0)
        return jnp.clip((self.taper * thr - d) / ((self.taper - 1.0) * thr), 0.0, 1.0)

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        out = self.learned.tendency(state, t)
        if self.clip is not None:
            c = self.clip
            out = jax.tree_util.tree_map(lambda v: c * jnp.tanh(v / c), out)
        w = jax.lax.stop_gradient(self.weight(state))
        return jax.tree_util.tree_map(lambda v: w * v, out)


def guard_report(guard: GuardedTendency, traj: Trajectory) -> dict[str, Any]:
    """Score every saved state of ``traj``: counts of flagged states and blow-up, as a JSON-ready dict.

    Keys: ``n_states``, ``n_flagged``, ``flagged_fraction``, ``first_flagged_time`` (None if none),
    ``max_distance``, ``threshold``, ``mean_weight`` (of the learned tendency), ``blowup_step`` (-1 if none).
    """
    d = np.asarray(jax.jit(jax.vmap(guard.distance))(traj.states))
    w = np.asarray(jax.jit(jax.vmap(guard.weight))(traj.states))
    thr = float(guard.detector.threshold)
    flagged = d > thr
    t = np.asarray(traj.t)
    return {
        "n_states": int(d.size),
        "n_flagged": int(flagged.sum()),
        "flagged_fraction": float(flagged.mean()) if d.size else 0.0,
        "first_flagged_time": float(t[np.argmax(flagged)]) if flagged.any() else None,
        "max_distance": float(d.max()) if d.size else None,
        "threshold": thr,
        "mean_weight": float(w.mean()) if w.size else None,
        "blowup_step": int(np.max(np.asarray(traj.blowup_step))),
    }


def guard_dataset(guard: GuardedTendency, traj: Trajectory):
    """Per-time guard diagnostics as a CF dataset: ``novelty_distance``, ``novel`` (0/1), ``learned_weight``."""
    import xarray as xr

    d = np.asarray(jax.jit(jax.vmap(guard.distance))(traj.states))
    w = np.asarray(jax.jit(jax.vmap(guard.weight))(traj.states))
    thr = float(guard.detector.threshold)
    ds = xr.Dataset({
        "novelty_distance": ("time", d, {"units": "1", "long_name": "Mahalanobis distance from the training "
                                                                     "distribution"}),
        "novel": ("time", (d > thr).astype(np.int8), {"units": "1", "long_name": "state flagged as novel",
                                                      "flag_values": np.array([0, 1], np.int8),
                                                      "flag_meanings": "in_distribution novel"}),
        "learned_weight": ("time", w, {"units": "1", "long_name": "weight of the learned tendency"}),
    }, coords={"time": ("time", np.asarray(traj.t), {"standard_name": "time", "long_name": "model time"})})
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic", "novelty_threshold": thr,
                     "novelty_quantile": guard.detector.quantile,
                     "blowup_step": int(np.max(np.asarray(traj.blowup_step)))})
    return ds


__all__ = ["GuardedTendency", "MahalanobisDetector", "guard_dataset", "guard_report", "moment_features",
           "stencil_features"]

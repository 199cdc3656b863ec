"""A novelty guard for the learned column physics of the hybrid atmosphere, column by column.

The column network (:class:`nemic.nn.column.ColumnNet`) is trained on the columns of one climate. The guard
scores every column it is applied to with :class:`LatitudeColumnDetector`: the network's normalised inputs
``f = (x - in_mean) / in_std`` (by default the thermodynamic part: the T and q profiles and p_s), minus the
training mean of ``f`` on the column's latitude row (the aquaplanet's climate depends on latitude), scored by
the Mahalanobis distance of this anomaly with the covariance of the training anomalies pooled over all rows
(:class:`nemic.processes.guards.MahalanobisDetector`; its threshold is a high quantile of the training
distances). A column is novel when it is unusual *for its latitude*: a +4 K column in mid-latitudes looks like a
control column some degrees closer to the equator, which a detector on the raw inputs (latitude being one input
among 4L + 3) misses. It replaces the network's output in novel columns by a fallback:

* ``"clip"``: the network on the column's inputs clipped, component by component, to the range of the training
  columns (the closest input it was trained on along every axis). It keeps the physics that matters most in a
  few-day forecast (radiative cooling of the upper levels, surface drag and evaporation, which the network learns
  well) while no input leaves the range the weights were fitted on, and it keeps the moisture budget closed
  (the network's output layer closes it for every input);
* ``"zero"``: no physics in that column (the bare dynamical core there), the switch of
  :class:`nemic.processes.guards.GuardedTendency` applied per column.

:class:`GuardedColumnNet` is the per-column counterpart of :class:`~nemic.processes.guards.GuardedTendency`
(which switches a whole state): a packed column function, so ``ColumnPhysics(grid, PackedColumnFunction(g, L))``
puts it into the hybrid (:func:`guarded_hybrid`), with the same hard switch or linear taper between ``threshold``
and ``taper * threshold``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.atmosphere.columns import column_arrays
from nemic.experiments.atmos_training import check_levels
from nemic.models.atmosphere import ColumnPhysics, PackedColumnFunction, PrimitiveEquations
from nemic.nn.column import ColumnNet
from nemic.processes.guards import MahalanobisDetector

__all__ = ["FALLBACKS", "FEATURE_SETS", "LatitudeColumnDetector", "column_features", "fit_column_detector",
           "GuardedColumnNet", "guarded_hybrid", "column_distances", "column_inputs_of", "feature_index"]

FALLBACKS = ("clip", "zero")
#: feature sets of the detector: "thermo" (T, q, p_s), "all" (every input but sin latitude)
FEATURE_SETS = ("thermo", "all")


def feature_index(levels: int, features: str = "thermo") -> tuple[int, ...]:
    """Indices of the packed inputs that the detector sees."""
    n = levels
    if features == "thermo":
        return tuple(range(2 * n)) + (4 * n,)
    if features == "all":
        return tuple(range(4 * n + 2))
    raise ConfigError(f"features must be one of {FEATURE_SETS}, got {features!r}")


def column_features(net: ColumnNet, x: Any) -> jax.Array:
    """The network's normalised inputs ``(x - in_mean) / in_std`` of packed columns ``x`` (..., 4L + 3)."""
    return (jnp.asarray(x) - net.in_mean) / net.in_std


def column_inputs_of(ds: xr.Dataset, *, max_columns: int | None = None, seed: int = 0) -> np.ndarray:
    """Packed network inputs (N, 4L + 3) of the columns of a truth dataset (all, or a random subset)."""
    return column_arrays(ds, max_columns=max_columns, seed=seed)[0]


class LatitudeColumnDetector(eqx.Module):
    """Novelty of a column for its latitude row (see the module docs); packed inputs in, distances out.

    Attributes:
        in_mean, in_std: the network's input normalisation (4L + 3). sin_lat: (R,) the rows' sin(latitude).
        row_mean: (R, D) training mean of the features on each row. detector: Mahalanobis on the anomalies.
        index: the packed inputs used as features (:func:`feature_index`).
    """

    in_mean: jax.Array
    in_std: jax.Array
    sin_lat: jax.Array
    row_mean: jax.Array
    detector: MahalanobisDetector
    index: tuple[int, ...] = eqx.field(static=True)

    @property
    def threshold(self) -> jax.Array:
        return self.detector.threshold

    @property
    def quantile(self) -> float:
        return self.detector.quantile

    def anomaly(self, x: jax.Array) -> jax.Array:
        """Features minus the training mean of the nearest latitude row, (..., D)."""
        x = jnp.asarray(x)
        f = ((x - self.in_mean) / self.in_std)[..., jnp.asarray(self.index)]
        row = jnp.argmin(jnp.abs(x[..., -1:] - self.sin_lat), axis=-1)
        return f - self.row_mean[row]

    def distance(self, x: jax.Array) -> jax.Array:
        """Mahalanobis distance (...) of packed columns (..., 4L + 3) from the training columns of their row."""
        return self.detector.distance(self.anomaly(x))

    def is_novel(self, x: jax.Array) -> jax.Array:
        return self.distance(x) > self.detector.threshold


def fit_column_detector(net: ColumnNet, x_train: Any, quantile: float = 0.998, features: str = "thermo",
                        ridge: float = 1e-6) -> tuple[LatitudeColumnDetector, np.ndarray, np.ndarray]:
    """Fit the detector on training columns ``x_train`` (N, 4L + 3) (packed inputs, SI, from a latitude grid).

    Returns ``(detector, lo, hi)``: the fitted :class:`LatitudeColumnDetector` and the per-input minimum and
    maximum of the training columns (the range of the ``"clip"`` fallback).
    """
    x = np.asarray(x_train, dtype=float)
    if x.ndim != 2 or x.shape[1] != 4 * net.levels + 3:
        raise DataError(f"training columns must have shape (N, {4 * net.levels + 3}) for a {net.levels}-level "
                        f"network, got {x.shape}")
    idx = feature_index(net.levels, features)
    sin_lat, row = np.unique(np.round(x[:, -1], 6), return_inverse=True)
    f = np.asarray(column_features(net, x))[:, idx]
    row_mean = np.stack([f[row == r].mean(axis=0) for r in range(sin_lat.size)])
    det = MahalanobisDetector.fit(f - row_mean[row], quantile=quantile, ridge=ridge)
    lat_det = LatitudeColumnDetector(in_mean=net.in_mean, in_std=net.in_std, sin_lat=jnp.asarray(sin_lat),
                                     row_mean=jnp.asarray(row_mean), detector=det, index=idx)
    return lat_det, x.min(axis=0), x.max(axis=0)


class GuardedColumnNet(eqx.Module):
    """``net`` on columns like its training columns, a fallback on novel ones (packed in, packed out).

    Args:
        net: the column network. detector: a :class:`LatitudeColumnDetector` (:func:`fit_column_detector`).
        lo, hi: per-input range of the training columns (``"clip"`` fallback).
        fallback: ``"clip"`` or ``"zero"`` (see the module docs).
        taper: ``None`` (hard switch at the threshold) or > 1: the network's weight falls linearly from 1 at
            ``d = threshold`` to 0 at ``d = taper * threshold``.
    """

    net: ColumnNet
    detector: LatitudeColumnDetector
    lo: jax.Array
    hi: jax.Array
    fallback: str = eqx.field(static=True)
    taper: float | None = eqx.field(static=True)

    def __init__(self, net: ColumnNet, detector: LatitudeColumnDetector, lo: Any, hi: Any, fallback: str = "clip",
                 taper: float | None = None):
        if fallback not in FALLBACKS:
            raise ConfigError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if taper is not None and not taper > 1.0:
            raise ConfigError(f"taper must be > 1 (a multiple of the threshold), got {taper!r}")
        n_in = 4 * net.levels + 3
        if np.shape(detector.in_mean) != (n_in,) or np.shape(lo) != (n_in,) or np.shape(hi) != (n_in,):
            raise DataError(f"the detector and the range must be for {n_in} inputs ({net.levels} levels), got "
                            f"{np.shape(detector.in_mean)}, {np.shape(lo)}, {np.shape(hi)}")
        self.net, self.detector = net, detector
        self.lo, self.hi = jnp.asarray(lo, float), jnp.asarray(hi, float)
        self.fallback, self.taper = fallback, None if taper is None else float(taper)

    @property
    def levels(self) -> int:
        return self.net.levels

    @property
    def sigma_boundaries(self) -> tuple[float, ...]:
        return self.net.sigma_boundaries

    def distance(self, x: jax.Array) -> jax.Array:
        """Mahalanobis distance of packed columns (..., 4L + 3) from the training columns."""
        return self.detector.distance(x)

    def weight(self, x: jax.Array) -> jax.Array:
        """Weight of the network's own output: 1 in distribution, 0 when novel (linear in between with a taper)."""
        d, thr = self.distance(x), self.detector.threshold
        if self.taper is None:
            return jnp.where(d > thr, 0.0, 1.0)
        return jnp.clip((self.taper * thr - d) / ((self.taper - 1.0) * thr), 0.0, 1.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = jax.lax.stop_gradient(self.weight(x))
        y = self.net(x)
        if self.fallback == "clip":
            alt = self.net(jnp.clip(x, self.lo, self.hi))
        else:
            alt = jnp.zeros_like(y)
        if self.taper is None:
            return jnp.where(w > 0.5, y, alt)
        return w * y + (1.0 - w) * alt


def guarded_hybrid(model: PrimitiveEquations, guarded: GuardedColumnNet, insolation: str = "daily",
                   day0: float = 0.0):
    """``model + ColumnPhysics(guarded)``, the hybrid of :func:`nemic.experiments.atmos_training.hybrid` with the
    guard in every column; a one-line :class:`DataError` when the network's levels are not the model's."""
    check_levels(model, guarded.net)
    return model + ColumnPhysics(model.grid, PackedColumnFunction(guarded, guarded.levels), insolation=insolation,
                                 day0=day0)


def column_distances(guarded: GuardedColumnNet, ds: xr.Dataset, chunk: int = 65536) -> np.ndarray:
    """Distances of every column of a truth dataset, shape (time, lat, lon)."""
    x = column_inputs_of(ds)
    f = eqx.filter_jit(lambda g, c: g.distance(c))
    d = np.concatenate([np.asarray(f(guarded, jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)])
    return d.reshape(ds.sizes["time"], ds.sizes["lat"], ds.sizes["lon"])

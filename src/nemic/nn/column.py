"""A per-column network for the learned physics of the global atmosphere, with a closed moisture budget.

One column (``L`` sigma levels, top to bottom) has the inputs

    T (L) [K], q (L) [kg/kg], u (L) [m/s], v (L) [m/s], p_s [Pa], S [W m-2] (TOA insolation), sin(latitude),

packed in this order into a vector of ``4 L + 3`` numbers (:meth:`ColumnNet.pack`), and the outputs

    dT/dt (L) [K/s], dq/dt (L) [1/s], du/dt (L) [m/s2], dv/dt (L) [m/s2], P [kg m-2 s-1], E [kg m-2 s-1],

a vector of ``4 L + 2`` numbers (:meth:`ColumnNet.unpack`). The inputs are normalised with statistics stored in the
module (``in_mean``, ``in_std``; not trained), the MLP's outputs are scaled by ``out_scale`` (per level) and
``flux_scale``.

**Moisture budget (the choice made here).** Precipitation and evaporation are non-negative by construction,
``P = flux_scale softplus(z_P)``, ``E = flux_scale softplus(z_E)``, and the humidity tendency is corrected so that
the column's water budget closes exactly (Peixoto & Oort 1992, Physics of Climate, eq. 12.9, with no condensate
storage):

    sum_k dq/dt_k  p_s dsigma_k / g  =  E - P.

The MLP's raw humidity tendency ``r`` is corrected by a profile proportional to the column's humidity,
``dq/dt_k = r_k + q_k c`` with ``c = (E - P - W(r)) / W(q)`` and ``W(x) = sum_k x_k p_s dsigma_k / g``: the
correction sits where the water is (moist lower levels), not in the dry stratosphere. (Beucler et al. 2021,
Phys. Rev. Lett. 126, 098302, doi:10.1103/PhysRevLett.126.098302, enforce conservation laws in a network by such
an output layer.) With a zero last layer (``zero_init=True``) every tendency is exactly zero and ``P = E``: the
hybrid then equals the bare dynamical core.
"""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.nn.mlp import activation, zero_last_layer
from nemic.nn.registry import register_module

__all__ = ["ColumnNet", "GRAVITY", "apply_columns"]

#: m s-2 (SPEEDY's value, used in the column water budget)
GRAVITY = 9.81
OUTPUT_NAMES = ("dTdt", "dqdt", "dudt", "dvdt")


@register_module("ColumnNet")
class ColumnNet(eqx.Module):
    """An MLP mapping one atmospheric column to physics tendencies, precipitation and evaporation.

    Args:
        sigma_boundaries: the ``L + 1`` sigma interfaces, top (0) to surface (1), of the levels it is trained on.
        width, depth: hidden width and number of hidden layers of the MLP.
        activation_name: tanh, relu, gelu, silu or softplus.
        zero_init: zero the last layer (zero tendencies, ``P = E``).
        key: PRNG key of the initial weights.

    Attributes (arrays, not trained): ``in_mean``, ``in_std`` (4L+3), ``out_scale`` (4L), ``flux_scale`` (),
    ``d_sigma`` (unused; see :attr:`layer_thickness`).
    """

    mlp: eqx.nn.MLP
    in_mean: jax.Array
    in_std: jax.Array
    out_scale: jax.Array
    flux_scale: jax.Array
    d_sigma: jax.Array
    sigma_boundaries: tuple[float, ...] = eqx.field(static=True)
    activation_name: str = eqx.field(static=True)

    def __init__(self, sigma_boundaries: Sequence[float], width: int = 128, depth: int = 3,
                 activation_name: str = "silu", *, key: jax.Array, zero_init: bool = False):
        sb = np.asarray(sigma_boundaries, dtype=float)
        if sb.ndim != 1 or sb.size < 3 or not np.all(np.diff(sb) > 0) or abs(sb[0]) > 1e-6 or abs(sb[-1] - 1) > 1e-6:
            raise ConfigError("sigma_boundaries must increase from 0 (top) to 1 (surface) with at least 2 levels")
        if width < 1 or depth < 1:
            raise ConfigError(f"need width >= 1 and depth >= 1, got {width}, {depth}")
        n = sb.size - 1
        self.sigma_boundaries = tuple(float(x) for x in sb)
        self.activation_name = activation_name
        self.mlp = eqx.nn.MLP(4 * n + 3, 4 * n + 2, width, depth, activation=activation(activation_name), key=key)
        if zero_init:
            self.mlp = zero_last_layer(self.mlp)
        self.in_mean = jnp.zeros(4 * n + 3)
        self.in_std = jnp.ones(4 * n + 3)
        self.out_scale = jnp.ones(4 * n)
        self.flux_scale = jnp.asarray(1.0e-5)
        self.d_sigma = jnp.asarray(np.diff(sb))

    @property
    def levels(self) -> int:
        return len(self.sigma_boundaries) - 1

    @property
    def layer_thickness(self) -> np.ndarray:
        """Sigma thickness of each level, from the static ``sigma_boundaries`` (a constant, never trained).

        The ``d_sigma`` array field holds the same numbers but, being an array, an optimiser over all inexact
        arrays (``fit_offline``'s default) trained it; networks saved before this was found learned it as a
        free correction profile, so their moisture budget closed only in their own learned thicknesses. The
        budget now always uses these constants; ``d_sigma`` is kept for the weights format only."""
        return np.diff(np.asarray(self.sigma_boundaries))

    def config(self) -> dict[str, Any]:
        """Hyperparameters that rebuild the skeleton (:func:`nemic.train.checkpoint.save_module`)."""
        return {"sigma_boundaries": list(self.sigma_boundaries), "width": self.mlp.width_size,
                "depth": self.mlp.depth, "activation_name": self.activation_name}

    def with_statistics(self, in_mean, in_std, out_scale, flux_scale) -> "ColumnNet":
        """A copy with normalisation statistics (e.g. from the training set); zero stds are replaced by 1."""
        n = self.levels
        in_mean, in_std = jnp.asarray(in_mean, float), jnp.asarray(in_std, float)
        out_scale, flux_scale = jnp.asarray(out_scale, float), jnp.asarray(flux_scale, float)
        if in_mean.shape != (4 * n + 3,) or in_std.shape != (4 * n + 3,) or out_scale.shape != (4 * n,):
            raise DataError(f"statistics for {n} levels need shapes ({4 * n + 3},), ({4 * n + 3},), ({4 * n},); got "
                            f"{in_mean.shape}, {in_std.shape}, {out_scale.shape}")
        in_std = jnp.where(in_std > 0, in_std, 1.0)
        out_scale = jnp.where(out_scale > 0, out_scale, 1.0)
        return eqx.tree_at(lambda m: (m.in_mean, m.in_std, m.out_scale, m.flux_scale), self,
                           (in_mean, in_std, out_scale, flux_scale))

    # ------------------------------------------------------------ packing
    @staticmethod
    def pack(T, q, u, v, ps, insolation, lat_deg) -> jax.Array:
        """Inputs of one column (profiles (L,), scalars) -> vector (4L + 3,); broadcasts over leading axes."""
        lat = jnp.sin(jnp.deg2rad(jnp.asarray(lat_deg, float)))
        scal = [jnp.asarray(ps)[..., None], jnp.asarray(insolation)[..., None],
                jnp.broadcast_to(lat, jnp.shape(ps))[..., None]]
        return jnp.concatenate([T, q, u, v, *scal], axis=-1)

    def unpack(self, y: jax.Array) -> dict[str, jax.Array]:
        """Output vector(s) (..., 4L + 2) -> dict of dTdt, dqdt, dudt, dvdt (..., L), precipitation, evaporation."""
        n = self.levels
        out = {k: y[..., i * n:(i + 1) * n] for i, k in enumerate(OUTPUT_NAMES)}
        out["precipitation"] = y[..., 4 * n]
        out["evaporation"] = y[..., 4 * n + 1]
        return out

    # ------------------------------------------------------------ the network
    def __call__(self, x: jax.Array) -> jax.Array:
        """One packed column (4L + 3,) -> packed outputs (4L + 2,) in SI units (see the module docs)."""
        n = self.levels
        if x.shape != (4 * n + 3,):
            raise DataError(f"a column of the network has {4 * n + 3} inputs ({n} levels), got shape {x.shape}")
        mean, std, oscale, fscale = (jax.lax.stop_gradient(a) for a in
                                     (self.in_mean, self.in_std, self.out_scale, self.flux_scale))
        z = self.mlp((x - mean) / std)
        tend = z[:4 * n] * oscale
        precip = fscale * jax.nn.softplus(z[4 * n])
        evap = fscale * jax.nn.softplus(z[4 * n + 1])
        q, ps = x[n:2 * n], x[4 * n]
        mass = ps * self.layer_thickness / GRAVITY  # kg m-2 per level
        raw = tend[n:2 * n]
        water = jnp.maximum(q, 0.0) + 1e-12
        dq = raw + water * (evap - precip - jnp.sum(raw * mass)) / jnp.sum(water * mass)
        return jnp.concatenate([tend[:n], dq, tend[2 * n:], jnp.stack([precip, evap])])

    def column_water_change(self, y: jax.Array, ps: jax.Array) -> jax.Array:
        """``sum_k dq/dt_k p_s dsigma_k / g`` [kg m-2 s-1] of packed outputs ``y`` (equals E - P by construction)."""
        n = self.levels
        return jnp.sum(y[..., n:2 * n] * self.layer_thickness, axis=-1) * ps / GRAVITY


def apply_columns(net: ColumnNet, T, q, u, v, ps, insolation, lat_deg) -> dict[str, jax.Array]:
    """Apply ``net`` to every column of gridded fields (``vmap`` over all grid points).

    Args:
        T, q, u, v: (L, lat, lon); ps, insolation: (lat, lon); lat_deg: (lat,) latitudes in degrees.

    Returns:
        dict of dTdt, dqdt, dudt, dvdt (L, lat, lon) and precipitation, evaporation (lat, lon).
    """
    L, nlat, nlon = jnp.shape(T)
    if L != net.levels:
        raise DataError(f"the fields have {L} levels but the column network was trained on {net.levels}")
    prof = [jnp.moveaxis(a, 0, -1).reshape(nlat * nlon, L) for a in (T, q, u, v)]
    lat = jnp.broadcast_to(jnp.asarray(lat_deg)[:, None], (nlat, nlon)).reshape(-1)
    x = ColumnNet.pack(*prof, jnp.reshape(ps, -1), jnp.reshape(insolation, -1), lat)
    y = net.unpack(jax.vmap(net)(x))
    out = {k: jnp.moveaxis(y[k].reshape(nlat, nlon, L), -1, 0) for k in OUTPUT_NAMES}
    out["precipitation"] = y["precipitation"].reshape(nlat, nlon)
    out["evaporation"] = y["evaporation"].reshape(nlat, nlon)
    return out

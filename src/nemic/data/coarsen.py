"""Coarse-graining of two-layer QG fields and the subgrid forcing targets of the ocean subgrid benchmark.

Ross et al. (2023), JAMES 15, e2022MS003258, doi:10.1029/2022MS003258, section 2.3, define three
filter-and-coarsen operators from a high-resolution grid (nx_hi) to a low-resolution grid (nx_lo), ratio
``r = nx_hi / nx_lo``:

* ``op1``: spectral truncation to the low-resolution wavenumbers, then the low-resolution model's exponential
  filter (a sharp filter);
* ``op2``: spectral truncation, then the Gaussian ``exp(-kappa^2 (2 dx_lo)^2 / 24)``;
* ``op3``: a Gaussian filter of width ``r dx_hi`` on the high-resolution grid, then block averages of r x r
  cells. The benchmark applies gcm-filters' Laplacian-polynomial approximation of the Gaussian kernel
  (Grooms et al. 2021, JAMES 13, e2021MS002552, doi:10.1029/2021MS002552); here the Gaussian target
  ``exp(-kappa^2 (r dx_hi)^2 / 24)`` is applied exactly in spectral space (the grid is periodic).

Spectral truncation divides by ``r^2`` so that grid-point values keep their amplitude (rfft2 is unnormalised),
and shifts the phase by half a coarse cell minus half a fine cell so that the result is the field at the coarse
cell centres (pyqg's grids are cell-centred). The benchmark's code omits this shift, i.e. it translates ``op1``
and ``op2`` fields by ``(dx_lo - dx_hi) / 2``; the translation-invariant dynamics and targets are unaffected,
but here all three operators agree on where the coarse values are.

Subgrid forcing (what must be *added* to the low-resolution tendency, Ross et al. 2023, eq. 4):

    q_subgrid_forcing = (u_bar . grad) q_bar - bar((u . grad) q)         (advection by the full velocity),
    q_forcing_total   = bar(dq/dt)_hi - (dq/dt)_lo(q_bar)                (all terms of the tendency),

where the bar is the operator and the advection terms use the background flow ``U_i`` plus the eddy velocity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.models.qg.grid import QGGrid, as_grid
from nemic.models.qg.model import TwoLayerQG

OPERATORS = ("op1", "op2", "op3")
REQUIRED_VARIABLES = ("q", "q_subgrid_forcing", "q_forcing_total")


class Coarsener(eqx.Module):
    """One of the benchmark's operators mapping fields on the ``hi`` grid to the ``lo`` grid.

    Args:
        hi, lo: the high- and low-resolution grids (:class:`~nemic.models.qg.grid.QGGrid`, or models, whose grids
            are taken): the same domain, ``hi.nx`` a multiple of ``lo.nx``.
        operator: ``"op1"``, ``"op2"`` or ``"op3"`` (see the module documentation).
        filterfac: amplitude of the low-resolution exponential filter that ``op1`` applies (default: ``lo``'s
            if ``lo`` is a model, else pyqg's 23.6). A static number: it defines the operator.

    The coarsener holds grids only; the forcing targets take the two models as arguments.
    """

    hi: QGGrid = eqx.field(static=True)
    lo: QGGrid = eqx.field(static=True)
    operator: str = eqx.field(static=True)
    filterfac: float = eqx.field(static=True)

    def __init__(self, hi: Any, lo: Any, operator: str = "op1", filterfac: float | None = None):
        if operator not in OPERATORS:
            raise ConfigError(f"unknown coarse-graining operator {operator!r}; choose one of {list(OPERATORS)}")
        if filterfac is None:
            filterfac = float(lo.filterfac) if hasattr(lo, "filterfac") else 23.6
        hi, lo = as_grid(hi), as_grid(lo)
        if hi.nx % lo.nx or hi.ny % lo.ny or hi.nx // lo.nx != hi.ny // lo.ny or hi.nx <= lo.nx:
            raise ConfigError(f"high-resolution grid ({hi.ny}x{hi.nx}) must be a finer multiple of the "
                              f"low-resolution grid ({lo.ny}x{lo.nx})")
        if (hi.L, hi.W) != (lo.L, lo.W):
            raise ConfigError("high- and low-resolution models must share the domain size L, W")
        self.hi, self.lo, self.operator, self.filterfac = hi, lo, operator, float(filterfac)

    @property
    def ratio(self) -> int:
        return self.hi.nx // self.lo.nx

    def _truncate(self, fh):
        n2 = self.lo.ny // 2
        th = jnp.concatenate([fh[..., :n2, : self.lo.nk], fh[..., -n2:, : self.lo.nk]], axis=-2) / self.ratio**2
        # both grids are cell-centred: move from the first fine cell centre to the first coarse one
        k, l, _ = self.lo.wavenumbers()
        shift = np.exp(1j * (k * (self.lo.dx - self.hi.dx) + l * (self.lo.dy - self.hi.dy)) / 2)
        return th * jnp.asarray(shift, th.dtype)

    def coarsen(self, f):
        """Filter and coarsen a field (..., ny_hi, nx_hi) to (..., ny_lo, nx_lo) (same units)."""
        if f.shape[-2:] != (self.hi.ny, self.hi.nx):
            raise DataError(f"field to coarsen must end with shape ({self.hi.ny}, {self.hi.nx}), got {f.shape}")
        dt = f.dtype
        if self.operator == "op3":
            _, _, wv2 = self.hi.wavenumbers(dt)
            width = self.ratio * self.hi.dx
            g = self.hi.ifft(self.hi.fft(f) * jnp.exp(-wv2 * width**2 / 24))
            r = self.ratio
            return g.reshape(f.shape[:-2] + (self.lo.ny, r, self.lo.nx, r)).mean(axis=(-3, -1))
        th = self._truncate(self.hi.fft(f))
        if self.operator == "op1":
            th = th * jnp.asarray(self.lo.exponential_filter(self.filterfac), dt)
        else:
            _, _, wv2 = self.lo.wavenumbers(dt)
            th = th * jnp.exp(-wv2 * (2 * self.lo.dx) ** 2 / 24)
        return self.lo.ifft(th)

    @staticmethod
    def _advection(model: TwoLayerQG, q):
        ph = model.invert(model.fft(q))
        u, v = model.velocities(ph)
        U = jnp.asarray(model.Ubg, q.dtype)[:, None, None]
        return model.ifft(model.flux_divergence_hat(q, u + U, v))

    def _check(self, hi: TwoLayerQG, lo: TwoLayerQG) -> None:
        if hi.grid != self.hi or lo.grid != self.lo:
            raise ConfigError(f"the models' grids ({hi.nx}, {lo.nx} points) are not the coarsener's "
                              f"({self.hi.nx}, {self.lo.nx})")

    def q_subgrid_forcing(self, hi: TwoLayerQG, lo: TwoLayerQG, q_hi):
        """``(u_bar . grad) q_bar - bar((u . grad) q)`` (2, ny_lo, nx_lo), s^-2, from PV ``q_hi`` (2, ny_hi, nx_hi)
        of the high-resolution model ``hi`` (``lo``: the low-resolution model)."""
        self._check(hi, lo)
        qbar = self.coarsen(q_hi)
        return self._advection(lo, qbar) - self.coarsen(self._advection(hi, q_hi))

    def q_forcing_total(self, hi: TwoLayerQG, lo: TwoLayerQG, q_hi):
        """``bar(dq/dt)_hi - (dq/dt)_lo(q_bar)`` (2, ny_lo, nx_lo), s^-2 (tendencies without the filter)."""
        self._check(hi, lo)
        qbar = self.coarsen(q_hi)
        return (self.coarsen(hi.ifft(hi.physics.tendency_hat(q_hi)))
                - lo.ifft(lo.physics.tendency_hat(qbar)))

    def targets(self, hi: TwoLayerQG, lo: TwoLayerQG, q_hi) -> dict[str, jax.Array]:
        """``{"q": q_bar, "q_subgrid_forcing": ..., "q_forcing_total": ...}`` for one snapshot (2, ny_hi, nx_hi)."""
        return {"q": self.coarsen(q_hi), "q_subgrid_forcing": self.q_subgrid_forcing(hi, lo, q_hi),
                "q_forcing_total": self.q_forcing_total(hi, lo, q_hi)}


_CF = {
    "q": {"units": "s-1", "long_name": "coarse-grained potential vorticity anomaly",
          "standard_name": "ocean_potential_vorticity_anomaly"},
    "q_subgrid_forcing": {"units": "s-2", "long_name": "subgrid forcing of potential vorticity (advection)"},
    "q_forcing_total": {"units": "s-2", "long_name": "total forcing of potential vorticity (all tendency terms)"},
}


def forcing_dataset(coarsener: Coarsener, hi: TwoLayerQG, lo: TwoLayerQG, t, q_hi, attrs: dict | None = None,
                    batch: int = 16) -> xr.Dataset:
    """CF-annotated dataset of coarse-grained PV and forcing targets for high-resolution snapshots.

    Args:
        coarsener: the operator.
        hi, lo: the high- and low-resolution models (on the coarsener's grids).
        t: times (n,), s.
        q_hi: PV snapshots (n, 2, ny_hi, nx_hi), s^-1.
        attrs: extra global attributes.
        batch: snapshots per jitted batch.
    Returns:
        Dataset with variables ``q``, ``q_subgrid_forcing``, ``q_forcing_total`` of dims (time, lev, y, x).
    """
    f = eqx.filter_jit(jax.vmap(coarsener.targets, in_axes=(None, None, 0)))
    q_hi = np.asarray(q_hi)
    parts = [jax.tree_util.tree_map(np.asarray, f(hi, lo, jnp.asarray(q_hi[i:i + batch])))
             for i in range(0, len(q_hi), batch)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in REQUIRED_VARIABLES}
    ds = xr.Dataset(
        {k: (("time", "lev", "y", "x"), v, dict(_CF[k])) for k, v in out.items()},
        coords={"time": ("time", np.asarray(t), {"units": "s", "standard_name": "time", "long_name": "model time"}),
                "lev": ("lev", np.array([1, 2]), {"long_name": "layer (1 = upper)"}),
                "x": ("x", lo.x, {"units": "m", "long_name": "zonal distance"}),
                "y": ("y", lo.y, {"units": "m", "long_name": "meridional distance"})},
    )
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic", "operator": coarsener.operator,
                     "nx_hi": coarsener.hi.nx, "nx_lo": lo.nx,
                     "description": "coarse-grained two-layer QG PV and subgrid forcing (Ross et al. 2023)"})
    ds.attrs.update(lo.to_attrs("lo_"))
    if attrs:
        ds.attrs.update(attrs)
    return ds


def load_forcing_dataset(path: str | Path, variables: Sequence[str] = REQUIRED_VARIABLES) -> xr.Dataset:
    """Open a dataset written by :func:`forcing_dataset` and check that it has the expected variables and dims."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset '{path}' does not exist")
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read dataset '{path}': {e}") from None
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(f"dataset '{path}' lacks variable(s) {missing}; expected {list(variables)} "
                        f"(found {sorted(ds.data_vars)})")
    for v in variables:
        if ds[v].dims != ("time", "lev", "y", "x"):
            raise DataError(f"variable '{v}' in '{path}' has dims {ds[v].dims}; expected ('time', 'lev', 'y', 'x')")
    return ds

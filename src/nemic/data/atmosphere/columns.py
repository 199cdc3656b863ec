"""Per-column training sets from a truth dataset: packed inputs and targets of :class:`nemic.nn.column.ColumnNet`.

Every grid column at every saved time is one sample: inputs ``(T, q, u, v, p_s, insolation, sin lat)`` and
targets ``(dT/dt, dq/dt, du/dt, dv/dt of the physics, precipitation, evaporation)``, in the packing of
:meth:`nemic.nn.column.ColumnNet.pack` / ``unpack``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from nemic.core.errors import DataError
from nemic.data.atmosphere.dataset import PROFILE_VARS, SURFACE_VARS, TENDENCY_VARS

__all__ = ["column_arrays", "TRUTH_VARIABLES"]

#: variables a truth store needs for training
TRUTH_VARIABLES = PROFILE_VARS + TENDENCY_VARS + SURFACE_VARS


def _cols(a: np.ndarray) -> np.ndarray:
    """(time, level, lat, lon) -> (time*lat*lon, level)."""
    return np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])


def column_arrays(ds: xr.Dataset, *, max_columns: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, 4L + 3) and targets (N, 4L + 2) of every column of ``ds`` (float32).

    Args:
        ds: a truth dataset (checked with :func:`nemic.data.atmosphere.dataset.check_truth`).
        max_columns: if given and smaller than the number of columns, a random subset of this size
            (``numpy`` generator seeded by ``seed``).
    """
    missing = [v for v in TRUTH_VARIABLES if v not in ds]
    if missing:
        raise DataError(f"truth lacks {missing} needed for column training")
    nt, nlat, nlon = ds.sizes["time"], ds.sizes["lat"], ds.sizes["lon"]
    n = nt * nlat * nlon
    lat = np.broadcast_to(np.sin(np.deg2rad(ds["lat"].values))[None, :, None], (nt, nlat, nlon)).reshape(-1)
    surf = [ds[k].values.reshape(-1) for k in ("ps", "insolation")]
    x = np.concatenate([_cols(ds[k].values) for k in PROFILE_VARS] + [np.stack(surf + [lat], axis=-1)], axis=-1)
    y = np.concatenate([_cols(ds[k].values) for k in TENDENCY_VARS]
                       + [np.stack([ds["precipitation"].values.reshape(-1),
                                    ds["evaporation"].values.reshape(-1)], axis=-1)], axis=-1)
    if max_columns is not None and max_columns < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_columns, replace=False))
        x, y = x[idx], y[idx]
    return x.astype(np.float32), y.astype(np.float32)

"""Turn trajectories into CF-annotated :class:`xarray.Dataset` objects and write them atomically."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from nemic.io.files import atomic_write, current_umask, ensure_writable_dir, write_json  # noqa: F401  (re-exported)
from nemic.core.rollout import Trajectory
from nemic.core.state import AbstractState


def _fields(state: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if isinstance(state, Mapping):
        return dict(state)
    return {"state": state}


def to_xarray(
    traj: Trajectory,
    *,
    attrs: Mapping[str, Any] | None = None,
    member_dim: str = "member",
    coords: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Convert a :class:`Trajectory` to a CF-annotated Dataset.

    The time axis is ``time``; an ensemble's member axis (``Trajectory.member_axis``, set by
    :func:`nemic.core.rollout.ensemble_rollout`) is called ``member`` and gets an integer coordinate. A plain
    ``vmap`` of :func:`~nemic.core.rollout.rollout` (times of shape (n, n_saved)) is treated the same way. Dimension names and CF attributes come from the state class's ``cf`` table;
    fields that are not listed get generic dimension names.

    Args:
        traj: the trajectory.
        attrs: global attributes (e.g. model parameters) added to the dataset.
        member_dim: name of the ensemble axis.
        coords: extra coordinates, e.g. ``{"lat": lat}``.
    """
    states = traj.states
    cls = type(states)
    table = cls.cf if isinstance(states, AbstractState) else {}
    time_units = cls.time_units if isinstance(states, AbstractState) else "1"
    t = np.asarray(traj.t)
    has_members = traj.member_axis or t.ndim == 2
    lead = (member_dim, "time") if has_members else ("time",)
    data_vars = {}
    for name, value in _fields(states).items():
        if value is None:
            continue
        arr = np.asarray(value)
        meta = dict(table.get(name, {}))
        own = tuple(meta.pop("dims", ()))
        n_own = arr.ndim - len(lead)
        if len(own) != n_own:
            own = tuple(f"{name}_dim{i}" for i in range(n_own))
        data_vars[name] = (lead + own, arr, meta)
    ds = xr.Dataset(data_vars)
    ds = ds.assign_coords(time=("time", t if t.ndim == 1 else t[0]))
    if has_members:
        n_members = next(iter(ds.data_vars.values())).shape[0] if ds.data_vars else 0
        ds = ds.assign_coords({member_dim: (member_dim, np.arange(n_members))})
        ds[member_dim].attrs.update({"long_name": "ensemble member", "standard_name": "realization"})
    ds["time"].attrs.update({"units": time_units, "long_name": "model time", "standard_name": "time"})
    if coords:
        ds = ds.assign_coords(**coords)
    bad = int(np.max(np.asarray(traj.blowup_step)))
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic", "blowup_step": bad})
    if attrs:
        ds.attrs.update({k: _attr(v) for k, v in attrs.items()})
    return ds


def _attr(v: Any) -> Any:
    if isinstance(v, (jax.Array, np.ndarray)):
        v = np.asarray(v)
        return v.item() if v.ndim == 0 else v
    if isinstance(v, bool):
        return int(v)
    return v


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to netCDF-4 atomically (h5netcdf engine)."""
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure to PNG atomically and close it; return the path."""
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    plt.close(fig)
    return out



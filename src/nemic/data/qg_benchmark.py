"""Readers of the QG subgrid-benchmark files written by ``nemic qg generate`` (Ross et al. 2023).

A generate directory holds ``hires.nc`` (high-resolution PV snapshots, dims time, lev, y, x; the model's parameters
as ``hi_<name>`` attributes) and ``op1.nc``/``op2.nc``/``op3.nc`` (coarse-grained PV and forcing targets, the
low-resolution model as ``lo_<name>`` attributes; :func:`nemic.data.coarsen.forcing_dataset`). Every reader checks
what it needs and raises a one-line :class:`~nemic.core.errors.DataError` naming the file otherwise: a missing,
unreadable or corrupt file, a missing variable or attribute, and any NaN/inf in the data it returns (caught here, at
the door, naming file and variable, so that no score or training is ever computed from non-finite data).

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.coarsen import OPERATORS, load_forcing_dataset
from nemic.models.qg import TwoLayerQG, get_config


def check_finite_data(values, path, variable: str) -> np.ndarray:
    """``values`` as an array, or a one-line :class:`DataError` naming ``path`` and ``variable`` if it holds
    NaN/inf (with the number of bad values and the first bad time index)."""
    a = np.asarray(values)
    if a.dtype.kind in "fc":
        ok = np.isfinite(a)
        if not ok.all():
            n = int(a.size - np.count_nonzero(ok))
            first = int(np.argwhere(~ok)[0][0])
            raise DataError(f"variable '{variable}' in '{path}' holds {n} NaN/inf value(s) (first at time index "
                            f"{first}); the data must be finite")
    return a


def _open(path: Path, what: str) -> xr.Dataset:
    """Open a netCDF file with a one-line :class:`DataError` if it is missing, a directory, or not netCDF."""
    if not path.exists():
        raise DataError(f"{what} '{path}' does not exist")
    if not path.is_file():
        raise DataError(f"{what} '{path}' is not a file")
    try:
        return xr.open_dataset(path, engine="h5netcdf")
    except Exception as e:  # noqa: BLE001  (h5py/xarray raise many types on a corrupt file)
        raise DataError(f"cannot read {what} '{path}': {' '.join(str(e).split())[:200] or type(e).__name__}") from None


def model_from_attrs(attrs, prefix: str, path) -> TwoLayerQG:
    """Rebuild the :class:`~nemic.models.qg.TwoLayerQG` whose parameters a dataset stores as ``<prefix>_<name>``
    attributes (``TwoLayerQG.to_attrs(prefix + "_")``); ``DataError`` naming ``path`` if one is missing."""
    for k in ("nx", "ny", "L", "W", "rek", "beta", "rd", "delta", "H1", "U1", "U2", "filterfac"):
        if f"{prefix}_{k}" not in attrs:
            raise DataError(f"dataset '{path}' lacks the model attribute '{prefix}_{k}'")
    return TwoLayerQG.from_attrs(attrs, f"{prefix}_", source=f"dataset '{path}'")


def last_snapshot(path: str | Path) -> np.ndarray:
    """The last PV snapshot (2, ny, nx), s^-1, of a ``hires.nc`` (to restart a run); one-line
    :class:`DataError` for a missing, unreadable or non-finite file."""
    path = Path(path)
    with _open(path, "restart file") as ds:
        if "q" not in ds or ds["q"].ndim != 4 or ds["q"].shape[0] == 0 or ds["q"].shape[1] != 2:
            raise DataError(f"restart file '{path}' has no variable q (time, lev=2, y, x)")
        return check_finite_data(ds["q"].isel(time=-1).values, path, "q (last snapshot)")


def load_dataset(data_dir: str | Path, operator: str = "op1") -> tuple[xr.Dataset, TwoLayerQG]:
    """Open ``DIR/<operator>.nc`` (checked for the required variables) and rebuild the low-resolution model.

    Returns ``(ds, lo)``. Every data variable (``q``, ``q_subgrid_forcing``, ``q_forcing_total``) and the time
    coordinate are loaded and checked finite here; the dataset needs at least one snapshot and a finite ``dt > 0``.
    """
    if operator not in OPERATORS:
        raise ConfigError(f"unknown coarse-graining operator {operator!r}; choose one of {list(OPERATORS)}")
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"data directory '{d}' does not exist or is not a directory (written by `nemic qg generate`)")
    path = d / f"{operator}.nc"
    if path.exists() and not path.is_file():
        raise DataError(f"dataset '{path}' is not a file")
    ds = load_forcing_dataset(path)
    try:
        ds = ds.load()
    except Exception as e:  # noqa: BLE001  (a truncated file fails only when its data are read)
        raise DataError(f"cannot read dataset '{path}': {' '.join(str(e).split())[:200] or type(e).__name__}") from None
    if ds.sizes.get("time", 0) == 0:
        raise DataError(f"dataset '{path}' holds no snapshot")
    for v in (*ds.data_vars, "time"):
        check_finite_data(ds[v].values, path, v)
    try:
        dt = float(ds.attrs["dt"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"dataset '{path}' lacks a numeric attribute 'dt' (the timestep of the run that wrote it)") \
            from None
    if not np.isfinite(dt) or dt <= 0:
        raise DataError(f"dataset '{path}' has attribute dt = {dt!r}; expected a finite timestep > 0 s")
    return ds, model_from_attrs(ds.attrs, "lo", path)


def load_hires(data_dir: str | Path, t_start: float = 0.0) -> tuple[np.ndarray, TwoLayerQG]:
    """High-resolution PV snapshots at times >= ``t_start`` (s) from ``DIR/hires.nc`` and the model that made them.

    Returns ``(q (n, 2, ny, nx), hi)``.
    """
    path = Path(data_dir) / "hires.nc"
    if not path.exists():
        raise DataError(f"'{path}' does not exist (written by `nemic qg generate` unless write_hires=False); "
                        "use target='coarse' to score against the coarse-grained data only")
    with _open(path, "dataset") as ds:
        if "q" not in ds or ds["q"].ndim != 4:
            raise DataError(f"'{path}' has no variable q (time, lev, y, x)")
        hi = model_from_attrs(ds.attrs, "hi", path)
        keep = check_finite_data(np.asarray(ds["time"].values, dtype=float), path, "time") >= t_start - 1e-6
        try:
            q = np.asarray(ds["q"].values[keep])
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot read variable 'q' of '{path}': {type(e).__name__}") from None
        check_finite_data(q, path, "q")
    if q.shape[0] == 0:
        raise DataError(f"'{path}' has no snapshot at or after t = {t_start:g} s")
    return q, hi


def load_generated(data_dir: str | Path) -> dict[str, Any]:
    """Read a ``nemic qg generate`` directory: the restart PV, the models and the coarse-grained climate.

    Returns ``{"q_restart": (2, nx_hi, nx_hi), "t_restart": s, "hi": TwoLayerQG, "lo": TwoLayerQG,
    "climate": (n, 2, nx_lo, nx_lo) op1 PV, "config": name}``.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"'{d}' is not a directory written by `nemic qg generate`")
    for f in ("hires.nc", "op1.nc"):
        if not (d / f).exists():
            raise DataError(f"'{d}' lacks {f}; run `nemic qg generate` with the high-resolution output and op1")
    with _open(d / "hires.nc", "dataset") as ds:
        if "q" not in ds or ds["q"].ndim != 4 or ds["q"].shape[0] == 0:
            raise DataError(f"'{d / 'hires.nc'}' has no variable q (time, lev, y, x)")
        q_restart = check_finite_data(ds["q"].isel(time=-1).values, d / "hires.nc", "q (last snapshot)")
        t_restart = float(ds["time"].values[-1])
        config = str(ds.attrs.get("config", "eddy"))
    ds_lo, lo = load_dataset(d, "op1")
    if config != str(ds_lo.attrs.get("config", config)):
        raise DataError(f"hires.nc ({config}) and op1.nc ({ds_lo.attrs.get('config')}) hold different configurations")
    hi = get_config(config, int(q_restart.shape[-1]))
    if q_restart.shape != (2, hi.ny, hi.nx) or hi.nx % lo.nx or hi.nx <= lo.nx:
        raise DataError(f"restart PV has shape {q_restart.shape}; it must be (2, n, n) with n a larger multiple of "
                        f"the op1 resolution {lo.nx}")
    if not np.all(np.isfinite(q_restart)):
        raise DataError(f"the last state of '{d / 'hires.nc'}' is not finite")
    return {"q_restart": q_restart, "t_restart": t_restart, "hi": hi, "lo": lo,
            "climate": np.asarray(ds_lo["q"].values), "config": config}


__all__ = ["check_finite_data", "last_snapshot", "load_dataset", "load_generated", "load_hires", "model_from_attrs"]

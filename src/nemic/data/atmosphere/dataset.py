"""CF-annotated datasets of the atmosphere truth, and their checked reading.

A truth store holds, on ``(time, level, lat, lon)`` (sigma levels top to bottom, Gaussian latitudes ascending):
T, u, v, q and their physics-only tendencies, and on ``(time, lat, lon)``: surface pressure, precipitation,
evaporation and top-of-atmosphere insolation; sea-surface temperature on ``(lat, lon)``. Every variable carries
``units``, ``long_name`` and (where the CF standard-name table has one) ``standard_name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from nemic.core.errors import DataError

__all__ = ["CF", "days_since_2000", "PROFILE_VARS", "SURFACE_VARS", "TENDENCY_VARS", "truth_dataset", "open_truth", "check_truth"]

#: name -> (units, long_name, standard_name or None)
CF: dict[str, tuple[str, str, str | None]] = {
    "T": ("K", "air temperature", "air_temperature"),
    "u": ("m s-1", "eastward wind", "eastward_wind"),
    "v": ("m s-1", "northward wind", "northward_wind"),
    "q": ("kg kg-1", "specific humidity", "specific_humidity"),
    "ps": ("Pa", "surface pressure", "surface_air_pressure"),
    "precipitation": ("kg m-2 s-1", "precipitation rate (convective + large-scale)", "precipitation_flux"),
    "evaporation": ("kg m-2 s-1", "surface evaporation", "water_evapotranspiration_flux"),
    "insolation": ("W m-2", "incoming short-wave radiation at the top of the atmosphere (daily mean)",
                   "toa_incoming_shortwave_flux"),
    "dTdt_phys": ("K s-1", "temperature tendency of the SPEEDY physics",
                  "tendency_of_air_temperature_due_to_model_physics"),
    "dqdt_phys": ("s-1", "specific humidity tendency of the SPEEDY physics",
                  "tendency_of_specific_humidity_due_to_model_physics"),
    "dudt_phys": ("m s-2", "eastward wind tendency of the SPEEDY physics", None),
    "dvdt_phys": ("m s-2", "northward wind tendency of the SPEEDY physics", None),
    "sst": ("K", "prescribed sea surface temperature", "sea_surface_temperature"),
}
#: variables of perturbed-state stores only (``nemic atmos perturb``)
PERTURBED_CF: dict[str, tuple[str, str, str | None]] = {
    "amplitude": ("1", "amplitude fraction s of the column's perturbation", None),
}
PROFILE_VARS = ("T", "q", "u", "v")
TENDENCY_VARS = ("dTdt_phys", "dqdt_phys", "dudt_phys", "dvdt_phys")
SURFACE_VARS = ("ps", "precipitation", "evaporation", "insolation")


def days_since_2000(time: Any) -> np.ndarray:
    """Times of a truth store or run as days since 2000-01-01 (the truth's calendar): decoded datetimes or plain
    numbers in days."""
    t = np.asarray(time)
    if np.issubdtype(t.dtype, np.datetime64):
        return (t - np.datetime64("2000-01-01T00:00:00")) / np.timedelta64(1, "D")
    return t.astype(float)


def _var(name: str, dims: tuple[str, ...], data: Any) -> xr.Variable:
    units, long_name, std = CF[name] if name in CF else PERTURBED_CF[name]
    attrs = {"units": units, "long_name": long_name}
    if std:
        attrs["standard_name"] = std
    return xr.Variable(dims, np.asarray(data, dtype=np.float32), attrs)


def truth_dataset(time_days: np.ndarray, fields: Mapping[str, np.ndarray], *, lat: np.ndarray, lon: np.ndarray,
                  sigma: np.ndarray, sigma_boundaries: np.ndarray, sst: np.ndarray | None = None,
                  attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """A CF Dataset from arrays in nemic's layout (time, level, lat, lon) / (time, lat, lon)."""
    data = {}
    for k, v in fields.items():
        dims = ("time", "level", "lat", "lon") if np.ndim(v) == 4 else ("time", "lat", "lon")
        data[k] = _var(k, dims, v)
    if sst is not None:
        data["sst"] = _var("sst", ("lat", "lon"), sst)
    coords = {
        "time": ("time", np.asarray(time_days, dtype=float),
                 {"units": "days since 2000-01-01 00:00:00", "calendar": "proleptic_gregorian",
                  "standard_name": "time", "axis": "T"}),
        "level": ("level", np.asarray(sigma, dtype=float),
                  {"standard_name": "atmosphere_sigma_coordinate", "long_name": "sigma at level centres",
                   "units": "1", "positive": "down", "axis": "Z", "formula_terms": "sigma: level ps: ps",
                   "bounds": "level_bounds"}),
        "level_bounds": (("level", "nv"), np.stack([sigma_boundaries[:-1], sigma_boundaries[1:]], axis=-1),
                         {"units": "1"}),
        "lat": ("lat", np.asarray(lat, dtype=float),
                {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", np.asarray(lon, dtype=float),
                {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
    }
    ds = xr.Dataset(data, coords=coords, attrs=dict(attrs or {}))
    ds.attrs.setdefault("Conventions", "CF-1.8")
    return ds


def check_truth(ds: xr.Dataset, *, where: str = "truth", truncation: int | None = None,
                sigma: np.ndarray | None = None, variables: tuple[str, ...] = ()) -> xr.Dataset:
    """Check a truth dataset; one-line :class:`DataError` on a problem.

    * ``truncation``: the Gaussian grid of T<truncation> is required (a file of another resolution is refused);
    * ``sigma``: the level centres must match (a network trained on other levels is refused);
    * ``variables``: these must be present and finite everywhere (NaN/inf refused, naming variable and time).
    """
    missing = [v for v in variables if v not in ds]
    if missing:
        raise DataError(f"{where} lacks the variable(s) {missing}; a truth store from 'nemic atmos generate' has "
                        f"{sorted(CF)}")
    if truncation is not None:
        from nemic.data.atmosphere.spectral import lat_lon

        lat, lon = lat_lon(truncation)
        if ds.sizes.get("lat") != lat.size or ds.sizes.get("lon") != lon.size or not np.allclose(
                ds["lat"].values, lat, atol=1e-6):
            raise DataError(f"{where} is on a {ds.sizes.get('lat')} x {ds.sizes.get('lon')} grid, not the T{truncation} "
                            f"Gaussian grid ({lat.size} x {lon.size}); coarse-grain it or generate it at T{truncation}")
    if sigma is not None:
        have = np.asarray(ds["level"].values, dtype=float)
        if have.shape != np.shape(sigma) or not np.allclose(have, sigma, atol=1e-6):
            raise DataError(f"{where} has sigma levels {np.round(have, 3).tolist()} but the network was trained on "
                            f"{np.round(np.asarray(sigma), 3).tolist()}")
    for v in variables:
        arr = ds[v].values
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            at = ""
            if ds[v].dims[0] == "time":
                t = np.asarray(ds["time"].values[idx[0]])
                if np.issubdtype(t.dtype, np.datetime64):
                    at = f" at {np.datetime_as_string(t, unit='h')}"
                else:
                    at = f" at time {float(t):g} days"
            raise DataError(f"{where}: variable {v!r} has {int(bad.sum())} non-finite value(s){at}")
    return ds


def open_truth(path: str | Path, **check: Any) -> xr.Dataset:
    """Open a truth store (zarr directory or netCDF file) and :func:`check_truth` it; one-line errors for a
    missing or unreadable store."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"truth store '{p}' does not exist (create it with 'nemic atmos generate')")
    try:
        ds = xr.open_zarr(p, consolidated=False) if p.is_dir() else xr.open_dataset(p)
    except Exception as e:  # noqa: BLE001  (zarr/netCDF raise many kinds)
        raise DataError(f"truth store '{p}' cannot be read: {' '.join(str(e).split())[:200]}") from None
    return check_truth(ds.load(), where=f"truth store '{p}'", **check)

"""EUMETNET OPERA radar rain rate: ODIM-HDF5 and netCDF readers, patch extraction, thresholds, time-block splits.

OPERA (the EUMETNET Operational Program for the Exchange of Weather Radar Information) publishes pan-European
radar composites in ODIM-HDF5 (Michelson et al., "EUMETNET OPERA weather radar information model for
implementation with the HDF5 file format", version 2.3, 2019). nemic reads them, and the packed netCDF layout of
the day used in its tests, into :class:`xarray.Dataset` objects holding ``rain_rate`` (time, y, x) in mm h-1 with
NaN where no radar covers the point (ODIM ``nodata``) and 0 where the radars detected no rain (ODIM
``undetect``).

Pre-processing follows the use of OPERA data for the Minkowski image loss (Quarenghi, Cotsakis & Beucler 2026,
arXiv:2604.11422): NaN-free square patches (e.g. 128 x 128 = 256 km) with a minimum wet fraction, rain rates
below 0.1 mm/h treated as dry and above 150 mm/h as clutter, thresholds at quantiles of the wet-pixel rain rates.

Data licence: EUMETNET OPERA open radar data, CC BY 4.0; a cropped sample ships with nemic
(:func:`load_sample`, see ``nemic/resources/opera/README.md``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError

__all__ = [
    "SAMPLE_FILE",
    "check_rain_frame",
    "extract_patches",
    "load_sample",
    "open_netcdf",
    "open_opera",
    "read_odim",
    "time_block_split",
    "wet_quantile_thresholds",
]

SAMPLE_FILE = "opera_sample_2023-08-01.nc"
_RATE_ATTRS = {"units": "mm h-1", "long_name": "surface rain rate (instantaneous)", "standard_name": "rainfall_rate"}


class _Unreadable(DataError):
    """The file could not be opened as netCDF at all."""


def _attr_str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("ascii", "replace").rstrip("\x00")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.size == 1:
        return _attr_str(v.item())
    return str(v)


def _is_odim(h5: Any) -> bool:
    conv = _attr_str(h5.attrs.get("Conventions", ""))
    if conv.upper().startswith("ODIM_H5"):
        return True
    return "what" in h5 and "where" in h5 and any(k.startswith("dataset") for k in h5.keys())


def open_opera(path: str | os.PathLike) -> xr.Dataset:
    """Open an OPERA rain-rate file, ODIM-HDF5 or netCDF, as a Dataset with ``rain_rate`` (time, y, x) in mm/h.

    The format is recognised from the content (ODIM's ``Conventions = "ODIM_H5/..."`` root attribute or its
    ``what``/``where``/``datasetN`` groups); anything else is tried as netCDF. Raises :class:`DataError` for a
    missing file, a file that is neither, or a file without rain rate.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"OPERA file '{p}' is a directory, expected an ODIM-HDF5 or netCDF file")
    if not p.is_file():
        raise DataError(f"OPERA file '{p}' does not exist")
    if not os.access(p, os.R_OK):
        raise DataError(f"OPERA file '{p}' cannot be read (permission denied)")
    try:
        with h5py.File(p, "r") as h5:
            odim = _is_odim(h5)
    except OSError:
        odim = False
        hdf5 = False
    else:
        hdf5 = True
    if odim:
        return read_odim(p)
    try:
        return open_netcdf(p)
    except _Unreadable:
        kind = "an HDF5 file without the ODIM_H5 layout" if hdf5 else "neither ODIM-HDF5 nor netCDF"
        raise DataError(f"'{p}' is {kind}; expected an OPERA ODIM_H5 composite or a netCDF file") from None
    except DataError as e:
        why = str(e).replace(repr(str(p)) + " ", "", 1)
        raise DataError(f"'{p}' is not an ODIM_H5 composite, and as netCDF it {why}") from None


def open_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Open (lazily) a netCDF file holding ``rain_rate`` (time, y, x) in mm/h, as written for the shared OPERA day.

    Packed values (uint16, ``scale_factor`` 0.01, ``_FillValue`` 65535) are decoded to float with NaN where no
    radar covers the point. A variable with ``standard_name = rainfall_rate`` is accepted under another name.
    Select frames and windows before loading: one full frame is 1900 x 2200 points.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"netCDF file '{p}' does not exist")
    try:
        ds = xr.open_dataset(p)
    except Exception as e:  # noqa: BLE001
        raise _Unreadable(f"'{p}' cannot be read as netCDF ({type(e).__name__})") from None
    name = "rain_rate" if "rain_rate" in ds else None
    if name is None:
        for k, v in ds.data_vars.items():
            if v.attrs.get("standard_name") == "rainfall_rate":
                name = k
                break
    if name is None:
        ds.close()
        raise DataError(f"'{p}' has no rain rate: expected a variable 'rain_rate' or standard_name 'rainfall_rate'")
    if name != "rain_rate":
        ds = ds.rename({name: "rain_rate"})
    units = ds.rain_rate.attrs.get("units", "mm h-1").replace(" ", "").replace("/", "")
    if units not in ("mmh-1", "mmh", "mmhr-1", "mmhr"):
        ds.close()
        raise DataError(f"'{p}': rain_rate has units {ds.rain_rate.attrs.get('units')!r}, expected mm h-1")
    dims = tuple(ds.rain_rate.dims)
    if not (len(dims) == 2 or (len(dims) == 3 and dims[0] == "time")):
        ds.close()
        raise DataError(f"'{p}': rain_rate must have dims (time, y, x) or (y, x), got {dims}")
    if ds.rain_rate.ndim == 2:
        ds = ds.expand_dims("time")
    if tuple(ds.rain_rate.dims)[-2:] != ("y", "x"):
        ds = ds.rename(dict(zip(ds.rain_rate.dims[-2:], ("y", "x"))))
    return ds


def _what(h5: Any, *groups: str) -> dict[str, Any]:
    """Merge ``what`` attributes from the root down to the innermost of ``groups`` (inner ones win)."""
    out: dict[str, Any] = {}
    path = ""
    for g in ("",) + groups:
        path = f"{path}/{g}" if g else path
        w = f"{path}/what" if path else "what"
        if w in h5:
            out.update({k: v for k, v in h5[w].attrs.items()})
    return out


def _odim_time(what: dict[str, Any]) -> np.datetime64:
    for dk, tk in (("enddate", "endtime"), ("startdate", "starttime"), ("date", "time")):
        if dk in what and tk in what:
            d, t = _attr_str(what[dk]), _attr_str(what[tk])
            try:
                return np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:8]}T{t[:2]}:{t[2:4]}:{t[4:6]}", "ns")
            except ValueError:
                raise DataError(f"ODIM date/time attributes {d!r} {t!r} are not YYYYMMDD / HHMMSS") from None
    return np.datetime64("NaT", "ns")


def _numbered(group: Any, prefix: str) -> list[str]:
    """Names ``<prefix>N`` (N = 1, 2, ...) among the members of an HDF5 group, in numeric order; other names (as
    ``quality1`` beside ``data1``) are ignored."""
    found = [(int(k[len(prefix):]), k) for k in group.keys() if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return [k for _, k in sorted(found)]


def read_odim(path: str | os.PathLike) -> xr.Dataset:
    """Read the rain-rate fields (ODIM quantity ``RATE``, mm/h) of an ODIM-HDF5 composite into a Dataset.

    Layout (ODIM_H5 v2.x, Michelson et al. 2019): root attribute ``Conventions = "ODIM_H5/V2_x"``; groups
    ``/what`` (``object``, ``date``, ``time``, ``source``), ``/where`` (``xsize``, ``ysize``, ``xscale``,
    ``yscale`` in metres, ``projdef``, corner longitudes/latitudes) and ``/datasetN/dataM/data`` with the
    packed array and ``what`` attributes ``quantity``, ``gain``, ``offset``, ``nodata``, ``undetect`` (at the
    ``dataM``, ``datasetN`` or root level). Physical value = ``offset + gain * raw``; ``nodata`` (no coverage)
    becomes NaN and ``undetect`` (no rain detected) becomes 0.

    Every ``RATE`` field becomes one time step (times from ``enddate``/``endtime``, else ``startdate``/
    ``starttime``, else the root ``date``/``time``). Rows run from north to south as stored. ``x`` and ``y``
    are pixel-centre coordinates in metres relative to the upper-left corner (``y`` negative southwards); the
    projection definition and corner coordinates are kept as attributes.

    Raises :class:`DataError` if the file is not ODIM_H5 or holds no ``RATE`` quantity.
    """
    p = Path(path)
    try:
        h5 = h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"'{p}' is not an HDF5 file, so not ODIM_H5 ({e})") from None
    with h5:
        if not _is_odim(h5):
            raise DataError(f"'{p}' is HDF5 but not ODIM_H5 (no Conventions='ODIM_H5/...' and no what/where groups)")
        fields, times, found = [], [], []
        ds_names = _numbered(h5, "dataset")
        if not ds_names:
            raise DataError(f"'{p}' is ODIM_H5 but has no groups named dataset1, dataset2, ...; groups found: "
                            f"{sorted(h5.keys())}")
        for ds_name in ds_names:
            for d_name in _numbered(h5[ds_name], "data"):
                what = _what(h5, ds_name, d_name)
                q = _attr_str(what.get("quantity", "?"))
                found.append(q)
                if q != "RATE":
                    continue
                if "data" not in h5[ds_name][d_name]:
                    raise DataError(f"'{p}': /{ds_name}/{d_name} has no 'data' array")
                raw = np.asarray(h5[ds_name][d_name]["data"][...])
                try:
                    gain = float(what.get("gain", 1.0))
                    offset = float(what.get("offset", 0.0))
                except (TypeError, ValueError):
                    raise DataError(f"'{p}': /{ds_name}/{d_name} has a gain or offset that is not a number") from None
                if not (np.isfinite(gain) and np.isfinite(offset)):
                    raise DataError(f"'{p}': /{ds_name}/{d_name} has a non-finite gain ({gain}) or offset ({offset})")
                if raw.ndim != 2:
                    raise DataError(f"'{p}': /{ds_name}/{d_name}/data must be a 2-D image, got shape {raw.shape}")
                val = offset + gain * raw.astype(np.float64)
                if "nodata" in what:
                    val[raw == what["nodata"]] = np.nan
                if "undetect" in what:
                    val[raw == what["undetect"]] = 0.0
                fields.append(val)
                times.append(_odim_time(what))
        if not fields:
            raise DataError(
                f"'{p}' holds no rain rate (ODIM quantity 'RATE'); quantities found: {sorted(set(found)) or 'none'}"
            )
        where = dict(h5["where"].attrs) if "where" in h5 else {}
        root_what = dict(h5["what"].attrs) if "what" in h5 else {}
    shapes = {f.shape for f in fields}
    if len(shapes) != 1:
        raise DataError(f"'{p}': RATE fields have different shapes {sorted(shapes)}")
    ny, nx = fields[0].shape
    xs = float(where.get("xscale", 1.0))
    ys = float(where.get("yscale", 1.0))
    x = (np.arange(nx) + 0.5) * xs
    y = -(np.arange(ny) + 0.5) * ys
    attrs = {
        "Conventions": "CF-1.8",
        "source": _attr_str(root_what.get("source", "")),
        "history": f"read from {p.name} (ODIM_H5)",
    }
    for k in ("projdef", "UL_lon", "UL_lat", "LL_lon", "LL_lat", "UR_lon", "UR_lat", "LR_lon", "LR_lat"):
        if k in where:
            v = where[k]
            attrs[f"odim_{k}"] = _attr_str(v) if k == "projdef" else float(v)
    da = xr.DataArray(np.stack(fields), dims=("time", "y", "x"), attrs=dict(_RATE_ATTRS))
    ds = xr.Dataset({"rain_rate": da}, attrs=attrs)
    ds = ds.assign_coords(time=("time", np.array(times, dtype="datetime64[ns]")), y=("y", y), x=("x", x))
    ds.x.attrs.update(units="m", long_name="x from the upper-left corner of the composite", axis="X")
    ds.y.attrs.update(units="m", long_name="y from the upper-left corner of the composite", axis="Y")
    return ds


def load_sample() -> xr.Dataset:
    """The cropped OPERA sample shipped with nemic: 6 frames of 256 x 256 points (2 km), 1 August 2023, in mm/h.

    Contains EUMETNET OPERA radar data (CC BY 4.0); see ``nemic/resources/opera/README.md`` for the attribution.
    """
    ref = resources.files("nemic").joinpath("resources", "opera", SAMPLE_FILE)
    with resources.as_file(ref) as f:
        return open_netcdf(f).load()


def check_rain_frame(frame: Any, where: str = "rain rate") -> None:
    """Raise :class:`DataError` if a rain-rate field holds +-inf or negative values (NaN, no coverage, is fine)."""
    a = np.asarray(frame)
    if a.dtype.kind not in "fiu":
        raise DataError(f"{where}: rain rate must be numeric, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        n_inf = int(np.count_nonzero(np.isinf(a)))
        if n_inf:
            raise DataError(f"{where}: rain rate holds {n_inf} infinite value(s); expected mm/h, NaN where no radar "
                            "covers the point")
    with np.errstate(invalid="ignore"):
        n_neg = int(np.count_nonzero(a < 0))
    if n_neg:
        raise DataError(f"{where}: rain rate holds {n_neg} negative value(s); rain rates are >= 0 mm/h")


def _window_sums(a: np.ndarray, size: int) -> np.ndarray:
    """Sums of ``a`` (H, W) over all size x size windows, shape (H - size + 1, W - size + 1)."""
    c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    c[1:, 1:] = np.cumsum(np.cumsum(a, axis=0), axis=1)
    return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]


def extract_patches(
    rain: xr.DataArray,
    size: int = 128,
    stride: int | None = None,
    min_wet_fraction: float = 0.1,
    wet_threshold: float = 0.1,
    max_rate: float = 150.0,
    max_patches_per_frame: int | None = None,
) -> xr.DataArray:
    """Cut NaN-free square patches with at least ``min_wet_fraction`` wet pixels out of rain-rate frames.

    Args:
        rain: rain rate (time, y, x) or (y, x) in mm/h, NaN outside coverage (may be lazy; frames are loaded one
            at a time).
        size: patch side in pixels (128 = 256 km on the OPERA 2 km grid).
        stride: step between candidate windows (default ``size``: non-overlapping tiles).
        min_wet_fraction: minimum fraction of pixels with rain rate >= ``wet_threshold``.
        wet_threshold: rain rates below it are set to 0 (dry), mm/h.
        max_rate: windows containing a rate above it (clutter) are rejected, mm/h.
        max_patches_per_frame: keep at most this many (the wettest) per frame.

    Returns:
        DataArray ``rain_rate`` (patch, y, x) with coordinates ``time``, ``y0``, ``x0`` (index of the patch's
        first row/column in the frame) along ``patch``.
    """
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise ConfigError(f"patch size must be an integer >= 2, got {size!r}")
    stride = size if stride is None else stride
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ConfigError(f"stride must be an integer >= 1, got {stride!r}")
    if not 0 <= min_wet_fraction <= 1:
        raise ConfigError(f"min_wet_fraction must be in [0, 1], got {min_wet_fraction!r}")
    if not isinstance(rain, xr.DataArray):
        rain = xr.DataArray(np.asarray(rain), dims=("time", "y", "x")[-np.ndim(rain):])
    if rain.ndim == 2:
        rain = rain.expand_dims("time")
    if rain.ndim != 3:
        raise DataError(f"rain must be (time, y, x) or (y, x), got dims {rain.dims}")
    ny, nx = rain.shape[-2:]
    if ny < size or nx < size:
        raise DataError(f"frames of {ny} x {nx} are smaller than the patch size {size}")
    patches, times, y0s, x0s = [], [], [], []
    has_time = "time" in rain.coords
    for k in range(rain.shape[0]):
        frame = np.asarray(rain[k].values, dtype=np.float64)
        check_rain_frame(frame, f"frame {k}")
        bad = ~np.isfinite(frame) | (frame > max_rate)
        wet = np.where(bad, 0.0, frame >= wet_threshold)
        nbad = _window_sums(bad.astype(np.float64), size)[::stride, ::stride]
        nwet = _window_sums(wet, size)[::stride, ::stride]
        ok = (nbad < 0.5) & (nwet >= min_wet_fraction * size * size - 1e-9)
        ii, jj = np.nonzero(ok)
        order = np.argsort(-nwet[ii, jj], kind="stable")
        if max_patches_per_frame is not None:
            order = order[:max_patches_per_frame]
        for o in order:
            y0, x0 = int(ii[o] * stride), int(jj[o] * stride)
            p = frame[y0 : y0 + size, x0 : x0 + size].copy()
            p[p < wet_threshold] = 0.0
            patches.append(p)
            times.append(rain.time.values[k] if has_time else k)
            y0s.append(y0)
            x0s.append(x0)
    data = np.stack(patches) if patches else np.zeros((0, size, size))
    out = xr.DataArray(data, dims=("patch", "y", "x"), name="rain_rate", attrs=dict(_RATE_ATTRS))
    return out.assign_coords(
        time=("patch", np.asarray(times)), y0=("patch", np.asarray(y0s, int)), x0=("patch", np.asarray(x0s, int))
    )


def wet_quantile_thresholds(
    rain: Any, quantiles: Sequence[float] | int = 21, wet_threshold: float = 0.1
) -> np.ndarray:
    """Thresholds (mm/h) at quantiles of the wet-pixel rain rates (finite values >= ``wet_threshold``).

    Args:
        rain: rain-rate array or DataArray of any shape (NaN ignored).
        quantiles: probabilities in [0, 1), or a number ``n`` of evenly spaced ones ``linspace(0, 1, n + 1)[:-1]``
            (the lowest threshold is then the smallest wet rate).
        wet_threshold: rates below it are dry.

    Returns:
        strictly increasing array of shape (len(quantiles),). Raises :class:`ConfigError` when quantiles tie
        (too few distinct wet values for that many thresholds) and :class:`DataError` when nothing is wet.
    """
    if isinstance(quantiles, (int, np.integer)):
        if quantiles < 1:
            raise ConfigError(f"number of quantiles must be >= 1, got {quantiles}")
        q = np.linspace(0.0, 1.0, int(quantiles) + 1)[:-1]
    else:
        q = np.asarray(quantiles, dtype=float)
    if q.ndim != 1 or q.size == 0 or np.any((q < 0) | (q > 1)) or np.any(np.diff(q) <= 0):
        raise ConfigError(f"quantiles must be strictly increasing probabilities in [0, 1], got {q.tolist()}")
    v = np.asarray(rain, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v >= wet_threshold)]
    if v.size == 0:
        raise DataError(f"no wet pixels (rain rate >= {wet_threshold} mm/h) to take quantiles of")
    thr = np.quantile(v, q)
    if np.any(np.diff(thr) <= 0):
        raise ConfigError(
            f"wet-pixel quantiles tie ({np.round(thr, 4).tolist()}); use fewer thresholds or more data"
        )
    return thr


def time_block_split(
    times: Any, train_fraction: float = 0.75, gap: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Split time steps into an earlier training block and a later test block, with ``gap`` steps left out between.

    Blocking in time (instead of a random split) keeps strongly autocorrelated neighbouring frames out of
    opposite sides (Roberts et al. 2017, "Cross-validation strategies for data with temporal, spatial,
    hierarchical, or phylogenetic structure", Ecography 40, 913, doi:10.1111/ecog.02881).

    Args:
        times: time values (any sortable 1-D array; duplicates allowed, e.g. one per patch).
        train_fraction: share of the distinct times in the training block, in (0, 1).
        gap: number of distinct times dropped between the blocks.

    Returns:
        ``(train_idx, test_idx)``: integer indices into ``times``; every training time precedes every test time.
    """
    if not 0 < train_fraction < 1:
        raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    if not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ConfigError(f"gap must be an integer >= 0, got {gap!r}")
    t = np.asarray(times)
    uniq = np.unique(t)
    n_train = int(np.floor(train_fraction * uniq.size))
    if n_train < 1 or n_train + gap >= uniq.size:
        raise DataError(
            f"{uniq.size} distinct times cannot be split with train_fraction={train_fraction} and gap={gap}"
        )
    last_train = uniq[n_train - 1]
    first_test = uniq[n_train + gap]
    return np.nonzero(t <= last_train)[0], np.nonzero(t >= first_test)[0]

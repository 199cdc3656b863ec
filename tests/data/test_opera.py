"""OPERA reader: synthetic ODIM-HDF5 files, the shipped netCDF sample, patches, thresholds and time splits."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.opera import (
    extract_patches,
    load_sample,
    open_netcdf,
    open_opera,
    read_odim,
    time_block_split,
    wet_quantile_thresholds,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opera" / "opera_rain_2023-08-01_0000-1600.nc"


def write_odim(path, raw_fields, quantities=("RATE",), gain=0.01, offset=0.0, nodata=65535, undetect=0):
    """A composite in the ODIM_H5 v2.3 layout (EUMETNET OPERA information model), written with h5py."""
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_3")
        what = f.create_group("what")
        what.attrs.update({"object": np.bytes_("COMP"), "version": np.bytes_("H5rad 2.3"),
                           "date": np.bytes_("20230801"), "time": np.bytes_("120000"),
                           "source": np.bytes_("ORG:247")})
        where = f.create_group("where")
        ny, nx = raw_fields[0].shape
        where.attrs.update({"projdef": np.bytes_("+proj=laea +lat_0=55 +lon_0=10 +ellps=WGS84"),
                            "xsize": nx, "ysize": ny, "xscale": 2000.0, "yscale": 2000.0,
                            "UL_lon": -10.4, "UL_lat": 66.4})
        for i, raw in enumerate(raw_fields, start=1):
            ds = f.create_group(f"dataset{i}")
            dw = ds.create_group("what")
            dw.attrs.update({"product": np.bytes_("COMP"), "startdate": np.bytes_("20230801"),
                             "starttime": np.bytes_(f"12{15 * (i - 1):02d}00"), "enddate": np.bytes_("20230801"),
                             "endtime": np.bytes_(f"12{15 * (i - 1):02d}00")})
            for j, q in enumerate(quantities, start=1):
                d = ds.create_group(f"data{j}")
                d.create_dataset("data", data=raw, compression="gzip")
                d.create_group("what").attrs.update({"quantity": np.bytes_(q), "gain": gain, "offset": offset,
                                                     "nodata": float(nodata), "undetect": float(undetect)})
    return path


def synthetic_raw(seed=0, shape=(20, 30)):
    rng = np.random.default_rng(seed)
    raw = rng.integers(1, 3000, size=shape).astype(np.uint16)
    raw[:, :5] = 65535  # outside radar coverage
    raw[10:, 10:15] = 0  # no rain detected
    return raw


def test_read_odim_rate(tmp_path):
    raws = [synthetic_raw(0), synthetic_raw(1)]
    p = write_odim(tmp_path / "comp.h5", raws, quantities=("DBZH", "RATE"))
    ds = open_opera(p)
    assert ds.rain_rate.dims == ("time", "y", "x") and ds.rain_rate.shape == (2, 20, 30)
    assert ds.rain_rate.attrs["units"] == "mm h-1"
    expected = raws[1] * 0.01
    got = ds.rain_rate.values[1]
    assert np.isnan(got[:, :5]).all()
    np.testing.assert_array_equal(got[10:, 10:15], 0.0)
    np.testing.assert_allclose(got[:, 5:], expected[:, 5:])
    assert str(ds.time.values[1])[:19] == "2023-08-01T12:15:00"
    np.testing.assert_allclose(np.diff(ds.x.values), 2000.0)
    assert ds.attrs["odim_projdef"].startswith("+proj=laea")
    # read_odim directly gives the same
    xr.testing.assert_identical(ds, read_odim(p))


def test_odim_without_rate_and_non_odim_files(tmp_path):
    p = write_odim(tmp_path / "dbz.h5", [synthetic_raw()], quantities=("DBZH", "TH"))
    with pytest.raises(DataError, match=r"no rain rate .*DBZH"):
        open_opera(p)
    q = tmp_path / "other.h5"
    with h5py.File(q, "w") as f:
        f.create_dataset("values", data=np.zeros(3))
    with pytest.raises(DataError, match="not ODIM"):
        read_odim(q)
    with pytest.raises(DataError, match="ODIM"):
        open_opera(q)
    t = tmp_path / "notes.txt"
    t.write_text("not a radar file")
    with pytest.raises(DataError, match="neither ODIM-HDF5 nor netCDF"):
        open_opera(t)
    with pytest.raises(DataError, match="does not exist"):
        open_opera(tmp_path / "missing.h5")
    nc = tmp_path / "temp.nc"
    xr.Dataset({"tas": (("y", "x"), np.zeros((2, 2)))}).to_netcdf(nc)
    with pytest.raises(DataError, match="no rain rate"):
        open_opera(nc)


def test_sample_netcdf():
    ds = load_sample()
    r = ds.rain_rate
    assert r.dims == ("time", "y", "x") and r.shape == (6, 256, 256)
    assert r.attrs["units"] == "mm h-1" and np.isfinite(r.values).all()
    assert (r.values >= 0).all() and (r.values >= 1.0).mean() > 0.01
    # values are on the 0.01 mm/h grid of the packed source
    np.testing.assert_allclose(r.values * 100, np.round(r.values * 100), atol=1e-6)


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared OPERA day not available at {SHARED} (development data)")
def test_shared_netcdf_and_sample_agree():
    ds = open_opera(SHARED)  # lazy
    assert ds.rain_rate.shape == (64, 2200, 1900)
    sample = load_sample()
    full = ds.rain_rate.sel(time=sample.time).isel(y=slice(704, 960), x=slice(960, 1216)).values
    np.testing.assert_array_equal(full, sample.rain_rate.values)
    # about half the composite grid has no radar coverage: NaN
    frac = float(np.isnan(ds.rain_rate.isel(time=0).values).mean())
    assert 0.3 < frac < 0.7
    ds.close()


def test_extract_patches_brute_force():
    r = load_sample().rain_rate.copy()
    r[0, 50, 60] = np.nan  # a coverage gap in the first frame
    r[1, 200, 10] = 200.0  # clutter in the second frame
    size, stride, mwf = 64, 32, 0.2
    patches = extract_patches(r, size=size, stride=stride, min_wet_fraction=mwf)
    assert patches.dims == ("patch", "y", "x") and patches.shape[1:] == (size, size)
    assert np.isfinite(patches.values).all()
    # brute force over the same candidate windows
    expected = set()
    for k in range(r.shape[0]):
        fr = r.values[k]
        for y0 in range(0, 256 - size + 1, stride):
            for x0 in range(0, 256 - size + 1, stride):
                w = fr[y0 : y0 + size, x0 : x0 + size]
                if np.isfinite(w).all() and (w <= 150).all() and (w >= 0.1).mean() >= mwf:
                    expected.add((k, y0, x0))
    got = {(int(np.nonzero(r.time.values == t)[0][0]), int(y), int(x))
           for t, y, x in zip(patches.time.values, patches.y0.values, patches.x0.values)}
    assert got == expected and len(got) > 10
    assert not any(k == 0 and y <= 50 < y + size and x <= 60 < x + size for k, y, x in got)
    for p, t, y0, x0 in zip(patches.values, patches.time.values, patches.y0.values, patches.x0.values):
        src = r.sel(time=t).values[y0 : y0 + size, x0 : x0 + size]
        np.testing.assert_array_equal(p, np.where(src < 0.1, 0.0, src))
    with pytest.raises(ConfigError):
        extract_patches(r, size=1)
    with pytest.raises(DataError, match="smaller"):
        extract_patches(r, size=512)


def test_wet_quantile_thresholds():
    r = load_sample().rain_rate.values
    thr = wet_quantile_thresholds(r, 10)
    assert thr.shape == (10,) and np.all(np.diff(thr) > 0)
    wet = r[r >= 0.1]
    assert thr[0] == wet.min()
    # the share of wet pixels at or above the k-th threshold is about 1 - k / 10
    share = np.array([(wet >= u).mean() for u in thr])
    np.testing.assert_allclose(share, 1 - np.arange(10) / 10, atol=0.03)
    with pytest.raises(DataError, match="no wet"):
        wet_quantile_thresholds(np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="tie"):
        wet_quantile_thresholds(np.full((4, 4), 2.0), [0.1, 0.5])
    with pytest.raises(ConfigError, match="quantiles"):
        wet_quantile_thresholds(r, [0.5, 0.2])


def test_time_block_split():
    times = np.repeat(np.arange(10), 3)  # 3 patches per frame
    tr, te = time_block_split(times, train_fraction=0.6, gap=1)
    assert times[tr].max() < times[te].min()
    assert set(times[tr]) == set(range(6)) and set(times[te]) == set(range(7, 10))
    with pytest.raises(ConfigError):
        time_block_split(times, train_fraction=1.5)
    with pytest.raises(DataError):
        time_block_split(np.arange(2), train_fraction=0.5, gap=1)


def test_open_netcdf_renamed_variable(tmp_path):
    p = tmp_path / "rr.nc"
    xr.Dataset({"precip": (("lat", "lon"), np.ones((3, 4)), {"standard_name": "rainfall_rate",
                                                           "units": "mm h-1"})}).to_netcdf(p)
    ds = open_netcdf(p)
    assert ds.rain_rate.dims == ("time", "y", "x")
    bad = tmp_path / "bad_units.nc"
    xr.Dataset({"rain_rate": (("y", "x"), np.ones((3, 4)), {"units": "kg m-2 s-1"})}).to_netcdf(bad)
    with pytest.raises(DataError, match="units"):
        open_netcdf(bad)

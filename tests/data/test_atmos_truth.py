"""Atmosphere truth: spectral coarse-graining against analytic spherical harmonics (scipy) and dinosaur's own
truncation; the CF truth store (attributes, dims, zarr round trip); column packing; one-line errors for a truth of
another resolution, NaN in the truth and levels that differ from the network's; and (slow) the jcm generation
itself with the network blocked, its water budget closed by jcm's own diagnostics."""

import socket

import jax
import numpy as np
import pytest
import scipy.special as sp
from dinosaur import coordinate_systems, sigma_coordinates

from nemic.core.errors import DataError
from nemic.data.atmosphere.columns import column_arrays
from nemic.data.atmosphere.dataset import CF, check_truth, open_truth, truth_dataset
from nemic.data.atmosphere.spectral import gaussian_grid, lat_lon, spectral_coarsen
from nemic.nn.column import ColumnNet

SB = np.array([0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0])
SIG = 0.5 * (SB[1:] + SB[:-1])


def _harmonics(truncation, terms):
    """Sum of real parts of Y_l^m (scipy) on the T<truncation> Gaussian grid, (lat, lon)."""
    lat, lon = lat_lon(truncation)
    colat = np.deg2rad(90.0 - lat)[:, None]
    lam = np.deg2rad(lon)[None, :]
    out = np.zeros((lat.size, lon.size))
    for (l, m, a) in terms:
        y = sp.sph_harm_y(l, m, colat, lam)
        out += a * (y.real if m >= 0 else y.imag)
    return out


LOW = [(0, 0, 2.0), (3, 2, 1.0), (10, -5, 0.7), (20, 0, 0.3), (21, 21, 0.5), (21, -13, 0.4)]
HIGH = [(25, 3, 1.0), (26, 24, 0.8), (31, 0, 0.5)]


def test_spectral_coarsening_keeps_low_harmonics_and_removes_high_ones():
    src = _harmonics(31, LOW + HIGH)
    out = np.asarray(spectral_coarsen(src, 31, 21))
    assert out.shape == (32, 64)
    np.testing.assert_allclose(out, _harmonics(21, LOW), atol=1e-10 * np.abs(src).max())
    only_high = np.asarray(spectral_coarsen(_harmonics(31, HIGH), 31, 21))
    assert np.abs(only_high).max() < 1e-10


def test_spectral_coarsening_agrees_with_dinosaur_downsampling():
    vert = sigma_coordinates.SigmaCoordinates(SB)
    c31 = coordinate_systems.CoordinateSystem(gaussian_grid(31), vert)
    c21 = coordinate_systems.CoordinateSystem(gaussian_grid(21), vert)
    down = coordinate_systems.get_spectral_downsample_fn(c31, c21)
    field = np.random.default_rng(0).normal(size=(3, 48, 96))      # any field, not band-limited
    ref = np.swapaxes(c21.horizontal.to_nodal(down(c31.horizontal.to_modal(np.swapaxes(field, -1, -2)))), -1, -2)
    # dinosaur keeps the l = T+1 row of its modal array; remove it in the reference the same way: it is the
    # projection on l = 22, which the T21 truncation removes
    ref_trunc = np.asarray(spectral_coarsen(np.asarray(ref), 21, 21))
    np.testing.assert_allclose(np.asarray(spectral_coarsen(field, 31, 21)), ref_trunc, atol=1e-10)


def _synthetic(nt=3, truncation=21, seed=0, levels=SIG, bounds=SB):
    lat, lon = lat_lon(truncation)
    r = np.random.default_rng(seed)
    L = len(levels)
    shape3, shape2 = (nt, L, lat.size, lon.size), (nt, lat.size, lon.size)
    f = {"T": 250 + 30 * r.random(shape3), "u": r.normal(0, 10, shape3), "v": r.normal(0, 5, shape3),
         "q": 1e-3 * r.random(shape3), "ps": 1e5 + 500 * r.random(shape2),
         "precipitation": 3e-5 * r.random(shape2), "evaporation": 3e-5 * r.random(shape2),
         "insolation": 400 * r.random(shape2)}
    for k in ("dTdt_phys", "dqdt_phys", "dudt_phys", "dvdt_phys"):
        f[k] = 1e-5 * r.normal(size=shape3)
    return truth_dataset(np.arange(nt) * 0.25 + 60.25, f, lat=lat, lon=lon, sigma=np.asarray(levels),
                         sigma_boundaries=np.asarray(bounds), sst=np.full((lat.size, lon.size), 290.0),
                         attrs={"truncation": truncation})


def test_truth_store_is_cf_annotated_and_round_trips_through_zarr(tmp_path):
    ds = _synthetic()
    ds.to_zarr(tmp_path / "t.zarr", mode="w", consolidated=False)
    back = open_truth(tmp_path / "t.zarr", truncation=21, variables=tuple(v for v in CF if v != "sst"))
    assert back["T"].dims == ("time", "level", "lat", "lon") and back["precipitation"].dims == ("time", "lat", "lon")
    assert back.sizes["lat"] == 32 and back.sizes["lon"] == 64 and back.sizes["level"] == 8
    assert back["T"].attrs["standard_name"] == "air_temperature" and back["T"].attrs["units"] == "K"
    assert back["precipitation"].attrs["standard_name"] == "precipitation_flux"
    assert back["ps"].attrs["standard_name"] == "surface_air_pressure"
    assert back["dTdt_phys"].attrs["units"] == "K s-1"
    assert back["level"].attrs["standard_name"] == "atmosphere_sigma_coordinate"
    assert back["lat"].attrs["units"] == "degrees_north" and back["time"].encoding["units"].startswith("days since")
    np.testing.assert_allclose(back["T"].values, ds["T"].values)


def test_column_arrays_pack_like_the_network():
    ds = _synthetic(nt=2)
    x, y = column_arrays(ds)
    assert x.shape == (2 * 32 * 64, 35) and y.shape == (2 * 32 * 64, 34)
    t, i, j = 1, 7, 40
    k = (t * 32 + i) * 64 + j
    c = ds.isel(time=t, lat=i, lon=j)
    ref = ColumnNet.pack(c["T"].values, c["q"].values, c["u"].values, c["v"].values, c["ps"].values,
                         c["insolation"].values, c["lat"].values)
    np.testing.assert_allclose(x[k], np.asarray(ref), rtol=1e-6)
    np.testing.assert_allclose(y[k, 8:16], c["dqdt_phys"].values, rtol=1e-6)
    np.testing.assert_allclose(y[k, 32], c["precipitation"].values, rtol=1e-6)


def test_bad_truth_is_a_one_line_error(tmp_path):
    coarse = _synthetic(truncation=31)
    with pytest.raises(DataError, match="not the T21 Gaussian grid") as e:
        check_truth(coarse, truncation=21)
    assert "\n" not in str(e.value)
    bad = _synthetic()
    bad["q"][1, 3, 4, 5] = np.nan
    with pytest.raises(DataError, match=r"'q' has 1 non-finite value\(s\) at time 60.5") as e:
        check_truth(bad, variables=("T", "q"))
    assert "\n" not in str(e.value)
    eq = np.linspace(0, 1, 9)
    other = _synthetic(levels=0.5 * (eq[1:] + eq[:-1]), bounds=eq)
    with pytest.raises(DataError, match="network was trained on") as e:
        check_truth(other, sigma=SIG)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        open_truth(tmp_path / "missing.zarr")


def test_quick_generation_offline_with_cf_output_and_closed_water_budget(tmp_path, monkeypatch):
    """The jcm aquaplanet runs with every network connection refused; its output has the expected dims and CF
    attributes, and jcm's physics closes the column water budget (sum dq/dt dp/g = E - P, jcm's own fields)."""
    from nemic.experiments.atmos_truth import GRAVITY, generate, quick_truth_config

    def refuse(*a, **k):
        raise OSError("network access refused in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    m = generate(quick_truth_config(), tmp_path / "truth", progress=False, log=lambda s: None)
    assert m["saves"] == {"train": 4, "test": 4}
    ds = open_truth(tmp_path / "truth" / "train.zarr", truncation=21, sigma=SIG,
                    variables=("T", "u", "v", "q", "ps", "precipitation", "dTdt_phys", "dqdt_phys"))
    assert ds["T"].dims == ("time", "level", "lat", "lon") and ds.sizes["time"] == 4
    assert ds["u"].attrs["standard_name"] == "eastward_wind"
    assert 150 < float(ds["T"].min()) and float(ds["T"].max()) < 330
    col = (ds["dqdt_phys"].values * np.diff(SB)[None, :, None, None]).sum(1) * ds["ps"].values / GRAVITY
    np.testing.assert_allclose(col, ds["evaporation"].values - ds["precipitation"].values,
                               atol=1e-6 * float(np.abs(ds["evaporation"]).max()))

"""``nemic atmos evaluate`` and ``nemic atmos run --years``: climate scores against independent references
(NumPy's Gauss-Legendre weights, scipy's spherical harmonics, scikit-image's Euler number), an end-to-end
evaluation of a synthetic run/truth pair whose scores are known by construction, the shipped hybrid, and one-line
errors (a truth of another resolution, NaN in the truth, bad options)."""

import json

import numpy as np
import pytest
import xarray as xr
from scipy import special
from skimage.measure import euler_number

from nemic.cli.testing import invoke, root_app
from nemic.core.errors import ConfigError, DataError
from nemic.data.atmosphere.dataset import truth_dataset
from nemic.data.atmosphere.spectral import lat_lon
from nemic.experiments.atmos_climate import (
    MINKOWSKI_THRESHOLDS_MM_DAY,
    days_of,
    evaluate,
    per_year_scores,
    power_spectrum,
    precip_summary,
    season_mask,
    zonal_scores,
)
from nemic.experiments.atmos_climate_run import (
    EPOCH,
    ClimateRunConfig,
    load_initial_fields,
    run_climate,
    shipped_dir,
)
from nemic.models.atmosphere import PrimitiveEquations

SB = np.array([0.0, 0.5, 1.0])


def _gauss_lat_weights(n):
    x, w = np.polynomial.legendre.leggauss(n)  # nodes in sin(lat), ascending
    return np.rad2deg(np.arcsin(x)), w / w.sum()


def test_season_mask_wraps_around_the_year():
    days = np.array([330.0, 360.0, 365.0, 366.0, 400.0, 421.0, 500.0, 695.3, 790.0])
    got = season_mask(days, 330.0, 90.0, year=365.2422)
    assert got.tolist() == [True, True, True, True, True, False, False, True, False]


def test_zonal_scores_against_hand_computed_values():
    lat, w = _gauss_lat_weights(32)
    wl = np.array([0.25, 0.75])
    truth = np.random.default_rng(0).normal(size=(2, 32))
    s = zonal_scores(truth + 1.5, truth, w, wl)
    assert s["bias"] == pytest.approx(1.5, abs=1e-12) and s["rmse"] == pytest.approx(1.5, abs=1e-12)
    d = np.zeros((2, 32))
    d[1, 5] = 2.0  # one level, one latitude
    s = zonal_scores(truth + d, truth, w, wl)
    assert s["rmse"] == pytest.approx(2.0 * np.sqrt(0.75 * w[5]), rel=1e-12)
    assert s["bias"] == pytest.approx(2.0 * 0.75 * w[5], rel=1e-12)


def test_per_year_scores_follow_a_drift_year_by_year():
    """A run whose window mean is the truth shifted by y K in year y (and precipitation by 0.5 y mm/day) scores
    RMSE y and 0.5 y, in year order."""
    lat, w = _gauss_lat_weights(32)
    wl = np.array([0.25, 0.75])
    r = np.random.default_rng(1)
    ref = {"T": r.normal(size=(2, 32)), "u": r.normal(size=(2, 32)), "q": r.normal(size=(2, 32)),
           "precip": {"zonal_mean": r.random(32)}, "w_lat": w, "w_lev": wl}
    by_year = {y: {"T": ref["T"] + y, "u": ref["u"], "q": ref["q"], "P": ref["precip"]["zonal_mean"] + 0.5 * y,
                   "n": 90} for y in (2, 0, 1)}
    s = per_year_scores(by_year, ref)
    assert s["year"] == [0, 1, 2] and s["n_samples"] == [90, 90, 90]
    np.testing.assert_allclose(s["T"], [0.0, 1.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(s["u"], [0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s["P"], [0.0, 0.5, 1.0], atol=1e-12)


def test_power_spectrum_of_a_spherical_harmonic_and_parseval():
    lat, w = _gauss_lat_weights(32)
    lat_d, lon = lat_lon(21)
    assert np.allclose(lat, lat_d, atol=1e-10)
    colat, az = np.meshgrid(np.deg2rad(90.0 - lat), np.deg2rad(lon), indexing="ij")
    y = np.real(special.sph_harm_y(5, 3, colat, az))  # scipy: (l, m, colatitude, azimuth), l = 5
    f = 2.0 * y + 0.5  # plus a constant (l = 0)
    spec = power_spectrum(f[None], 21)
    area_mean_f2 = np.sum(w[:, None] * f ** 2) / f.shape[1]
    assert spec.sum() == pytest.approx(4 * np.pi * area_mean_f2, rel=1e-6)
    assert spec[0] == pytest.approx(4 * np.pi * 0.25, rel=1e-6)
    assert spec[5] == pytest.approx(4 * np.pi * np.sum(w[:, None] * (2 * y) ** 2) / f.shape[1], rel=1e-6)
    others = np.delete(spec, [0, 5])
    assert np.all(others < 1e-10 * spec[5])


def test_precipitation_minkowski_measures_against_numpy_and_skimage():
    rng = np.random.default_rng(3)
    p = np.exp(rng.normal(0.0, 1.5, size=(3, 32, 64)))  # mm/day
    lat, w = _gauss_lat_weights(32)
    s = precip_summary(p, w, 21)
    for k, u in enumerate(MINKOWSKI_THRESHOLDS_MM_DAY):
        m = p >= u
        assert s["area"][k] == pytest.approx(m.sum(axis=(1, 2)).mean())
        assert s["euler"][k] == pytest.approx(np.mean([euler_number(x, connectivity=2) for x in m]))
        # perimeter: foreground/background edges, the outside of the grid counted as background
        pad = np.pad(m, ((0, 0), (1, 1), (1, 1)))
        edges = (np.sum(pad[:, 1:, :] != pad[:, :-1, :], axis=(1, 2))
                 + np.sum(pad[:, :, 1:] != pad[:, :, :-1], axis=(1, 2)))
        assert s["perimeter"][k] == pytest.approx(edges.mean())
    assert s["global_mean"] == pytest.approx(np.sum(w * p.mean(axis=(0, 2))), rel=1e-12)
    assert s["histogram"].sum() == pytest.approx(1.0)


def _truth(days, *, truncation=21, nan=False, seed=0):
    lat, lon = lat_lon(truncation)
    r = np.random.default_rng(seed)
    nt = days.size
    s3, s2 = (nt, 2, lat.size, lon.size), (nt, lat.size, lon.size)
    f = {"T": 250 + 10 * r.random(s3), "u": r.normal(0, 10, s3), "v": r.normal(0, 5, s3),
         "q": 1e-3 * r.random(s3), "ps": 1e5 + 0 * r.random(s2),
         "precipitation": np.exp(r.normal(0, 1.5, s2)) / 86400.0}
    if nan:
        f["T"][1, 0, 3, 4] = np.nan
    return truth_dataset(days, f, lat=lat, lon=lon, sigma=0.5 * (SB[1:] + SB[:-1]), sigma_boundaries=SB)


def _run_from(ds, dT=1.5, p_factor=2.0):
    """A run's daily.nc built from a truth dataset: T shifted by dT, precipitation scaled."""
    days = days_of(ds)
    zm = lambda v: ds[v].mean("lon").values  # noqa: E731
    d = xr.Dataset(coords={"time": ("time", days, {"units": EPOCH}), "level": ds["level"].values,
                           "lat": ds["lat"].values, "lon": ds["lon"].values})
    d["zonal_mean_air_temperature"] = (("time", "level", "lat"), zm("T") + dT)
    d["zonal_mean_eastward_wind"] = (("time", "level", "lat"), zm("u"))
    d["zonal_mean_specific_humidity"] = (("time", "level", "lat"), zm("q"))
    d["precipitation_flux"] = (("time", "lat", "lon"), ds["precipitation"].values * p_factor)
    d["global_mean_air_temperature"] = ("time", np.full(days.size, 250.0))
    return d


def test_evaluate_a_synthetic_run_against_its_truth(tmp_path):
    test_days = 330.0 + 0.25 * np.arange(6)
    truth = tmp_path / "truth"
    truth.mkdir()
    test = _truth(test_days)
    test.to_zarr(truth / "test.zarr", consolidated=False)
    # training period: the same fields half a year earlier, mirrored north-south -> a perfect noise floor
    mirrored = test.isel(lat=slice(None, None, -1)).assign_coords(lat=test["lat"].values)
    train = mirrored.assign_coords(time=test["time"].values - 365.2422 / 2)
    train.to_zarr(truth / "train.zarr", consolidated=False)
    run = tmp_path / "run"
    run.mkdir()
    _run_from(test).to_netcdf(run / "daily.nc")
    base = tmp_path / "base"
    base.mkdir()
    _run_from(test, dT=0.0, p_factor=0.0).to_netcdf(base / "daily.nc")
    m = evaluate(run, truth, tmp_path / "ev", baselines={"bare": str(base)})
    s = m["scores"]["run"]
    assert s["season_matched"] and s["n_samples"] == 6
    assert s["T"]["global_mean_bias"] == pytest.approx(1.5, abs=1e-4)
    assert s["T"]["zonal_mean_rmse"] == pytest.approx(1.5, abs=1e-4)
    assert s["u"]["zonal_mean_rmse"] < 1e-5 and s["q"]["zonal_mean_rmse"] < 1e-9
    lat, w = _gauss_lat_weights(32)
    p_mean = np.sum(w * (test["precipitation"].values * 86400).mean(axis=(0, 2)))
    assert s["precipitation"]["global_mean_bias"] == pytest.approx(p_mean, rel=1e-4)
    assert s["precipitation"]["log10_spectrum_rms"] == pytest.approx(2 * np.log10(2.0), rel=1e-4)
    b = m["scores"]["bare"]["precipitation"]
    assert b["global_mean"] == 0.0 and b["minkowski"]["area"] == [0.0] * len(MINKOWSKI_THRESHOLDS_MM_DAY)
    floor = m["scores"]["speedy_mirrored_half_year"]
    assert floor["T"]["zonal_mean_rmse"] < 1e-4 and floor["precipitation"]["hellinger_distance"] < 1e-6
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written["scores"]["run"]["T"]["zonal_mean_rmse"] == pytest.approx(1.5, abs=1e-4)
    for png in ("zonal_mean_cross_sections", "precipitation_zonal_mean", "precipitation_histogram",
                "precipitation_spectrum", "precipitation_minkowski", "global_mean_series"):
        assert (tmp_path / "ev" / f"{png}.png").exists()


def test_evaluate_refuses_another_resolution_and_nan(tmp_path):
    days = 330.0 + 0.25 * np.arange(3)
    run = tmp_path / "run"
    run.mkdir()
    _run_from(_truth(days)).to_netcdf(run / "daily.nc")
    t31 = tmp_path / "t31"
    t31.mkdir()
    _truth(days, truncation=31).to_zarr(t31 / "test.zarr", consolidated=False)
    with pytest.raises(DataError, match="T21 Gaussian grid|resolution") as e:
        evaluate(run, t31, tmp_path / "ev")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    _truth(days, nan=True).to_zarr(bad / "test.zarr", consolidated=False)
    with pytest.raises(DataError, match="'T' has 1 non-finite") as e:
        evaluate(run, bad, tmp_path / "ev")
    assert "\n" not in str(e.value)
    code, err = invoke(root_app(), ["atmos", "evaluate", "--run", str(run), "--truth", str(bad), "--out",
                                    str(tmp_path / "ev")])
    assert code == 2 and len(err) == 1 and "non-finite" in err[0]


def test_run_options_are_checked_in_one_line(tmp_path):
    code, err = invoke(root_app(), ["atmos", "run", "--years", "-1", "--out", str(tmp_path / "r")])
    assert code == 2 and len(err) == 1 and "--years" in err[0]
    code, err = invoke(root_app(), ["atmos", "run", "--physics", "slab", "--out", str(tmp_path / "r")])
    assert code == 2 and len(err) == 1 and "physics" in err[0]
    code, err = invoke(root_app(), ["atmos", "evaluate", "--run", "a", "--truth", "b", "--out", "c",
                                    "--baseline", "nobase"])
    assert code == 2 and len(err) == 1 and "NAME=RUN_DIR" in err[0]


def test_shipped_hybrid_loads_on_the_core_levels():
    from nemic.experiments.atmos_climate_run import ClimateRunConfig, build_physics, load_initial_fields
    from nemic.models.atmosphere import PrimitiveEquations

    model = PrimitiveEquations(21, 8, dt=1800.0)
    assert (shipped_dir() / "column_net.eqx").exists()
    fields, day = load_initial_fields(None, model)
    assert fields.air_temperature.shape == (8, 32, 64) and day == pytest.approx(240.25)
    process, observe = build_physics(ClimateRunConfig(), model)
    f = observe(model.from_fields(fields), day * 86400.0)
    p = np.asarray(f.precipitation_flux)
    assert p.shape == (32, 64) and np.all(p >= 0) and np.all(np.isfinite(p))


def test_run_years_quick_path_with_the_shipped_hybrid(tmp_path):
    out = tmp_path / "run"
    code, err = invoke(root_app(), ["atmos", "run", "--years", str(1 / 365), "--mean-days", "0.5",
                                    "--save-hours", "12", "--quiet", "--float64", "--out", str(out)])
    assert code == 0, err
    with xr.open_dataset(out / "atmosphere.nc") as ds:
        for name in ("air_temperature", "eastward_wind", "specific_humidity", "surface_air_pressure",
                     "precipitation_flux"):
            assert ds[name].attrs["standard_name"] == name
            assert np.all(np.isfinite(ds[name].values))
        assert ds["lat"].attrs["units"] == "degrees_north" and ds.sizes["time"] == 2
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 48 and m["blowup"] is None
    assert (out / "daily.nc").exists() and (out / "global_mean.png").exists()


def test_humidity_clipping_conserves_global_water_and_removes_negatives():
    from nemic.experiments.atmos_climate_fixers import NonNegativeHumidity
    from nemic.models.atmosphere import PrimitiveEquations

    model = PrimitiveEquations(21, 2)
    g = model.grid
    lat, w = _gauss_lat_weights(32)
    rng = np.random.default_rng(1)
    q_nodal = 2e-3 * np.cos(np.deg2rad(lat))[None, :, None] * np.ones((2, 1, 64)) + 1e-3 * rng.normal(size=(2, 32, 64))
    state = model.initial_state()
    state = type(state)(state.vorticity, state.divergence, state.temperature_variation, state.log_surface_pressure,
                        g.to_modal(q_nodal))
    q_before = np.asarray(g.to_nodal(state.specific_humidity))
    fixed = np.asarray(g.to_nodal(NonNegativeHumidity(g)(state, state).specific_humidity))
    water = lambda q: np.sum(w[None, :, None] * q.mean(-1, keepdims=True) * np.array([0.5, 0.5])[:, None, None])  # noqa: E731
    assert q_before.min() < -2e-4
    assert water(fixed) == pytest.approx(water(q_before), rel=1e-10)
    negative = lambda q: np.sum(w[None, :, None] * np.minimum(q, 0.0))  # noqa: E731
    # the truncation brings back smaller negatives (Gibbs); each step's clipping shrinks them
    assert negative(fixed) > 0.5 * negative(q_before) and fixed.min() > 0.6 * q_before.min()


def test_global_balance_removes_global_heating_and_moistening():
    import jax.numpy as jnp

    from nemic.experiments.atmos_climate_fixers import GlobalBalance
    from nemic.models.atmosphere import ColumnPhysics, ColumnTendencies, PrimitiveEquations

    model = PrimitiveEquations(21, 2)
    g = model.grid

    def fn(c):  # heating and drying that depend on latitude: nonzero global means
        s = jnp.sin(jnp.deg2rad(c.latitude))
        return ColumnTendencies(1e-5 * (1 + s) * jnp.ones(2), -1e-9 * (2 + s) * jnp.ones(2), 1e-6 * jnp.ones(2),
                                jnp.zeros(2), 3e-5 * (1 + s ** 2), 2e-5 + 0 * s)

    phys = GlobalBalance(ColumnPhysics(g, fn))
    state = model.initial_state(surface_humidity=1e-2)
    tend = phys.tendency(state, 0.0)
    lat, w = _gauss_lat_weights(32)
    area = np.broadcast_to(w[:, None] / 64, (32, 64))
    dT = np.asarray(g.to_nodal(tend.temperature_variation)) / g.factor("K")
    dq = np.asarray(g.to_nodal(tend.specific_humidity))
    ps = np.asarray(model.observe(state).surface_air_pressure)
    mass = ps[None] * np.array([0.5, 0.5])[:, None, None] * area[None]
    assert abs(np.sum(mass * dT)) < 1e-10 * np.sum(mass * 1e-5)
    assert abs(np.sum(mass * dq)) < 1e-10 * np.sum(mass * 1e-9)
    raw = ColumnPhysics(g, fn).tendency(state, 0.0)
    assert np.allclose(np.asarray(tend.vorticity), np.asarray(raw.vorticity), rtol=0, atol=0)
    p = np.asarray(phys.observe(state, 0.0).precipitation_flux)
    assert np.sum(area * p) == pytest.approx(2e-5, rel=1e-10)


def test_energy_fixer_gives_back_the_energy_a_step_lost():
    from nemic.experiments.atmos_climate_fixers import EnergyFixer
    from nemic.models.atmosphere import PrimitiveEquations

    model = PrimitiveEquations(21, 2)
    g = model.grid
    before = model.initial_state(temperature=260.0)
    f = model.observe(before)
    lat, w = _gauss_lat_weights(32)
    cool = np.asarray(f.air_temperature) - 2.0 * np.cos(np.deg2rad(lat))[None, :, None] ** 2
    wind = 10.0 * np.cos(np.deg2rad(lat))[None, :, None] * np.ones((2, 32, 64))
    after = model.from_fields(type(f)(cool, wind, 0 * wind, np.asarray(f.specific_humidity),
                                      np.asarray(f.surface_air_pressure), None))

    def energy(state):  # NumPy: Gauss-Legendre weights, equal sigma layers, c_p = 1004, g = 9.81
        x = model.observe(state)
        m = np.asarray(x.surface_air_pressure)[None] * 0.5 * (w[:, None] / 64)[None] / 9.81
        e = 1004.0 * np.asarray(x.air_temperature) + 0.5 * (np.asarray(x.eastward_wind) ** 2
                                                            + np.asarray(x.northward_wind) ** 2)
        return np.sum(m * e)

    assert abs(energy(after) - energy(before)) > 1e-4 * energy(before)
    fixed = EnergyFixer(g)(before, after)
    assert energy(fixed) == pytest.approx(energy(before), rel=1e-12)
    assert np.allclose(np.asarray(fixed.vorticity), np.asarray(after.vorticity), rtol=0, atol=0)


def test_coupling_and_snapshot_options_are_checked():
    with pytest.raises(ConfigError, match="coupling"):
        ClimateRunConfig(coupling="lie")
    with pytest.raises(ConfigError, match="physics_every"):
        ClimateRunConfig(coupling="stages", physics_every=2)  # needs coupling split
    with pytest.raises(ConfigError, match="snapshot_days"):
        ClimateRunConfig(snapshot_days=0.1)  # not a multiple of the 6-hourly samples
    assert ClimateRunConfig(coupling="split", physics_every=2, snapshot_days=0.5).physics_every == 2


def test_split_run_snapshots_restart_and_agree_with_stage_coupling(tmp_path):
    """One day of the shipped hybrid with the physics split off (once per step) writes states every 12 h; a run
    started from the first of them continues the run (its last state matches the second to float32 storage
    precision), and the split and stage-coupled runs differ by much less than a day's change."""
    base = dict(days=1.0, mean_days=0.5, save_hours=12.0, flush_chunks=0)
    a = run_climate(ClimateRunConfig(coupling="split", snapshot_days=0.5, **base), tmp_path / "a")
    assert a["blowup"] is None
    with xr.open_dataset(tmp_path / "a" / "states.nc", decode_times=False) as s:
        assert s.sizes["time"] == 2 and s["T"].attrs["standard_name"] == "air_temperature"
        days = s["time"].values
        t_a = s["T"].values
    assert days[1] - days[0] == pytest.approx(0.5)
    run_climate(ClimateRunConfig(coupling="split", snapshot_days=0.5, initial=str(tmp_path / "a" / "states.nc"),
                                 **{**base, "days": 0.5}), tmp_path / "b")
    with xr.open_dataset(tmp_path / "b" / "states.nc", decode_times=False) as s:
        assert s["time"].values[-1] == pytest.approx(days[1])
        t_b = s["T"].values[-1]
    assert np.max(np.abs(t_b - t_a[1])) < 0.05  # K, after 24 steps from a float32 copy of the state
    run_climate(ClimateRunConfig(coupling="stages", snapshot_days=0.5, **base), tmp_path / "c")
    with xr.open_dataset(tmp_path / "c" / "states.nc") as s:
        t_c = s["T"].values[-1]
    t0 = np.asarray(load_initial_fields(None, PrimitiveEquations(21, 8, dt=1800.0))[0].air_temperature)
    change = np.sqrt(np.mean((t_a[1] - t0) ** 2))
    assert np.sqrt(np.mean((t_c - t_a[1]) ** 2)) < 0.3 * change, change

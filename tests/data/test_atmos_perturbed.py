"""Off-attractor training columns: the perturbations' statistics against their analytic variance, zero amplitude
leaves the states unchanged, the offline training keeps the truth's own normalisation when perturbed columns are
added, one-line errors; and (slow) SPEEDY's physics re-evaluated on the truth's own saved states reproduces the
tendencies jcm wrote during the run, the hydrostatic geopotential equals jcm's, and the perturbed store closes
the water budget."""

import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.data.atmosphere.dataset import days_since_2000, truth_dataset
from nemic.data.atmosphere.spectral import lat_lon
from nemic.data.atmosphere.perturbed import PerturbationConfig, perturb_columns
from nemic.experiments.atmos_offline import OfflineConfig, prepare
from nemic.experiments.atmos_perturbed import open_states

SB = np.array([0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0])
SIG = 0.5 * (SB[1:] + SB[:-1])


def _fields(nt=40, nlat=8, nlon=16, seed=0):
    r = np.random.default_rng(seed)
    s3 = (nt, SIG.size, nlat, nlon)
    return {"T": 250 + 20 * r.random(s3), "q": 1e-3 * (0.1 + r.random(s3)), "u": r.normal(0, 10, s3),
            "v": r.normal(0, 5, s3)}


def test_perturbations_have_the_analytic_variance():
    """dT_k = s A (sum_m c_m cos(m pi sigma_k) / sqrt 3 + 0.3 e_k), s ~ U(0,1), c, e ~ N(0,1):
    Var dT_k = A^2 E[s^2] (sum_m cos^2(m pi sigma_k) / 3 + 0.09), E[s^2] = 1/3."""
    f = _fields(nt=200)  # 25,600 columns: the sample variance is within about 1.3 % (one sd) of the law's
    cfg = PerturbationConfig(t_amplitude=5.0, q_amplitude=0.3, wind_amplitude=2.0)
    p = perturb_columns(f, SIG, cfg, np.random.default_rng(1))
    modes = np.cos(np.pi * np.arange(3)[:, None] * SIG[None, :])
    shape_var = (modes ** 2).sum(0) / 3 + 0.09
    for name, amp, delta in (("T", 5.0, p["T"] - f["T"]), ("u", 2.0, p["u"] - f["u"]),
                             ("q", 0.3, np.log(p["q"] / f["q"]))):
        var = delta.var(axis=(0, 2, 3))
        np.testing.assert_allclose(var, amp ** 2 / 3 * shape_var, rtol=0.05, err_msg=name)
    assert p["s"].shape == (200, 8, 16) and 0 <= p["s"].min() and p["s"].max() <= 1
    # the amplitude fraction scales the whole column: |dT| / s has the same law in every column
    ratio = np.abs(p["T"] - f["T"]).mean(1) / p["s"]
    assert np.corrcoef(ratio.ravel(), p["s"].ravel())[0, 1] < 0.05


def test_zero_amplitude_leaves_the_states_unchanged_and_bad_settings_are_one_line_errors():
    f = _fields(nt=2)
    p = perturb_columns(f, SIG, PerturbationConfig(t_amplitude=0, q_amplitude=0, wind_amplitude=0),
                        np.random.default_rng(0))
    for k in ("T", "q", "u", "v"):
        np.testing.assert_allclose(p[k], f[k], rtol=1e-6)
    for bad in ({"copies": 0}, {"t_amplitude": -1.0}, {"q_amplitude": float("nan")}):
        with pytest.raises(ConfigError) as e:
            PerturbationConfig(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="perturbed"):
        OfflineConfig(perturbed_columns=100)
    with pytest.raises(ConfigError, match="perturbed"):
        OfflineConfig(perturbed="somewhere")


def test_days_since_2000_decoded_or_not():
    t = np.array(["2000-01-01T06:00", "2000-03-01T00:00"], dtype="datetime64[ns]")
    np.testing.assert_allclose(days_since_2000(t), [0.25, 60.0])
    np.testing.assert_allclose(days_since_2000(np.array([1.5, 2.0])), [1.5, 2.0])


def test_offline_preparation_appends_perturbed_columns_with_the_truths_normalisation():
    lat, lon = lat_lon(21)
    f = {k: v[:2] for k, v in _fields(nt=2, nlat=lat.size, nlon=lon.size).items()}
    r = np.random.default_rng(3)
    s2 = (2, lat.size, lon.size)
    f.update({"ps": 1e5 + 500 * r.random(s2), "insolation": 400 * r.random(s2), "precipitation": 3e-5 * r.random(s2),
              "evaporation": 3e-5 * r.random(s2)})
    for k, scale in (("dTdt_phys", 1e-5), ("dqdt_phys", 1e-8), ("dudt_phys", 1e-6), ("dvdt_phys", 1e-6)):
        f[k] = scale * r.standard_normal(f["T"].shape)
    train = truth_dataset(60.25 + 0.25 * np.arange(2), f, lat=lat, lon=lon, sigma=SIG, sigma_boundaries=SB)
    pert = train.copy(deep=True)
    for k in ("dTdt_phys", "dqdt_phys"):
        pert[k] = pert[k] * 10.0  # much larger targets off the attractor
    pert["T"] = pert["T"] + 5.0
    cfg = OfflineConfig(max_train_columns=1000, perturbed="x", perturbed_columns=500, perturbed_weight=4.0)
    net, x, y, w = prepare(train, cfg, pert)
    net0, x0, y0, w0 = prepare(train, OfflineConfig(max_train_columns=1000))
    assert x.shape[0] == 1500 and x0.shape[0] == 1000 and w.shape == y.shape
    np.testing.assert_array_equal(x[:1000], x0)
    np.testing.assert_allclose(w[:1000], w0)
    np.testing.assert_allclose(1.0 / w0[0, :8], y0[:, :8].std(0), rtol=1e-5)  # dT/dt: its own std per level
    # the perturbed columns are weighed by sqrt(weight) / their own std: 10x larger dT/dt -> 2 / (10 std)
    np.testing.assert_allclose(w[1000, :8], 2.0 / y[1000:, :8].std(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(net.in_mean), np.asarray(net0.in_mean))
    np.testing.assert_allclose(np.asarray(net.in_std), np.asarray(net0.in_std))
    np.testing.assert_allclose(x[1000:, 0].mean(), x0[:, 0].mean() + 5.0, atol=1.0)
    # several stores (e.g. perturbed truth states and a run's DAgger states): columns from each, own scales
    cfg2 = OfflineConfig(max_train_columns=1000, perturbed="x, y", perturbed_columns=500)
    assert cfg2.perturbed_dirs == ["x", "y"]
    _, x2, y2, w2 = prepare(train, cfg2, [pert, train])
    assert x2.shape[0] == 2000
    np.testing.assert_allclose(w2[1500, :8], 1.0 / y2[1500:, :8].std(0), rtol=1e-5)


def test_states_of_another_grid_or_levels_are_refused(tmp_path):
    def store(trunc, sigma, bounds):
        lat, lon = lat_lon(trunc)
        f = _fields(nt=1, nlat=lat.size, nlon=lon.size)
        f["ps"] = np.full((1, lat.size, lon.size), 1e5)
        return truth_dataset(np.array([60.0]), f, lat=lat, lon=lon, sigma=sigma, sigma_boundaries=bounds)

    truth = store(21, SIG, SB)
    truth.attrs["truncation"] = 21
    store(31, SIG, SB).to_netcdf(tmp_path / "t31.nc")
    with pytest.raises(DataError, match="T21"):
        open_states(tmp_path / "t31.nc", truth)
    sb = np.linspace(0, 1, 9)
    store(21, 0.5 * (sb[1:] + sb[:-1]), sb).to_netcdf(tmp_path / "levels.nc")
    with pytest.raises(DataError, match="sigma levels"):
        open_states(tmp_path / "levels.nc", truth)
    with pytest.raises(ConfigError, match="snapshot-days"):
        open_states(tmp_path / "missing.nc", truth)
    assert open_states(tmp_path / "levels.nc", store(21, 0.5 * (sb[1:] + sb[:-1]), sb)).sizes["time"] == 1


def test_speedy_physics_on_saved_states_reproduces_the_truths_tendencies(tmp_path):
    """Slow: a quick jcm truth; SPEEDY's physics evaluated by nemic on the stored float32 states (geopotential
    recomputed hydrostatically) against the tendencies jcm computed on its own states during the run; jcm's
    geopotential against dinosaur's hydrostatic one; the perturbed store's water budget and finiteness."""
    import jax
    import jax.numpy as jnp
    import xarray as xr
    from dinosaur.primitive_equations import get_geopotential_on_sigma

    from nemic.data.atmosphere import truth as tr
    from nemic.data.atmosphere.dataset import open_truth
    from nemic.data.atmosphere.perturbed import GRAVITY, R_DRY, R_VAPOR, physics_on_states
    from nemic.experiments.atmos_perturbed import generate_perturbed
    from nemic.experiments.atmos_truth import TruthConfig, column_water_budget, generate

    generate(TruthConfig(spinup_days=1.0, days=2.0, test_days=1.0, chunk_days=1.0, vertical="equidistant"),
             tmp_path / "truth", progress=False, log=lambda s: None)
    ds = open_truth(tmp_path / "truth" / "train.zarr")
    fn = physics_on_states("equidistant", 21, 8)
    out = fn(ds["T"].values, ds["q"].values, ds["u"].values, ds["v"].values, ds["ps"].values, ds["time"].values)
    for k in ("dTdt_phys", "dqdt_phys", "dudt_phys", "dvdt_phys", "precipitation", "evaporation", "insolation"):
        a, b = out[k].astype(float), ds[k].values.astype(float)
        rel = np.sqrt(np.mean((a - b) ** 2) / max(np.mean(b ** 2), 1e-300))
        assert rel < 2e-3, (k, rel)

    coords, model, forcing, _, _ = tr._build(21, 8, "equidistant")
    model.bootstrap_state()
    d = model.resume(forcing=forcing, save_interval=0.25, total_time=0.25).dynamics
    mine = jax.vmap(lambda t, q: get_geopotential_on_sigma(
        temperature=t, specific_humidity=q, nodal_orography=jnp.zeros(t.shape[1:]), sigma=coords.vertical,
        gravity_acceleration=GRAVITY, ideal_gas_constant=R_DRY, water_vapor_gas_constant=R_VAPOR))(
        d.temperature, d.specific_humidity)
    np.testing.assert_allclose(np.asarray(mine), np.asarray(d.geopotential), rtol=5e-6)

    m = generate_perturbed(PerturbationConfig(t_amplitude=4.0, q_amplitude=0.2, wind_amplitude=4.0),
                           tmp_path / "truth", tmp_path / "pert", progress=False, log=lambda s: None)
    p = xr.open_zarr(tmp_path / "pert" / "perturbed.zarr", consolidated=False).load()
    assert m["states"] == ds.sizes["time"] and p.sizes["time"] == ds.sizes["time"]
    assert all(np.all(np.isfinite(p[k].values)) for k in p.data_vars)
    col = column_water_budget(p["dqdt_phys"].values, p["ps"].values, np.diff(np.linspace(0.0, 1.0, 9)))
    np.testing.assert_allclose(col, p["evaporation"].values - p["precipitation"].values,
                               atol=1e-5 * float(np.abs(p["evaporation"]).max()))
    # the perturbed temperature differs from the truth's by the perturbation, nothing else
    assert 0.5 < float(np.abs(p["T"].values - ds["T"].values).mean()) < 4.0

    # DAgger labelling: the states from a file (here the truth's own), zero amplitudes: the tendencies of above
    ds[["T", "u", "v", "q", "ps"]].to_netcdf(tmp_path / "states.nc")
    zero = PerturbationConfig(t_amplitude=0.0, q_amplitude=0.0, wind_amplitude=0.0)
    m = generate_perturbed(zero, tmp_path / "truth", tmp_path / "dagger", states=tmp_path / "states.nc",
                           progress=False, log=lambda s: None)
    g = xr.open_zarr(tmp_path / "dagger" / "perturbed.zarr", consolidated=False).load()
    assert m["config"]["states"].endswith("states.nc") and g.sizes["time"] == ds.sizes["time"]
    for k in ("dTdt_phys", "dqdt_phys", "precipitation"):
        np.testing.assert_allclose(g[k].values, out[k], rtol=1e-3, atol=1e-3 * float(np.abs(out[k]).max()))

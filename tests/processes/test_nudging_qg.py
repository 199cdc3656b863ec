"""QG nudging recipe: its pieces against analytic values, bad input, and a tiny end-to-end run of the command."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from jax.test_util import check_grads
from typer.testing import CliRunner

from nemic.core.errors import ConfigError, DataError
from nemic.data.coarsen import Coarsener
from nemic.experiments.nudging_qg import NudgingQGConfig, climate_stats, config_from_file, load_generated, \
    reference_run
from nemic.models.qg import get_config


def _barotropic_mode(lo, A=2.0e3, m=3):
    """PV of psi_1 = psi_2 = A cos(2 pi m x / L): q_i = lap psi_i (no stretching since psi_1 = psi_2)."""
    k = 2 * np.pi * m / lo.L
    psi = A * np.cos(k * lo.x)[None, :] * np.ones((lo.ny, 1))
    return np.stack([-k**2 * psi, -k**2 * psi]), k, A


def test_climate_stats_match_analytic_single_mode():
    lo = get_config("eddy", 16)
    q, k, A = _barotropic_mode(lo)
    s = climate_stats(lo, q[None])
    # v = dpsi/dx = -A k sin(kx): mean(v^2)/2 = A^2 k^2 / 4 in each layer; the layer weights sum to 1
    np.testing.assert_allclose(s["KE1"], [A**2 * k**2 / 4], rtol=1e-12)
    np.testing.assert_allclose(s["KE2"], [A**2 * k**2 / 4], rtol=1e-12)
    np.testing.assert_allclose(s["KE"], [A**2 * k**2 / 4], rtol=1e-12)
    np.testing.assert_allclose(s["enstrophy"], [A**2 * k**4 / 4], rtol=1e-12)


def test_climate_stats_jit_vmap_grad():
    lo = get_config("eddy", 8)
    q = 1e-6 * jax.random.normal(jax.random.key(0), (3, 2, 8, 8))
    from nemic.experiments.nudging_qg import _climate_stats

    ke = jax.jit(lambda x: _climate_stats(lo, x)["KE"])(q)  # vmapped over snapshots inside
    np.testing.assert_allclose(ke, [climate_stats(lo, q[i:i + 1])["KE"][0] for i in range(3)], rtol=1e-12)
    check_grads(lambda x: 1e9 * jnp.sum(_climate_stats(lo, x)["KE"]), (q,), order=1, modes=("rev",))


def test_reference_run_is_the_coarse_grained_high_resolution_run():
    hi, lo = get_config("eddy", 32), get_config("eddy", 16)
    q0 = np.asarray(hi.random_state(jax.random.key(3)).q)
    ref = reference_run(hi, lo, q0, dt=3600.0, n_steps=6, save_every=3)
    np.testing.assert_allclose(np.asarray(ref.t), [0.0, 3 * 3600.0, 6 * 3600.0])
    assert ref.states.q.shape == (3, 2, 16, 16)
    hi_run = hi.run(hi.initial_state(q0), dt=3600.0, n_steps=6, save_every=3)
    np.testing.assert_allclose(ref.states.q[-1], Coarsener(hi, lo, "op1").coarsen(hi_run.states.q[-1]), rtol=1e-12)


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_generated(tmp_path / "nothing")
    with pytest.raises(DataError, match="lacks hires.nc"):
        load_generated(tmp_path)
    with pytest.raises(ConfigError, match="tau_days"):
        NudgingQGConfig(tau_days=0.05)
    with pytest.raises(ConfigError, match="tau_days"):
        NudgingQGConfig(tau_days=-1.0)
    with pytest.raises(ConfigError, match="save_hours"):
        NudgingQGConfig(save_hours=1.5)
    with pytest.raises(ConfigError, match="holdout"):
        NudgingQGConfig(holdout=1.0)
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"tua_days": 1.0}))
    with pytest.raises(ConfigError, match="unknown config key"):
        config_from_file(p)


def test_tiny_end_to_end_command_writes_cf_nudging_tendencies(tmp_path):
    """32 -> 16 points, 4 days, 3 training steps, 6 days of free runs (about 15 s)."""
    from nemic.cli.nudging import app
    from nemic.experiments.qg_subgrid import generate

    gen = tmp_path / "gen"
    generate("eddy", 4 / 360, gen, nx_hi=32, nx_lo=16, save_every=24, operators=("op1",), spinup_years=0)
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(dataclasses.asdict(NudgingQGConfig.tiny())))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["qg", "--data", str(gen), "--out", str(out), "--config", str(cfgp),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    for f in ("metrics.json", "nudged_run.nc", "free_runs.nc", "ke_spectra.png", "energy_series.png",
              "nudging_tendency.png", "bias_spread.png", "correction/closure.eqx", "correction/closure.json"):
        assert (out / f).stat().st_size > 0, f
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["nx_hi"] == 32 and m["config"]["nx_lo"] == 16
    assert m["validation"]["chosen_scale"] in (0.5, 1.0) and m["test_starts"] == [0, 2]
    for name in ("low_res", "nudging_corrected", "backscatter"):
        assert m["models"][name]["all_stable"]
        b = m["models"][name]["biases"]["KE"]
        assert len(b["per_start"]) == 2 and np.isfinite(b["mean"]) and b["std"] >= 0
        assert 0 <= m["guard"]["free_runs"][name]["flagged_fraction"] <= 1
    # the saved correction reloads and gives the same tendency as a fresh fit would have stored
    from nemic.experiments.qg_subgrid import load_closure
    c, hyper = load_closure(out / "correction")
    assert hyper["mode"] == "nudging" and c.tendency(type("S", (), {"q": jnp.zeros((2, 16, 16))})(), 0.0).q.shape \
        == (2, 16, 16)
    with xr.open_dataset(out / "free_runs.nc", engine="h5netcdf") as ds:
        assert ds["KE_low_res"].shape[0] == 2 and ds["KE_low_res"].attrs["units"] == "m2 s-2"
        np.testing.assert_allclose(np.nanmean(ds["KE_low_res"].values, axis=1).mean() / m["reference_climate"]["KE"]
                                   - 1, m["models"]["low_res"]["biases"]["KE"]["mean"], rtol=1e-9)
    with xr.open_dataset(out / "nudged_run.nc", engine="h5netcdf") as ds:
        assert ds.attrs["Conventions"].startswith("CF")
        v = ds["q_nudging_tendency"]
        assert v.dims == ("time", "lev", "y", "x") and v.shape == (33, 2, 16, 16)
        assert v.attrs["units"] == "(s-1) / (s)" and "nudging tendency" in v.attrs["long_name"]
        assert ds["q"].attrs["units"] == "s-1"
        assert ds.attrs["tau_seconds"] == 0.5 * 86400
        # the run starts on the reference, so the first recorded tendency is zero; later ones are not
        assert np.all(np.isfinite(v.values)) and float(np.abs(v.isel(time=0)).max()) == 0.0
        assert float(np.abs(v.isel(time=-1)).max()) > 0.0
    # an unknown configuration key is a one-line error, not a traceback
    cfgp.write_text(json.dumps({"tua": 1}))
    res = CliRunner().invoke(app, ["qg", "--data", str(gen), "--out", str(out), "--config", str(cfgp)])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)

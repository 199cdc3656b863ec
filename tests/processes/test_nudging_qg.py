"""QG nudging recipe: its pieces against analytic values, bad input, and a tiny end-to-end run of the command."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.rollout import simulate
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
    q0 = np.asarray(hi.initial_state(jax.random.key(3)).q)
    ref = reference_run(hi, lo, q0, dt=3600.0, n_steps=6, save_every=3)
    np.testing.assert_allclose(np.asarray(ref.t), [0.0, 3 * 3600.0, 6 * 3600.0])
    assert ref.states.q.shape == (3, 2, 16, 16)
    hi_run = simulate(hi, None, hi.initial_state(q=q0), dt=3600.0, n_steps=6, save_every=3, observe=hi.observe)
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
    assert m["guard_climate"] is None  # 5 climate snapshots are too few to fit a 6-feature detector
    for name in ("low_res", "nudging_corrected", "backscatter"):
        assert m["models"][name]["all_stable"]
        b = m["models"][name]["biases"]["KE"]
        assert len(b["per_start"]) == 2 and np.isfinite(b["mean"]) and b["std"] >= 0
        assert 0 <= m["guard"]["free_runs"][name]["flagged_fraction"] <= 1
    # the saved correction reloads and gives the same tendency as a fresh fit would have stored
    from nemic.experiments.qg_subgrid import load_trained_closure
    from nemic.models.qg import QGState
    c, info = load_trained_closure(out / "correction")
    s0 = QGState.from_q(jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16))) * 1e-6)
    assert info["mode"] == "nudging" and c.tendency(s0, 0.0).qh.shape == (2, 16, 9)
    assert np.all(np.isfinite(c.tendency(s0, 0.0).q)) and float(jnp.abs(c.tendency(s0, 0.0).q).max()) > 0
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


# ---------------------------------------------------------------- the evaluation pieces
class _Identity(eqx.Module):
    """A stand-in correction whose tendency is the state's PV itself (so the projection can be checked)."""

    def tendency(self, state, t, key=None):
        return state


def test_scaled_correction_scales_and_removes_the_largest_scales():
    from nemic.processes.qg_nudging import ScaledCorrection
    from nemic.models.qg.model import QGState

    q = np.asarray(jax.random.normal(jax.random.key(1), (2, 16, 12)))
    c = ScaledCorrection(_Identity(), 0.3)
    s = QGState.from_q(jnp.asarray(q))
    np.testing.assert_allclose(c.tendency(s, 0.0).qh, 0.3 * s.qh, rtol=1e-14)
    # reference projection with numpy's full complex FFT: zero the modes with i^2 + j^2 < 1.5^2
    f = np.fft.fft2(q)
    j, i = np.meshgrid(np.fft.fftfreq(16, 1 / 16), np.fft.fftfreq(12, 1 / 12), indexing="ij")
    f[:, i**2 + j**2 < 1.5**2] = 0
    expect = 2.0 * np.real(np.fft.ifft2(f))
    got = ScaledCorrection(_Identity(), 2.0, remove_below=1.5).tendency(QGState.from_q(jnp.asarray(q)), 0.0).q
    np.testing.assert_allclose(got, expect, atol=1e-12)
    # the removed part is exactly the mean and the four |i|, |j| <= 1 modes (sums over 9 of the grid's modes)
    assert np.abs(np.asarray(got) / 2 - q).max() > 1e-3
    with pytest.raises(ConfigError, match="remove_below"):
        ScaledCorrection(_Identity(), 1.0, remove_below=-1.0)


def test_scaled_correction_jit_vmap_grad():
    from nemic.processes.qg_nudging import ScaledCorrection
    from nemic.models.qg.model import QGState

    q = jax.random.normal(jax.random.key(2), (3, 2, 8, 8))
    c = ScaledCorrection(_Identity(), 0.7, remove_below=1.5)
    out = jax.jit(jax.vmap(lambda x: c.tendency(QGState.from_q(x), 0.0).q))(q)
    np.testing.assert_allclose(out[1], c.tendency(QGState.from_q(q[1]), 0.0).q, rtol=1e-12)

    def f(a, x):
        return jnp.sum(ScaledCorrection(_Identity(), a, remove_below=1.5).tendency(QGState.from_q(x), 0.0).q ** 2)

    check_grads(f, (jnp.asarray(0.7), q[0]), order=2, modes=("rev",))


def test_pv_features_match_a_single_mode():
    from nemic.processes.qg_nudging import pv_features

    lo = get_config("eddy", 16)
    q, k, A = _barotropic_mode(lo)
    f = np.asarray(pv_features(lo)(jnp.asarray(q)))
    assert f.shape == (1, 6)
    # q_i = -k^2 A cos(kx): std = k^2 A / sqrt(2); kurtosis of a cosine = (3/8) / (1/2)^2 = 1.5; KE_i = A^2 k^2 / 4
    np.testing.assert_allclose(f[0, :2], np.log(k**2 * A / np.sqrt(2)), rtol=1e-12)
    np.testing.assert_allclose(f[0, 2:4], 1.5, rtol=1e-12)
    np.testing.assert_allclose(f[0, 4:], np.log(A**2 * k**2 / 4), rtol=1e-12)
    qs = jnp.asarray(np.stack([q, 2 * q]))
    g = jax.jit(jax.vmap(lambda x: pv_features(lo)(x)[0]))(qs)
    np.testing.assert_allclose(g[1] - g[0], [np.log(2)] * 2 + [0, 0] + [np.log(4)] * 2, atol=1e-12)
    s = float(np.std(q))  # PV of order 1e-6 s^-1: differentiate with respect to q / s (finite-difference steps)
    x0 = jnp.asarray(q) / s * (1 + 0.1 * jnp.sin(jnp.arange(16.0)))
    check_grads(lambda x: jnp.sum(pv_features(lo)(s * x)), (x0,), order=1, modes=("rev",))


def test_choose_scale_and_spread_summary():
    from nemic.experiments.nudging_qg import choose_scale, spread_summary

    def b(x):
        return {"KE": x, "KE1": x, "KE2": 2 * x, "enstrophy": x}

    val = {0.5: [b(-0.05), b(0.02)], 1.0: [b(0.20), b(0.10)], 0.25: [b(-0.10), b(-0.08)]}
    assert choose_scale(val) == 0.5
    val[0.5][1] = {k: float("inf") for k in ("KE", "KE1", "KE2", "enstrophy")}  # a blow-up disqualifies a scale
    assert choose_scale(val) == 0.25
    with pytest.raises(ConfigError):
        choose_scale({})
    low = [b(-0.15), b(-0.10), b(-0.20)]
    good = [b(-0.01), b(0.02), b(0.0)]
    s = spread_summary(good, low)
    np.testing.assert_allclose(s["KE"]["mean"], np.mean([-0.01, 0.02, 0.0]), rtol=1e-12)
    np.testing.assert_allclose(s["KE"]["std"], np.std([-0.01, 0.02, 0.0], ddof=1), rtol=1e-12)
    np.testing.assert_allclose(s["KE"]["reduction"], 0.15 - abs(np.mean([-0.01, 0.02, 0.0])), rtol=1e-12)
    assert s["KE"]["reduction_exceeds_spread"]
    # a reduction smaller than the spread does not count
    noisy = [b(-0.3), b(0.1), b(-0.05)]
    assert not spread_summary(noisy, low)["KE"]["reduction_exceeds_spread"]
    assert "reduction" not in spread_summary(low)["KE"]


def test_start_indices_are_checked():
    with pytest.raises(ConfigError, match="different snapshots"):
        NudgingQGConfig(val_starts=(1, 2), test_starts=(2, 3))
    with pytest.raises(ConfigError, match="test_starts"):
        NudgingQGConfig(test_starts=())
    with pytest.raises(ConfigError, match="scales"):
        NudgingQGConfig(scales=(0.5, -1.0))

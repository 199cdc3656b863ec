"""The ``nemic ebm`` commands write their files and turn bad input into one-line errors."""

import json

import pytest
import xarray as xr
from typer.testing import CliRunner

from nemic.cli.ebm import app
from nemic.core.errors import ConfigError


def test_run_writes_equilibrium_co2_and_plot(tmp_path):
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--num-lat", "30", "--albedo-width", "1",
                                 "--years", "1"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["co2"]["delta_global_mean_Ts"] > s["co2"]["no_feedback_delta_T"] > 0
    ds = xr.open_dataset(tmp_path / "equilibrium.nc")
    assert ds.Ts.attrs["units"] == "degC" and ds.sizes["lat"] == 30
    assert xr.open_dataset(tmp_path / "trajectory.nc").sizes["time"] >= 12  # about monthly
    assert (tmp_path / "ebm.png").stat().st_size > 1000


def test_hysteresis_command(tmp_path):
    r = CliRunner().invoke(app, ["hysteresis", "--out", str(tmp_path), "--num-lat", "30", "--s0-min", "1200",
                                 "--s0-max", "1900", "--s0-step", "50", "--years-per-value", "15"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "hysteresis.json").read_text())
    assert s["snowball_S0"] < s["deglaciation_S0"]
    assert (tmp_path / "hysteresis.png").exists()


def test_bad_cli_input_raises_config_errors(tmp_path):
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--D", "-1"])
    assert isinstance(r.exception, ConfigError) and "D must be >= 0" in str(r.exception)
    r = CliRunner().invoke(app, ["hysteresis", "--out", str(tmp_path), "--s0-min", "1300", "--s0-max", "1200"])
    assert isinstance(r.exception, ConfigError)
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--num-lat", "1"])
    assert isinstance(r.exception, ConfigError) and "--num-lat" in str(r.exception)


@pytest.mark.slow
def test_calibrate_command(tmp_path):
    r = CliRunner().invoke(app, ["calibrate", "--out", str(tmp_path), "--params", "A,D", "--methods", "eki",
                                 "--num-lat", "16", "--years", "4", "--albedo-width", "4"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "calibration.json").read_text())
    assert s["methods"]["eki"]["max_abs_relative_error"] < 0.05 and s["methods"]["eki"]["n_forward"] == 320
    assert (tmp_path / "calibration.png").exists()
    r = CliRunner().invoke(app, ["calibrate", "--out", str(tmp_path), "--params", "A,K"])
    assert isinstance(r.exception, ConfigError)


def test_run_with_daily_insolation_writes_the_seasonal_cycle(tmp_path):
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--num-lat", "12", "--insolation", "daily",
                                 "--albedo-width", "2"])
    assert r.exit_code == 0, r.output
    ds = xr.open_dataset(tmp_path / "seasonal.nc")
    assert ds.sizes["month"] == 12 and ds.Ts.attrs["units"] == "degC"
    assert not (tmp_path / "co2.nc").exists()

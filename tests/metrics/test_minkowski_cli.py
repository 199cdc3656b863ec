"""`nemic minkowski` commands: measures of a frame, and a tiny surrogate training run (slow)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from nemic.cli.minkowski import app
from nemic.core.errors import ConfigError


def test_measures_command_matches_library(opera_sample):
    from nemic.metrics.minkowski import minkowski_functionals

    r = CliRunner().invoke(app, ["measures", "--thresholds", "0.5,2", "--frame", "1", "--window", "0:64,0:96"])
    assert r.exit_code == 0, r.output
    m = minkowski_functionals(opera_sample.rain_rate.values[1, :64, :96], [0.5, 2.0], components=True)
    rows = [ln for ln in r.output.splitlines() if ln.strip().startswith("│")]
    got = [[int(v) for v in ln.replace("│", " ").split()[1:]] for ln in rows]
    assert got == np.stack([np.asarray(v) for v in m]).T.tolist()
    bad = CliRunner().invoke(app, ["measures", "--thresholds", "2,0.5"])
    assert isinstance(bad.exception, ConfigError)


def test_cli_error_is_one_line():
    p = subprocess.run([sys.executable, "-c", "from nemic.cli import main; main()", "minkowski", "measures",
                        "--thresholds", "1,x"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "thresholds" in p.stderr


@pytest.mark.slow
def test_train_surrogate_command(tmp_path):
    r = CliRunner().invoke(app, ["train-surrogate", "--out", str(tmp_path), "--n-thresholds", "3", "--patch", "64",
                                 "--stride", "64", "--steps", "3", "--batch", "4", "--channels", "4",
                                 "--blocks", "1", "--train-fraction", "0.6", "--gap", "0",
                                 "--v2-steps", "3"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["models"]["surrogate"]["violation_share"] == 0.0
    assert set(rep["models"]) == {"surrogate_v2", "surrogate", "surrogate_unconstrained"}
    assert rep["models"]["surrogate_v2"]["violation_share"] == 0.0
    assert (tmp_path / "surrogate.eqx").exists() and (tmp_path / "surrogate_unconstrained.json").exists()

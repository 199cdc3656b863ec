"""The `nemic` command line as a user meets it: the quickstart end to end, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

TINY = """
train_time = 5.0
test_time = 6.0
climate_time = 4.0
spinup_time = 1.0
n_forecasts = 3
forecast_spacing = 1.0
max_lead = 2.0
offline_iters = 100
online_curriculum = [[2, 20], [4, 20]]
acf_max_lag = 0.5
"""


def nemic(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "nemic.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_quickstart_tiny_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    r = nemic("quickstart", "--out", str(out), "--config", str(cfg))  # with progress bars, as users run it
    assert r.returncode == 0, r.stderr
    assert "wall time" in r.stdout and str(out.resolve()) in r.stdout.replace("\n", "")
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["closures"]) == {"none", "polynomial", "nn_offline", "nn_online"}
    for name, c in m["closures"].items():
        assert set(c["forecast_rmse"]) == {"0.5", "1.0", "2.0"}
        assert 0.0 <= c["hellinger_x"] <= 1.0
        assert isinstance(c["stable"], bool)
    assert m["wall_seconds"] > 0
    # the uncorrected coarse model is clearly worse than any closure at lead 0.5 (it lacks the subgrid drag)
    rm = {k: v["forecast_rmse"]["0.5"] for k, v in m["closures"].items()}
    assert rm["none"] > 2 * min(rm["polynomial"], rm["nn_offline"], rm["nn_online"])
    for f in ("truth.nc", "free_run_nn_online.nc", "forecast_rmse.nc", "rmse_vs_lead.png", "pdf_x.png",
              "hovmoller.png", "models/nn_online.eqx", "models/nn_online.json"):
        assert (out / f).exists(), f
    ds = xr.open_dataset(out / "truth.nc")
    assert ds.x.dims == ("time", "k") and ds.x.attrs["long_name"] and ds.time.attrs["standard_name"] == "time"
    assert np.all(np.isfinite(ds.x.values))
    ds.close()


@pytest.mark.parametrize("config, match", [
    ("coarse_dt = -0.005", "coarse_dt must be > 0"),
    ("coarse_dt = 0.0", "coarse_dt must be > 0"),
    ("K = 3", "K must be an integer >= 4"),
    ("forcing = 3.0", "unknown config key"),
    ("coarse_dt = 0.0033", "whole multiple"),
])
def test_bad_config_one_line_error_and_nothing_lost(tmp_path, config, match):
    out = tmp_path / "run"
    out.mkdir()
    keep = out / "metrics.json"
    keep.write_text('{"earlier": true}')
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config)
    r = nemic("quickstart", "--out", str(out), "--config", str(cfg), "--no-progress", timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.stderr
    assert keep.read_text() == '{"earlier": true}'


def test_unknown_option_and_unwritable_output(tmp_path):
    r = nemic("quickstart", "--frobnicate", timeout=120)
    assert r.returncode == 2 and "No such option" in r.stderr and "Traceback" not in r.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = nemic("quickstart", "--out", str(blocker / "sub"), "--no-progress", timeout=120)
    assert r.returncode == 2
    assert ("cannot be written" in r.stderr or "cannot create" in r.stderr) and "Traceback" not in r.stderr
    missing = tmp_path / "nope.toml"
    r = nemic("quickstart", "--config", str(missing), timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_ctrl_c_exits_130_in_one_line_and_keeps_earlier_results(tmp_path):
    """SIGINT while the quickstart trains: exit 130, one line, the earlier results directory untouched."""
    import hashlib
    import signal
    import time

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"files": ["metrics.json"]}\n')  # an earlier finished run
    (out / "metrics.json").write_text('{"earlier": true}\n')
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("offline_iters = 100", "offline_iters = 100000"))  # long enough to interrupt
    proc = subprocess.Popen([sys.executable, "-m", "nemic.cli", "quickstart", "--out", str(out), "--config",
                             str(cfg), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "[3/5]" in line:  # offline training has started
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == before

"""The root options of the command line for several processes (one-line errors before anything runs), and the
benchmark scripts' --quick modes (slow: they compile every case)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from nemic.cli.testing import invoke, root_app

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_process_id_out_of_range_on_the_command_line():
    status, lines = invoke(root_app(), ["--num-processes", "2", "--process-id", "5", "quickstart"])
    assert status == 2 and len(lines) == 1
    assert "process id 5 is out of range: expected 0 .. 1" in lines[0]
    status, lines = invoke(root_app(), ["--num-processes", "2", "--process-id", "1", "--coordinator", "bad",
                                        "quickstart"])
    assert status == 2 and "HOST:PORT" in lines[0]


def _run(script, tmp_path, *extra):
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--repeats", "1", "--out", str(out),
                          *extra], capture_output=True, text=True, cwd=BENCH, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()), res.stdout


def test_gpu_benchmark_quick_runs_every_case(tmp_path):
    r, stdout = _run("gpu.py", tmp_path)
    rows = {row["case"]: row for row in r["rows"]}
    assert all("error" not in row for row in r["rows"]), stdout
    assert rows["QG 32^2 float32"]["state_dtype"] == "complex64"  # float32 stays float32
    assert rows["QG 64^2 float64 x4"]["state_dtype"] == "complex128"
    assert any(c.startswith("two-scale L96 x64") for c in rows)
    assert any("U-Net" in c for c in rows) and any("CNN closure" in c for c in rows)
    assert all(row["rate"] > 0 for row in r["rows"])


def test_sharding_benchmark_quick_gives_equal_results(tmp_path):
    r, stdout = _run("sharding.py", tmp_path)
    assert r["n_devices"] == 8
    for name, case in r["cases"].items():
        assert case.get("max_abs_difference", case.get("loss_difference")) <= 1e-10, (name, case)

"""Two processes on localhost joined by ``jax.distributed`` (CPU collectives) give the same ensemble, the same
chunked zarr generation and the same trained parameters as one process; outputs, stores and checkpoints are
written once (by process 0) and read by both; bad settings (a process id out of range, a coordinator that does
not answer) are one-line errors, never a hang."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nemic.errors import ConfigError
from nemic.parallel.distributed import first_slurm_host, initialize, settings_from_env

SCRIPT = Path(__file__).parent / "distributed_checks.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TMPDIR": str(scratch)}
    env.pop("XLA_FLAGS", None)
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir(), one.mkdir()
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(i), "2", str(port), str(two)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    ref = subprocess.run([sys.executable, str(SCRIPT), "0", "1", "0", str(one)], env=env, capture_output=True,
                         text=True, timeout=300)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert ref.returncode == 0, ref.stderr[-2000:]
    r = np.load(one / "result0.npz")
    assert int(r["n_devices"]) == 1
    for i in range(2):
        d = np.load(two / f"result{i}.npz")
        assert int(d["n_devices"]) == 2  # one device per process, one mesh over both
        assert np.max(np.abs(d["x"] - r["x"])) <= 1e-12
        assert np.max(np.abs(d["zx"] - r["x"])) <= 1e-12  # the zarr generation over both processes
        params = [k for k in r.files if k.startswith("p")]
        assert params and max(np.max(np.abs(d[k] - r[k])) for k in params) <= 1e-10
        # the second training resumed from process 0's checkpoint in both processes: it ran iterations 4 and 5
        assert d["iterations_run"].tolist() == [4, 5]
    # written once, by process 0; process 1's scratch directory is gone
    assert json.loads((two / "out" / "who.json").read_text()) == {"writer": 0}
    assert [p.name for p in (two / "out" / "checkpoints").iterdir()] == ["fit.ckpt"]
    assert list(scratch.iterdir()) == []


def test_process_id_out_of_range_is_one_line():
    with pytest.raises(ConfigError, match=r"process id 2 is out of range: expected 0 .. 1"):
        initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        initialize("no-port", 2, 1)


def test_coordinator_that_does_not_answer_is_one_line_after_the_timeout():
    port = _free_port()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(ConfigError, match=rf"coordinator 127.0.0.1:{port} did not answer within 1 s") as e:
        initialize(f"127.0.0.1:{port}", 2, 1, timeout=1.0)
    assert time.monotonic() - t < 30 and "\n" not in str(e.value)


def test_launcher_environments():
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_JOB_NODELIST": "gpu[003-006,010]"}
    assert settings_from_env(slurm) == {"coordinator": "gpu003:12321", "num_processes": 4, "process_id": 3}
    jaxenv = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert settings_from_env(jaxenv) == {"coordinator": "h:1", "num_processes": 2, "process_id": 1}
    ompi = {"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "5"}
    assert settings_from_env(ompi) == {"coordinator": None, "num_processes": 8, "process_id": 5}
    assert first_slurm_host("node7") == "node7" and first_slurm_host("a[1-2],b3") == "a1"
    assert initialize(None, None, None) is False or os.environ.get("SLURM_PROCID")  # nothing set: one process

"""Runs are transactions: a failed or killed rerun leaves the earlier results byte for byte, a finished one
replaces them whole, and files are written with the umask's mode."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nemic.io.runs import is_finished_run, recover, run_transaction, staging_dir


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_success_replaces_whole_and_writes_a_manifest(tmp_path):
    out = tmp_path / "run"
    with run_transaction(out, command="test", settings={"a": 1}) as stage:
        (stage / "a.txt").write_text("old a")
        (stage / "b.txt").write_text("old b")
    assert is_finished_run(out) and (out / "a.txt").read_text() == "old a"
    with run_transaction(out, command="test") as stage:
        (stage / "a.txt").write_text("new a")
    # b.txt of the first run is gone: the directory never mixes two runs
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "run.json"]
    assert not staging_dir(out).exists()


def test_failure_leaves_the_earlier_results_byte_for_byte(tmp_path):
    out = tmp_path / "run"
    with run_transaction(out) as stage:
        (stage / "a.txt").write_text("a")
        (stage / "sub").mkdir()
        (stage / "sub" / "c.bin").write_bytes(os.urandom(100))
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with run_transaction(out) as stage:
            (stage / "a.txt").write_text("half-written new")
            raise RuntimeError("the run failed half-way")
    assert snapshot(out) == before
    # the staging directory survives (checkpoints in it let the next run resume)
    assert (staging_dir(out) / "a.txt").exists()


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with run_transaction(tmp_path / "run") as stage:
            from nemic.io.output import write_json

            write_json({"x": 1}, stage / "m.json")
    finally:
        os.umask(old)
    assert oct((tmp_path / "run" / "m.json").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "run").stat().st_mode & 0o777) == "0o755"


def test_results_path_that_is_a_file_is_a_one_line_error(tmp_path):
    from nemic.core.errors import NemicError

    (tmp_path / "f").write_text("x")
    with pytest.raises(NemicError, match="not a directory"):
        with run_transaction(tmp_path / "f"):
            pass


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nemic.io.output import atomic_write
    from nemic.io.runs import run_transaction
    out, tag = Path(sys.argv[1]), sys.argv[2]
    with run_transaction(out, command="writer") as stage:
        print("started", flush=True)
        for i in range(20):
            atomic_write(stage / f"f{i}.txt", lambda tmp, i=i: Path(tmp).write_text(f"{tag} {i}" * 1000))
            time.sleep(0.005)
    print("done", flush=True)
""")


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_random_points_leaves_old_or_complete_new(tmp_path, seed):
    import random

    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "run"
    subprocess.run([sys.executable, str(script), str(out), "old"], check=True, capture_output=True)
    old = snapshot(out)
    rng = random.Random(seed)
    proc = subprocess.Popen([sys.executable, str(script), str(out), "new"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(rng.uniform(0.0, 0.25))  # the 20 writes take ~0.1-0.2 s, then the swap: kill before, during, after
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    recover(out)
    now = snapshot(out)
    if now == old:
        return
    assert is_finished_run(out), "a killed run left a mixed results directory"
    assert all((out / f"f{i}.txt").read_text().startswith("new") for i in range(20))

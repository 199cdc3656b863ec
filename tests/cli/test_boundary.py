"""The command line's one error boundary and its fast help."""

import errno
import subprocess
import sys

import pytest

from nemic.cli import describe_error
from nemic.errors import ConfigError


def test_help_loads_no_numerical_stack():
    code = ("import sys; from nemic.cli import _register; _register(); "
            "print(','.join(m for m in ('jax', 'xarray', 'matplotlib', 'equinox') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help would import {out.stdout.strip()}"


@pytest.mark.parametrize("args", [["--help"], ["ebm", "run", "--help"], ["quickstart", "--help"],
                                  ["qg", "--help"], ["minkowski", "--help"], ["nudging", "--help"]])
def test_help_has_no_stray_tags(args):
    out = subprocess.run([sys.executable, "-m", "nemic.cli", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "<bool>" not in out.stdout and "Usage" in out.stdout


@pytest.mark.parametrize("exc, status, words", [
    (ConfigError("dt must be > 0, got -1"), 2, "dt must be > 0"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/y.nc"), 2, "no space left"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), 2, "permission denied '/root/x'"),
    (FileNotFoundError(errno.ENOENT, "No such file", "a.nc"), 2, "no such file or directory 'a.nc'"),
    (MemoryError(), 2, "out of memory"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8e12 bytes"), 2, "out of memory"),
    (ZeroDivisionError("division by zero"), 1, "internal error (ZeroDivisionError"),
])
def test_errors_become_one_line(exc, status, words):
    msg, code = describe_error(exc)
    assert code == status and words in msg and "\n" not in msg


def test_a_user_error_exits_2_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nemic.cli", "quickstart", "--out", str(tmp_path / "r"),
                          "--config", str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.toml" in lines[0]


@pytest.mark.parametrize("args, words", [
    (["quickstart", "--seed", "1.5"], "--seed"),
    (["ebm", "run", "--out", "x", "--num-lat", "1e11"], "--num-lat"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_are_one_line(args, words):
    out = subprocess.run([sys.executable, "-m", "nemic.cli", *args], capture_output=True, text=True)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1 and words in lines[0], out.stderr


def test_a_bare_group_shows_its_help():
    out = subprocess.run([sys.executable, "-m", "nemic.cli", "ebm"], capture_output=True, text=True)
    assert out.returncode == 0 and "Commands" in out.stdout and out.stderr == ""

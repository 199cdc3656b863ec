"""Sharding on 8 simulated CPU devices, in a subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
so the rest of the suite keeps one device: a sharded ensemble equals the plain ``ensemble_rollout`` to 1e-12
(float64), a data-parallel ``fit`` step gives the parameters of the plain ``fit`` to 1e-10, outputs are laid out
as the mesh says, and a mesh that does not divide the ensemble or the batch is a one-line error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from nemic.errors import ConfigError
from nemic.parallel import check_divides, make_mesh

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def eight_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(HERE / "sharded_checks.py")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_sharded_ensemble_equals_unsharded(eight_devices):
    r = eight_devices
    assert r["n_devices"] == 8
    assert r["rollout_scale"] > 1.0  # a non-trivial trajectory
    assert r["rollout_maxdiff"] <= 1e-12
    assert r["space_maxdiff"] <= 1e-12  # members over 4 devices and the grid over 2
    assert r["one_device_maxdiff"] <= 1e-12
    assert r["two_scale_maxdiff"] <= 1e-12  # two-scale Lorenz-96, 100 steps: equal to rounding  # the same call on a mesh of one device


def test_output_shardings_follow_the_mesh(eight_devices):
    r = eight_devices
    assert r["rollout_spec"] == ["ensemble", None, None]  # (member, time, k)
    assert r["rollout_shards"] == 8 and r["rollout_shard_shape"] == [2, 11, 40]  # 16 members / 8 devices
    assert r["t_replicated"]
    assert r["space_spec"] == ["ensemble", None, "space"]
    assert r["param_replicated"]


def test_data_parallel_fit_equals_plain_fit(eight_devices):
    r = eight_devices
    assert r["train_change"] > 1e-3  # training moved the weights
    assert r["train_maxdiff"] <= 1e-10
    assert r["train_loss_diff"] <= 1e-10


def test_sharded_zarr_generation_and_streamed_data_parallel_training(eight_devices):
    r = eight_devices
    assert r["zarr_maxdiff"] <= 1e-12  # chunks of 8 members sharded over 8 devices, written to zarr
    assert r["stream_fit_change"] > 1e-2  # the forcing moved
    assert r["stream_fit_diff"] <= 1e-10  # host-streamed batches split over the batch axis: same training


def test_mesh_that_does_not_divide_is_one_line(eight_devices):
    e = eight_devices["errors"]
    assert "does not divide the 12 ensemble members" in e["ensemble"]
    assert "does not divide the 12 batch elements" in e["batch"]
    assert "needs 3 devices, but 8 are available" in e["mesh"]
    assert all("\n" not in v for v in e.values())


def test_mesh_on_one_device_and_bad_sizes():
    mesh = make_mesh()
    assert dict(mesh.shape) == {"ensemble": jax.device_count(), "batch": 1, "space": 1}
    check_divides(mesh, "ensemble", 4, "members")  # one device divides everything
    for bad in (dict(ensemble=0), dict(ensemble=-1, batch=-1), dict(ensemble=2.5)):
        with pytest.raises(ConfigError):
            make_mesh(**bad)

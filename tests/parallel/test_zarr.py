"""Data larger than memory: chunked zarr stores with CF metadata, a killed generation that resumes without
recomputing finished chunks, windows streamed with prefetching, and (in a subprocess) a training on a store larger
than a set memory limit."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

import nemic.data.zarr_store as zs
from nemic.core import RK4, AR1Noise, ensemble_rollout
from nemic.data.streaming import StreamingWindowSampler
from nemic.data.zarr_store import done_chunks, generate_ensemble, open_zarr, write_zarr
from nemic.errors import ConfigError, DataError
from nemic.models.lorenz96 import Lorenz96, Lorenz96State

MODEL = Lorenz96(F=8.0, K=8) + AR1Noise(sigma=0.3, phi=0.9, field="x")
X0 = 8.0 + 0.5 * jax.random.normal(jax.random.key(0), (8, 8))
KEYS = jax.random.split(jax.random.key(1), 8)
RUN = dict(dt=0.01, n_steps=60, save_every=10)


class Killed(Exception):
    pass


def test_killed_generation_resumes_without_recomputing(tmp_path, monkeypatch):
    calls = []  # chunks computed: each computed chunk's trajectory is brought to the host once
    real = zs.gather
    monkeypatch.setattr(zs, "gather", lambda *a, **k: calls.append(1) or real(*a, **k))

    def kill_after_two(done, total):
        if done == 2:
            raise Killed

    path = tmp_path / "ens.zarr"
    with pytest.raises(Killed):
        generate_ensemble(path, MODEL, RK4(), Lorenz96State(x=X0), keys=KEYS, chunk_members=2,
                          progress=kill_after_two, **RUN)
    assert done_chunks(path) == [0, 1] and len(calls) == 2
    with pytest.raises(DataError, match="unfinished generation"):
        open_zarr(path)
    generate_ensemble(path, MODEL, RK4(), Lorenz96State(x=X0), keys=KEYS, chunk_members=2, **RUN)
    assert len(calls) == 4  # only chunks 2 and 3 were computed by the second run
    ds = open_zarr(path)
    ref = ensemble_rollout(MODEL, RK4(), Lorenz96State(x=X0), keys=KEYS, **RUN)  # all members in one piece
    assert np.max(np.abs(ds.x.values - np.asarray(ref.states.x))) <= 1e-12
    assert ds.x.data.chunksize == (2, 7, 8)  # (member, time, k) chunks
    assert ds.member.attrs["standard_name"] == "realization" and ds.time.attrs["standard_name"] == "time"
    assert ds.attrs["Conventions"].startswith("CF")
    # a complete store is not recomputed; other settings are refused, not mixed in
    generate_ensemble(path, MODEL, RK4(), Lorenz96State(x=X0), keys=KEYS, chunk_members=2, **RUN)
    assert len(calls) == 4
    with pytest.raises(ConfigError, match="other settings"):
        generate_ensemble(path, MODEL, RK4(), Lorenz96State(x=X0 + 1.0), keys=KEYS, chunk_members=2, **RUN)
    with pytest.raises(ConfigError, match="divisor of the 8 members"):
        generate_ensemble(tmp_path / "b.zarr", MODEL, RK4(), Lorenz96State(x=X0), keys=KEYS, chunk_members=3,
                          **RUN)


def test_write_zarr_chunks_and_stream_windows_with_prefetch(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 20, 5))
    ds = xr.Dataset({"x": (("member", "time", "k"), data, {"units": "1", "long_name": "x"})},
                    coords={"time": np.arange(20) * 0.5, "member": np.arange(6)})
    path = write_zarr(ds, tmp_path / "d.zarr", chunks={"member": 2, "time": 5})
    lazy = open_zarr(path)
    assert lazy.x.data.chunksize == (2, 5, 5) and lazy.x.attrs["units"] == "1"
    with StreamingWindowSampler(path, 3, 4, seed=7, prefetch=2) as s, \
            StreamingWindowSampler(path, 3, 4, seed=7, prefetch=0) as plain:
        for it in (0, 1, 2, 5, 3):  # out of order: a prefetched batch is never handed to the wrong iteration
            b, c = s(None, it), plain(None, it)
            m, t = s.indices(it)
            want = np.stack([data[mi, ti:ti + 4] for mi, ti in zip(m, t)])
            np.testing.assert_array_equal(b["start"]["x"], want[:, 0])
            np.testing.assert_array_equal(b["target"]["x"], want[:, 1:])
            np.testing.assert_array_equal(b["t0"], t * 0.5)
            np.testing.assert_array_equal(c["target"]["x"], b["target"]["x"])
    with pytest.raises(DataError, match="too few for windows of 20 saves"):
        StreamingWindowSampler(path, 20, 4)
    with pytest.raises(DataError, match="no zarr store"):
        open_zarr(tmp_path / "missing.zarr")
    with pytest.raises(ConfigError, match="cannot chunk along 'lat'"):
        write_zarr(ds, tmp_path / "e.zarr", chunks={"lat": 2})


def test_training_streams_a_store_larger_than_the_memory_limit(tmp_path):
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "streaming_checks.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    assert r["nbytes"] > 2.5 * r["limit"]  # the data set is larger than the limit...
    assert r["peak_full"] > r["limit"]  # ...loading it whole breaks the limit (the check can fail)...
    assert r["peak_train"] < r["limit"]  # ...streaming it for training does not
    assert abs(r["F"] - 8.0) < 0.5 and abs(6.0 - 8.0) > 1.5  # the forcing is learnt from the streamed data
    assert r["loss_end"] < 0.1 * r["loss0"]
    assert r["chunks"] == [48, 100, 40] and r["attrs_F"] == 8.0 and r["member_standard_name"] == "realization"
    assert r["finite"]


def test_generation_killed_by_sigkill_resumes(tmp_path):
    """A real kill (SIGKILL, no clean-up) after at least two chunks; the rerun computes only the missing ones."""
    worker = Path(__file__).parent / "generation_worker.py"
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-u", str(worker), str(store)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        if line.startswith("done") and int(line.split()[1]) >= 2 or time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    written = done_chunks(store)
    assert 2 <= len(written) < 8
    out = subprocess.run([sys.executable, str(worker), str(store)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    first = int(lines[0].split()[1])
    computed = int([x for x in lines if x.startswith("computed")][0].split()[1])
    assert first == len(written) and computed == 8 - len(written)  # finished chunks were not recomputed
    spec = importlib.util.spec_from_file_location("generation_worker", worker)
    w = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(w)
    ref = ensemble_rollout(w.MODEL, RK4(), Lorenz96State(x=w.X0), dt=0.01, n_steps=200, save_every=10)
    assert np.max(np.abs(open_zarr(store).x.values - np.asarray(ref.states.x))) <= 1e-12

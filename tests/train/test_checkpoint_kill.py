"""A training checkpoint killed (SIGKILL) at random points while it is being rewritten is always one whole
checkpoint: weights, optimiser state and step belong together."""

import random
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest

from nemic.train.checkpoint import TrainCheckpoint

WRITER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from nemic.train.checkpoint import TrainCheckpoint
    ck = TrainCheckpoint(sys.argv[1])
    print("started", flush=True)
    for step in range(1, 100000):
        w = jnp.full((200, 200), float(step))           # weights that say which step they belong to
        ck.save(step, {"w": w}, {"m": w * 2.0}, [float(step)] * 3)
""")


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_during_checkpoint_writes_leaves_a_consistent_checkpoint(tmp_path, seed):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "train.ckpt"
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(random.Random(seed).uniform(0.5, 1.5))  # many saves of ~320 kB each happen in this time
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    like = {"w": jnp.zeros((200, 200))}
    got = TrainCheckpoint(path).load(like, {"m": jnp.zeros((200, 200))})
    step = got["step"]
    assert step >= 1
    np.testing.assert_array_equal(got["model"]["w"], step)
    np.testing.assert_array_equal(got["opt_state"]["m"], 2.0 * step)
    assert got["history"] == [float(step)] * 3
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("writer.py", "train.ckpt")]
    assert all(name.startswith(".") for name in leftovers)  # at most a temporary file, never a second checkpoint

"""Run in a subprocess by ``test_zarr.py``: ``python streaming_checks.py WORKDIR``. Generates a Lorenz-96
reference ensemble (49 MB) into a chunked zarr store, then trains the forcing F of a Lorenz-96 model on windows
streamed from it with a Python-heap limit of 16 MB (tracemalloc: NumPy buffers are counted), and prints one JSON
line. Not collected by pytest."""

import json
import resource
import sys
import tracemalloc
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, rollout  # noqa: E402
from nemic.data.streaming import StreamingWindowSampler  # noqa: E402
from nemic.data.zarr_store import generate_ensemble, open_zarr  # noqa: E402
from nemic.models.lorenz96 import Lorenz96, Lorenz96State  # noqa: E402
from nemic.train.loop import fit  # noqa: E402

LIMIT = 16 * 2**20  # bytes of Python/NumPy heap while training
N_SAVES, SAVE_EVERY, DT = 2, 5, 0.01


def loss(model, batch, key):
    def one(x0, target):
        traj = rollout(model, RK4(), Lorenz96State(x=x0), dt=DT, n_steps=N_SAVES * SAVE_EVERY,
                       save_every=SAVE_EVERY)
        return jnp.mean((traj.states.x[1:] - target) ** 2)
    return jnp.mean(jax.vmap(one)(batch["start"]["x"], batch["target"]["x"]))


def main(work: Path) -> None:
    truth = Lorenz96(F=8.0, K=40)
    x0 = 8.0 + jax.random.normal(jax.random.key(0), (192, 40))
    store = generate_ensemble(work / "l96.zarr", truth, RK4(), Lorenz96State(x=x0), dt=DT, n_steps=800 * SAVE_EVERY,
                              save_every=SAVE_EVERY, chunk_members=48, time_chunk=100, attrs=truth.to_attrs())
    ds = open_zarr(store)
    nbytes = int(ds.x.nbytes)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    with StreamingWindowSampler(store, N_SAVES, 16, seed=1, prefetch=2) as sampler:
        res = fit(Lorenz96(F=6.0, K=40), loss, sampler, optimizer=optax.adam(0.1), n_iters=40,
                  key=jax.random.key(2), progress=False)
    _, peak_train = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    full = ds.x.values  # control: the whole data set does not fit under the limit
    _, peak_full = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print("RESULT " + json.dumps({
        "nbytes": nbytes, "limit": LIMIT, "peak_train": peak_train, "peak_full": peak_full,
        "rss_growth": rss1 - rss0, "F": float(res.model.F), "loss0": res.history[0], "loss_end": res.history[-1],
        "chunks": list(ds.x.data.chunksize), "attrs_F": float(ds.attrs.get("F", np.nan)),
        "units": ds.x.attrs.get("units"), "member_standard_name": ds.member.attrs.get("standard_name"),
        "finite": bool(np.isfinite(full).all())}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""One process of a ``jax.distributed`` group on localhost, started by ``test_distributed.py``:
``python distributed_checks.py PROCESS_ID NUM_PROCESSES PORT WORKDIR``. With NUM_PROCESSES = 1 it is the
single-process reference. Writes ``WORKDIR/result<PROCESS_ID>.npz``. Not collected by pytest."""

import json
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, AR1Noise  # noqa: E402
from nemic.data.zarr_store import generate_ensemble, open_zarr  # noqa: E402
from nemic.io.runs import run_transaction  # noqa: E402
from nemic.models.lorenz96 import Lorenz96, Lorenz96State  # noqa: E402
from nemic.parallel import gather, initialize, make_mesh, sharded_ensemble_rollout  # noqa: E402
from nemic.train.loop import fit  # noqa: E402


class Regression(eqx.Module):
    x: jax.Array
    y: jax.Array
    batch_size: int = eqx.field(static=True)

    def __call__(self, key, iteration):
        idx = jax.random.randint(key, (self.batch_size,), 0, self.x.shape[0])
        return {"x": self.x[idx], "y": self.y[idx]}


def mse(model, batch, key):
    return jnp.mean((jax.vmap(model)(batch["x"]) - batch["y"]) ** 2)


def main(pid: int, n: int, port: int, work: Path) -> None:
    joined = initialize(f"127.0.0.1:{port}", n, pid, timeout=60)
    assert joined == (n > 1) and jax.process_count() == n
    model = Lorenz96(F=8.0, K=40) + AR1Noise(sigma=0.3, phi=0.9, field="x")
    x0 = 8.0 + 0.5 * jax.random.normal(jax.random.key(0), (8, 40))
    keys = jax.random.split(jax.random.key(1), 8)
    ens = sharded_ensemble_rollout(model, RK4(), Lorenz96State(x=x0), mesh=make_mesh(ensemble=-1), keys=keys,
                                   dt=0.01, n_steps=100, save_every=10)
    x = gather(ens.states.x)
    # a chunked zarr generation over the same mesh: each chunk sharded over the processes, written by process 0
    store = generate_ensemble(work / "ens.zarr", model, RK4(), Lorenz96State(x=x0), keys=keys, dt=0.01, n_steps=100,
                              save_every=10, chunk_members=4, mesh=make_mesh(ensemble=-1))
    zx = open_zarr(store).x.values  # every process reads what process 0 wrote

    kx, ky, km = jax.random.split(jax.random.key(2), 3)
    X = jax.random.normal(kx, (128, 3))
    Y = jnp.sin(X @ jnp.asarray([1.0, -2.0, 0.5]))[:, None]
    net = eqx.nn.MLP(3, 1, 8, 2, key=km)
    opts = dict(optimizer=optax.adam(1e-2), key=jax.random.key(3), progress=False,
                mesh=make_mesh(ensemble=1, batch=-1), checkpoint_every=2)
    with run_transaction(work / "out", command="distributed check") as stage:
        ckpt = stage / "checkpoints" / "fit.ckpt"
        first = fit(net, mse, Regression(X, Y, 16), n_iters=4, checkpoint=ckpt, **opts)
        # a second training resumes from the checkpoint that process 0 wrote: every process reads it
        ran = []
        second = fit(net, mse, Regression(X, Y, 16), n_iters=6, checkpoint=ckpt,
                     callback=lambda it, loss: ran.append(it), **opts)
        (stage / "who.json").write_text(json.dumps({"writer": jax.process_index()}))
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(second.model, eqx.is_array))]
    np.savez(work / f"result{pid}.npz", x=x, zx=zx, n_devices=jax.device_count(), history=np.asarray(second.history),
             iterations_run=np.asarray(ran), first_len=len(first.history), **{f"p{i}": v for i, v in enumerate(leaves)})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))

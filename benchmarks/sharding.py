"""Sharding on simulated devices: throughput of ensembles and of data-parallel training on a mesh of 8 devices
against 1, on this machine's CPU cores (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set here before
JAX starts).

    .venv/bin/python benchmarks/sharding.py [--quick]

Eight simulated devices share the same cores, so no speed-up is expected: the numbers show that the sharded
program is correct (the same results, checked here) and what the partitioning costs. Cases, float64:

* a 64-member ensemble of two-scale Lorenz-96 (K=8, J=32, RK4) through
  :func:`nemic.parallel.sharded_ensemble_rollout`, members over the ``ensemble`` axis;
* a 16-member ensemble of two-layer QG at 64^2;
* data-parallel training (:func:`nemic.train.loop.fit` with ``mesh=``) of an MLP on batches of 256, the batch over
  the ``batch`` axis (gradients summed by XLA).

Medians of ``--repeats`` runs after a compiling warm-up. Writes ``benchmarks/results/sharding.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from nemic.models.lorenz96 import TwoScaleLorenz96  # noqa: E402
from nemic.models.qg import TwoLayerQG  # noqa: E402
from nemic.parallel import gather, make_mesh, sharded_ensemble_rollout  # noqa: E402
from nemic.train.loop import fit  # noqa: E402


class Rows(eqx.Module):
    x: jax.Array
    y: jax.Array
    batch_size: int = eqx.field(static=True)

    def __call__(self, key, iteration):
        i = jax.random.randint(key, (self.batch_size,), 0, self.x.shape[0])
        return self.x[i], self.y[i]


def ensemble(mesh, model, s0, dt, steps, repeats):
    run = lambda: sharded_ensemble_rollout(model, model.default_stepper(), s0, mesh=mesh, dt=dt,  # noqa: E731
                                           n_steps=steps, save_every=steps).final
    t = time.perf_counter()
    first = jax.block_until_ready(run())
    return time.perf_counter() - t, timed(run, repeats), gather(first)


def training(mesh, n_iters, batch):
    kx, km = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (4096, 16))
    Y = jnp.tanh(X @ jnp.linspace(-1, 1, 16))[:, None]
    net = eqx.nn.MLP(16, 1, 128, 3, key=km)
    loss = lambda m, b, k: jnp.mean((jax.vmap(m)(b[0]) - b[1]) ** 2)  # noqa: E731
    t = time.perf_counter()
    res = fit(net, loss, Rows(X, Y, batch), optimizer=optax.adam(1e-3), n_iters=n_iters, key=jax.random.key(1),
              progress=False, mesh=mesh)
    return time.perf_counter() - t, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sharding.json"))
    args = ap.parse_args()
    q = args.quick
    n_dev = jax.device_count()
    meshes = {1: make_mesh(devices=jax.devices()[:1]), n_dev: make_mesh()}
    out = {"n_devices": n_dev, "cores": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
           "quick": q, "cases": {}}
    print(f"{n_dev} simulated devices on {os.cpu_count()} cores")

    l96 = TwoScaleLorenz96(K=8, J=32)
    keys = jax.random.split(jax.random.key(0), 64)
    s_l96 = jax.vmap(lambda k: l96.initial_state(k))(keys)
    qg = TwoLayerQG(nx=32 if q else 64)
    s_qg = jax.vmap(lambda k: qg.initial_state(k))(jax.random.split(jax.random.key(1), 16))
    for name, model, s0, dt, steps in (("two-scale L96 x64", l96, s_l96, 0.001, 100 if q else 1000),
                                       ("QG 64^2 x16" if not q else "QG 32^2 x16", qg, s_qg, 3600.0,
                                        10 if q else 100)):
        res, finals = {}, {}
        for d, mesh in meshes.items():
            c, t, finals[d] = ensemble(mesh, model, s0, dt, steps, args.repeats)
            res[d] = {"compile_s": c, "run_s": t, "member_steps_per_s": 64 * steps / t if "L96" in name
                      else 16 * steps / t}
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(finals[1]),
                                                                jax.tree_util.tree_leaves(finals[n_dev])))
        res["ratio_8_over_1"] = res[1]["run_s"] / res[n_dev]["run_s"]
        res["max_abs_difference"] = diff
        out["cases"][name] = res
        print(f"{name:22s} 1 device {res[1]['run_s'] * 1e3:9.1f} ms   {n_dev} devices "
              f"{res[n_dev]['run_s'] * 1e3:9.1f} ms   speed-up {res['ratio_8_over_1']:5.2f}   "
              f"compile {res[1]['compile_s']:.1f} / {res[n_dev]['compile_s']:.1f} s   max |diff| {diff:.1e}")

    n_iters, batch = (20, 64) if q else (200, 256)
    train = {}
    for d, mesh in meshes.items():
        training(mesh, 2, batch)  # compile the sampler and the loss once
        wall, r = training(mesh, n_iters, batch)
        train[d] = {"wall_s": wall, "iters_per_s": n_iters / wall, "final_loss": r.history[-1]}
    train["ratio_8_over_1"] = train[n_dev]["iters_per_s"] / train[1]["iters_per_s"]
    train["loss_difference"] = abs(train[1]["final_loss"] - train[n_dev]["final_loss"])
    out["cases"]["data-parallel MLP training"] = train
    print(f"{'MLP training, batch ' + str(batch):22s} 1 device {train[1]['iters_per_s']:8.1f} it/s   {n_dev} devices "
          f"{train[n_dev]['iters_per_s']:8.1f} it/s   speed-up {train['ratio_8_over_1']:5.2f}   "
          f"|loss diff| {train['loss_difference']:.1e}  (includes each fit's compile)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

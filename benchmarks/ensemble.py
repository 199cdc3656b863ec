"""Ensembles: the cost per member of a 64-member ``vmap`` ensemble against one run, side by side in one run.

    .venv/bin/python benchmarks/ensemble.py [--quick] [--members 64]

Cases (float64, CPU): two-scale Lorenz-96 (K=8, J=32, RK4, dt=0.001), the same with additive AR(1) noise
(members differ by key only), and two-layer QG at 64^2 (pyqg's filtered AB3, dt=3600 s). For each: the median
time of one jitted run of n steps, of the 64-member :func:`nemic.core.ensemble_rollout`, and the ratio
``(ensemble time / members) / single-run time`` (the goal of issue 10: at most 0.5). Compile times are excluded
and reported separately. Writes ``benchmarks/results/ensemble.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from nemic.core import AR1Noise, ensemble_rollout, rollout  # noqa: E402
from nemic.models.lorenz96 import TwoScaleLorenz96  # noqa: E402
from nemic.models.qg import TwoLayerQG  # noqa: E402



def measure(name, model, state0, members_state0, keys, dt, n_steps, repeats, batch_size=None):
    stepper = model.default_stepper() if hasattr(model, "default_stepper") else model.core.default_stepper()
    key0 = None if keys is None else keys[0]
    single = jax.jit(lambda s, k: rollout(model, stepper, s, dt=dt, n_steps=n_steps, save_every=n_steps,
                                          key=k).final)
    ens = jax.jit(lambda s, k: ensemble_rollout(model, stepper, s, keys=k, dt=dt, n_steps=n_steps,
                                                save_every=n_steps, batch_size=batch_size).final)
    t = time.perf_counter()
    jax.block_until_ready(single(state0, key0))
    c1 = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(ens(members_state0, keys))
    c2 = time.perf_counter() - t
    t1 = timed(lambda: single(state0, key0), repeats)
    tm = timed(lambda: ens(members_state0, keys), repeats)
    m = jax.tree_util.tree_leaves(members_state0)[0].shape[0] if keys is None else len(keys)
    ratio = tm / m / t1
    print(f"{name:34s} single {1e3 * t1:9.1f} ms   ensemble({m}) {1e3 * tm:10.1f} ms   "
          f"per member / single = {ratio:5.3f}")
    return {"batch_size": batch_size, "single_s": t1, "ensemble_s": tm, "members": m, "n_steps": n_steps, "per_member_over_single": ratio,
            "compile_single_s": c1, "compile_ensemble_s": c2}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--members", type=int, default=64)
    args = ap.parse_args()
    repeats = 3 if args.quick else 5
    M = args.members
    out = {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
           "cpus": os.cpu_count(), "cases": {}}

    l96 = TwoScaleLorenz96(K=8, J=32)
    keys = jax.random.split(jax.random.key(1), M)
    s0 = l96.initial_state(jax.random.key(0))
    ens0 = jax.vmap(lambda k: l96.initial_state(k))(keys)
    n = 500 if args.quick else 2000
    out["cases"]["lorenz96_two_scale"] = measure("Lorenz-96 two-scale (K=8, J=32)", l96, s0, ens0, None, 0.001, n,
                                                 repeats)
    noisy = l96 + AR1Noise(0.5, 0.95, field="x")
    out["cases"]["lorenz96_ar1"] = measure("Lorenz-96 two-scale + AR(1) noise", noisy, s0, s0, keys, 0.001, n,
                                           repeats)

    qg = TwoLayerQG(nx=64)
    q0 = qg.initial_state(key=jax.random.key(0))
    qens = jax.vmap(lambda k: qg.initial_state(key=k))(keys)
    nq = 50 if args.quick else 200
    out["cases"]["qg_64"] = measure("two-layer QG 64^2 (all vectorised)", qg, q0, qens, None, 3600.0, nq, repeats)
    out["cases"]["qg_64_sequential"] = measure("two-layer QG 64^2 (batch_size=1)", qg, q0, qens, None, 3600.0, nq,
                                               repeats, batch_size=1)
    out["cases"]["qg_64_batch8"] = measure("two-layer QG 64^2 (batch_size=8)", qg, q0, qens, None, 3600.0, nq,
                                           repeats, batch_size=8)

    path = Path(__file__).parent / "results" / "ensemble.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

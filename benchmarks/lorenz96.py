"""Benchmark of the two-scale Lorenz-96 model (K=8, J=32, RK4, dt=0.001), run by hand:

    .venv/bin/python benchmarks/lorenz96.py [--quick]

Measures, side by side in one run (medians of repeats, compile time excluded and reported separately):
  1. steps per second of one run: nemic (jitted lax.scan) against a plain NumPy implementation;
  2. an ensemble of 64 members: nemic ``vmap`` against NumPy vectorised over the ensemble axis;
  3. the time ratio gradient / forward for a 1,000-step rollout, plain and with nested checkpointing;
  4. the memory of a gradient through 10,000 steps with and without checkpointing (XLA's compiled temporary
     buffer size, the number the allocator must provide; plus the process's peak RSS growth).
Writes ``benchmarks/results/lorenz96.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from nemic.core import RK4, rollout  # noqa: E402
from nemic.models.lorenz96 import TwoScaleLorenz96  # noqa: E402

K, J, H, B, C, F, DT = 8, 32, 1.0, 10.0, 10.0, 20.0, 0.001


def numpy_tendency(x, y):
    """Plain NumPy two-scale Lorenz-96 (Wilks 2005); x (..., K), y (..., K, J)."""
    adv = -np.roll(x, 1, -1) * (np.roll(x, 2, -1) - np.roll(x, -1, -1))
    dx = adv - x + F - H * C / B * y.sum(-1)
    ring = y.reshape(y.shape[:-2] + (K * J,))
    ady = -C * B * np.roll(ring, -1, -1) * (np.roll(ring, -2, -1) - np.roll(ring, 1, -1))
    dy = ady.reshape(y.shape) - C * y + H * C / B * x[..., None]
    return dx, dy


def numpy_rk4(x, y, n):
    for _ in range(n):
        k1 = numpy_tendency(x, y)
        k2 = numpy_tendency(x + DT / 2 * k1[0], y + DT / 2 * k1[1])
        k3 = numpy_tendency(x + DT / 2 * k2[0], y + DT / 2 * k2[1])
        k4 = numpy_tendency(x + DT * k3[0], y + DT * k3[1])
        x = x + DT / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        y = y + DT / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return x, y



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = ap.parse_args()
    n_steps = 2000 if args.quick else 10000
    n_np = 200 if args.quick else 1000
    repeats = 3 if args.quick else 5

    model = TwoScaleLorenz96(h=H, b=B, c=C, F=F)
    s0 = model.initial_state(jax.random.PRNGKey(0), K=K, J=J)
    results: dict = {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
                     "devices": [str(d) for d in jax.devices()], "K": K, "J": J, "dt": DT}

    # 1. single run
    run = jax.jit(lambda s: rollout(model, RK4(), s, dt=DT, n_steps=n_steps, save_every=n_steps).final)
    t = time.perf_counter()
    jax.block_until_ready(run(s0))
    compile_single = time.perf_counter() - t
    t_nemic = timed(lambda: run(s0), repeats)
    x0, y0 = np.asarray(s0.x), np.asarray(s0.y)
    t_np = timed(lambda: numpy_rk4(x0, y0, n_np), repeats)
    xs, ys = numpy_rk4(x0, y0, 50)
    ref = jax.jit(lambda s: rollout(model, RK4(), s, dt=DT, n_steps=50, save_every=50).final)(s0)
    agree = float(np.abs(xs - np.asarray(ref.x)).max())
    single = {"nemic_steps_per_s": n_steps / t_nemic, "numpy_steps_per_s": n_np / t_np,
              "speedup": (n_steps / t_nemic) / (n_np / t_np), "compile_s": compile_single,
              "max_abs_diff_after_50_steps": agree}
    results["single_run"] = single

    # 2. ensemble of 64
    keys = jax.random.split(jax.random.PRNGKey(1), 64)
    ens0 = jax.vmap(lambda k: model.initial_state(k, K=K, J=J))(keys)
    n_ens = n_steps // 5
    ens_run = jax.jit(jax.vmap(lambda s: rollout(model, RK4(), s, dt=DT, n_steps=n_ens, save_every=n_ens).final))
    jax.block_until_ready(ens_run(ens0))
    t_ens = timed(lambda: ens_run(ens0), repeats)
    ex, ey = np.asarray(ens0.x), np.asarray(ens0.y)
    t_np_ens = timed(lambda: numpy_rk4(ex, ey, n_np // 5), repeats)
    results["ensemble_64"] = {"nemic_member_steps_per_s": 64 * n_ens / t_ens,
                              "numpy_member_steps_per_s": 64 * (n_np // 5) / t_np_ens,
                              "speedup": (64 * n_ens / t_ens) / (64 * (n_np // 5) / t_np_ens)}

    # 3. gradient / forward for 1,000 steps (loss: mean of X over the saved trajectory)
    def loss(F_, s, checkpoint):
        m = TwoScaleLorenz96(h=H, b=B, c=C, F=F_)
        return jnp.mean(rollout(m, RK4(), s, dt=DT, n_steps=1000, save_every=10, checkpoint=checkpoint).states.x)

    ratio = {}
    for ck in (False, True):
        fwd = jax.jit(lambda F_, s: loss(F_, s, ck))
        grd = jax.jit(jax.value_and_grad(lambda F_, s: loss(F_, s, ck)))
        jax.block_until_ready(fwd(F, s0))
        jax.block_until_ready(grd(F, s0))
        tf = timed(lambda: fwd(F, s0), repeats)
        tg = timed(lambda: grd(F, s0), repeats)
        ratio["checkpointed" if ck else "plain"] = {"forward_ms": 1e3 * tf, "value_and_grad_ms": 1e3 * tg,
                                                    "ratio": tg / tf}
    results["grad_over_forward_1000_steps"] = ratio

    # 4. memory of a gradient through 10,000 steps (final-state loss)
    def final_loss(F_, s, checkpoint):
        m = TwoScaleLorenz96(h=H, b=B, c=C, F=F_)
        return jnp.sum(rollout(m, RK4(), s, dt=DT, n_steps=10000, save_every=10000, checkpoint=checkpoint)
                       .final.x)

    mem = {}
    for ck in (False, True):
        g = jax.jit(jax.grad(lambda F_, s: final_loss(F_, s, ck)))
        compiled = g.lower(jnp.asarray(F), s0).compile()
        ma = compiled.memory_analysis()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        val = float(compiled(jnp.asarray(F), s0))
        dt_ = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mem["checkpointed" if ck else "plain"] = {"xla_temp_MiB": ma.temp_size_in_bytes / 2 ** 20,
                                                  "peak_rss_growth_MiB": (rss1 - rss0) / 1024,
                                                  "seconds": dt_, "dloss_dF": val}
    mem["temp_ratio_plain_over_checkpointed"] = (mem["plain"]["xla_temp_MiB"]
                                                 / max(mem["checkpointed"]["xla_temp_MiB"], 1e-9))
    results["grad_memory_10000_steps"] = mem

    from rich.console import Console
    from rich.table import Table

    tab = Table(title="Lorenz-96 two-scale (K=8, J=32, RK4) - nemic vs NumPy, same run")
    for col in ("measure", "nemic", "peer / reference", "ratio"):
        tab.add_column(col, justify="right")
    tab.add_row("single run, steps/s", f"{single['nemic_steps_per_s']:.0f}", f"{single['numpy_steps_per_s']:.0f}",
                f"{single['speedup']:.1f}x")
    e = results["ensemble_64"]
    tab.add_row("ensemble 64 (vmap), member-steps/s", f"{e['nemic_member_steps_per_s']:.0f}",
                f"{e['numpy_member_steps_per_s']:.0f}", f"{e['speedup']:.1f}x")
    for k, v in ratio.items():
        tab.add_row(f"grad/forward, 1000 steps ({k})", f"{v['value_and_grad_ms']:.1f} ms",
                    f"{v['forward_ms']:.1f} ms", f"{v['ratio']:.2f}")
    tab.add_row("grad through 10,000 steps, XLA temp", f"{mem['checkpointed']['xla_temp_MiB']:.2f} MiB (ckpt)",
                f"{mem['plain']['xla_temp_MiB']:.2f} MiB (plain)", f"{mem['temp_ratio_plain_over_checkpointed']:.0f}x")
    Console().print(tab)
    print(f"compile time (single run): {compile_single:.2f} s; nemic vs numpy after 50 steps: max |dX| = {agree:.1e}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "lorenz96.json").write_text(json.dumps(results, indent=2))
    print(f"written {out / 'lorenz96.json'}")


if __name__ == "__main__":
    main()

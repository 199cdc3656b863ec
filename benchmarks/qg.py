"""Benchmark of the two-layer QG model against pyqg-jax (measured in the same run when installed).

Measures (CPU or whatever JAX device is default):
  * ms per step at nx = 64 and 256, float64 and float32 (dt = 3600 s, eddy configuration, AB3 + filter), for
    nemic and pyqg-jax; compile time reported separately;
  * an ensemble of 8 members at nx = 64 via ``vmap`` (ms per member-step);
  * gradient / forward time ratio through 100 and 1000 steps with nested checkpointing (nemic), and the
    compiled program's peak temporary memory from XLA's memory analysis.

Usage: ``python benchmarks/qg.py [--quick] [--repeats N]``; writes ``benchmarks/results/qg.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nemic.core.rollout import rollout  # noqa: E402
from nemic.models.qg import QGState, get_config  # noqa: E402

DT = 3600.0


def timed(fn, *args, repeats=5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s


def initial_q(m, dtype):
    key = jax.random.key(0)
    q = jax.random.normal(key, (2, m.ny, m.nx))
    _, _, wv2 = m.grid()
    q = m.ifft(m.fft(q) * jnp.exp(-wv2 * (5e4) ** 2 / 2))
    return (q / jnp.std(q) * 3e-6).astype(dtype)


def nemic_runner(m, n):
    step = m.stepper()
    return jax.jit(lambda q: rollout(m, step, QGState(q=q), dt=DT, n_steps=n, save_every=n,
                                     detect_blowup=False).final.q)


def pyqg_runner(m, n, dtype):
    import pyqg_jax

    prec = pyqg_jax.state.Precision.DOUBLE if dtype == jnp.float64 else pyqg_jax.state.Precision.SINGLE
    pm = pyqg_jax.qg_model.QGModel(nx=m.nx, rek=float(m.rek), beta=float(m.beta), delta=float(m.delta),
                                   precision=prec)
    sm = pyqg_jax.steppers.SteppedModel(pm, pyqg_jax.steppers.AB3Stepper(dt=DT))

    def run(q):
        s = sm.initialize_stepper_state(pm.create_initial_state(jax.random.key(1)).update(q=q))
        s = jax.lax.fori_loop(0, n, lambda i, c: sm.step_model(c), s)
        return s.state.q

    return jax.jit(run)


def peak_temp_bytes(fn, *args):
    try:
        ma = jax.jit(fn).lower(*args).compile().memory_analysis()
        return int(ma.temp_size_in_bytes + ma.output_size_in_bytes + ma.argument_size_in_bytes)
    except Exception:  # noqa: BLE001 (not every backend reports it)
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-grad-256", action="store_true")
    args = ap.parse_args()
    try:
        import pyqg_jax  # noqa: F401
        have_peer = True
    except ImportError:
        have_peer = False

    rows, results = [], {"device": str(jax.devices()[0]), "platform": platform.platform(),
                         "jax": jax.__version__, "dt": DT, "per_step": [], "ensemble": [], "gradient": []}
    for nx, n in ((64, 200 if args.quick else 1000), (256, 20 if args.quick else 100)):
        m = get_config("eddy", nx=nx)
        for dtype in (jnp.float64, jnp.float32):
            q0 = initial_q(m, dtype)
            t, c = timed(nemic_runner(m, n), q0, repeats=args.repeats)
            entry = {"nx": nx, "dtype": jnp.dtype(dtype).name, "steps": n, "nemic_ms": 1e3 * t / n,
                     "nemic_compile_s": c}
            if have_peer:
                tp, cp = timed(pyqg_runner(m, n, dtype), q0, repeats=args.repeats)
                entry.update(pyqg_jax_ms=1e3 * tp / n, pyqg_jax_compile_s=cp, speedup=tp / t)
            results["per_step"].append(entry)
            rows.append(entry)
            print(entry, flush=True)

    # ensemble of 8 at nx = 64 via vmap
    m = get_config("eddy", nx=64)
    n = 100 if args.quick else 500
    q0 = initial_q(m, jnp.float64)
    qs = jnp.stack([q0 * (1 + 0.01 * i) for i in range(8)])
    run = nemic_runner(m, n)
    t_ens, c_ens = timed(jax.jit(jax.vmap(run)), qs, repeats=args.repeats)
    t_one, _ = timed(run, q0, repeats=args.repeats)
    e = {"nx": 64, "members": 8, "steps": n, "ms_per_member_step": 1e3 * t_ens / n / 8,
         "single_ms_per_step": 1e3 * t_one / n, "compile_s": c_ens}
    results["ensemble"].append(e)
    print(e, flush=True)

    # gradient / forward ratio with checkpointing
    for nx in (64, 256):
        if nx == 256 and args.skip_grad_256:
            continue
        m = get_config("eddy", nx=nx)
        q0 = initial_q(m, jnp.float64)
        for n in ((100,) if args.quick else (100, 1000)):
            def fwd(q, _n=n, _m=m):
                return jnp.sum(rollout(_m, _m.stepper(), QGState(q=q), dt=DT, n_steps=_n, save_every=_n,
                                       checkpoint=True, detect_blowup=False).final.q ** 2)

            fwd_j = jax.jit(fwd)
            grad_j = jax.jit(jax.grad(fwd))
            tf, _ = timed(fwd_j, q0, repeats=max(1, args.repeats // 2))
            tg, cg = timed(grad_j, q0, repeats=max(1, args.repeats // 2))
            g = {"nx": nx, "steps": n, "forward_s": tf, "grad_s": tg, "ratio": tg / tf, "grad_compile_s": cg,
                 "grad_peak_bytes": peak_temp_bytes(jax.grad(fwd), q0),
                 "grad_peak_bytes_no_checkpoint": peak_temp_bytes(
                     jax.grad(lambda q, _n=n, _m=m: jnp.sum(rollout(
                         _m, _m.stepper(), QGState(q=q), dt=DT, n_steps=_n, save_every=_n,
                         detect_blowup=False).final.q ** 2)), q0)}
            results["gradient"].append(g)
            print(g, flush=True)

    print("\n| nx | dtype | nemic ms/step | pyqg-jax ms/step | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nx']} | {r['dtype']} | {r['nemic_ms']:.3f} | {r.get('pyqg_jax_ms', float('nan')):.3f} | "
              f"{r.get('speedup', float('nan')):.2f} |")
    print(f"\nensemble of 8 at nx=64: {e['ms_per_member_step']:.3f} ms per member-step "
          f"(single run {e['single_ms_per_step']:.3f} ms/step)")
    print("\n| nx | steps | grad/forward | peak MiB (checkpointed) | peak MiB (plain) |")
    print("|---|---|---|---|---|")
    for g in results["gradient"]:
        mb = lambda b: float("nan") if b is None else b / 2**20  # noqa: E731
        print(f"| {g['nx']} | {g['steps']} | {g['ratio']:.2f} | {mb(g['grad_peak_bytes']):.1f} | "
              f"{mb(g['grad_peak_bytes_no_checkpoint']):.1f} |")
    out = Path(__file__).parent / "results" / "qg.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""GPU benchmark: steps per second of the models, ensembles and training steps that nemic runs at scale.

    .venv/bin/python benchmarks/gpu.py            # full sizes (< 8 min on one H200)
    .venv/bin/python benchmarks/gpu.py --quick    # tiny sizes: checks that every case runs, on a CPU too

Prints one table and writes ``benchmarks/results/gpu.json`` (``--out``). Every time is the median of
``--repeats`` jitted calls after a compiling warm-up (compile time reported separately).

Cases:

* two-layer QG (:class:`nemic.models.qg.TwoLayerQG`, pyqg's filtered AB3) at 512^2 and 1024^2, float32 and float64,
  one run and a 64-member ``ensemble_rollout``: steps/s (member-steps/s for ensembles) and the fraction of the
  memory-bandwidth roofline. Bytes moved per step are an estimate from the sizes: a QG step does ten real 2-D
  FFTs of ``N^2`` points (``docs/core.md``), each counted as two read+write passes over the field (4 N^2 words),
  and about 30 elementwise passes over an ``N^2`` field (PV inversion, velocities, fluxes, AB3 update, filter):
  ``70 N^2`` words of 4 (float32) or 8 (float64) bytes per member and step. The fraction is
  ``bytes/step x steps/s / peak bandwidth``; the peak is a constant per device kind (:data:`PEAK_BANDWIDTH`,
  from the vendors' data sheets) or ``--bandwidth``. A fraction near 1 means the step is memory-bound and
  close to the hardware's limit; the estimate ignores caches, so on a CPU it can exceed 1.
* Lorenz-96 ensembles of 4096 members: two-scale (K=8, J=32, RK4), float32 and float64.
* one training step (:func:`nemic.train.loop.make_step`, Adam) of the QG CNN closure
  (:class:`nemic.processes.qg_closures.CNNClosure` with the benchmark FCNN) on a batch of 64 PV fields of 64^2,
  and of the downscaling U-Net (:class:`nemic.nn.unet.SuperResolutionUNet`, x8) on 32 patches of 128^2.
* the global atmosphere step (:class:`nemic.models.atmosphere.PrimitiveEquations`, T21 L8, float32) when that
  package is installed (``--quick`` skips it unless ``--atmosphere``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

jax.config.update("jax_enable_x64", True)

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from nemic.core import ensemble_rollout, rollout  # noqa: E402
from nemic.models.lorenz96 import TwoScaleLorenz96  # noqa: E402
from nemic.models.qg import TwoLayerQG  # noqa: E402
from nemic.nn.conv import CircularCNN  # noqa: E402
from nemic.nn.unet import SuperResolutionUNet  # noqa: E402
from nemic.processes.qg_closures import CNNClosure  # noqa: E402
from nemic.train.loop import make_step  # noqa: E402

#: peak memory bandwidth in bytes/s by device kind (NVIDIA data sheets: H200 SXM 4.8 TB/s HBM3e, H100 SXM
#: 3.35 TB/s, A100 80GB SXM 2.039 TB/s, L40S 864 GB/s)
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.039e12, "L40S": 0.864e12}
#: words moved per grid point and step of two-layer QG (see the module docs)
QG_WORDS_PER_POINT = 70


def peak_bandwidth(override: float | None) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_BANDWIDTH.items() if k in kind), None)


def cast(tree, dtype):
    """Every floating (complex) leaf of ``tree`` in ``dtype`` (its complex counterpart)."""
    cdtype = jnp.complex64 if dtype == jnp.float32 else jnp.complex128

    def f(x):
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.complexfloating):
            return x.astype(cdtype)
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x
    return jax.tree_util.tree_map(f, tree)


def time_call(fn, args, repeats):
    """(compile + first call [s], median call [s])."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    return first, timed(lambda: fn(*args), repeats)


def qg_case(n, dtype, members, steps, repeats, bandwidth):
    model = cast(TwoLayerQG(nx=n), dtype)
    stepper = cast(model.default_stepper(), dtype)
    dt = 3600.0 * 64 / n
    s0 = cast(model.initial_state(jax.random.key(0)), dtype)
    if members == 1:
        fn = eqx.filter_jit(lambda m, s: rollout(m, stepper, s, dt=dt, n_steps=steps, save_every=steps).final)
        args = (model, s0)
    else:
        s0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (members,) + x.shape) * (
            1 + 1e-3 * jnp.arange(members).reshape((members,) + (1,) * x.ndim)).astype(x.dtype), s0)
        fn = eqx.filter_jit(lambda m, s: ensemble_rollout(m, stepper, s, dt=dt, n_steps=steps,
                                                          save_every=steps).final)
        args = (model, s0)
    compile_s, t = time_call(fn, args, repeats)
    out_dtype = str(jax.tree_util.tree_leaves(eqx.filter_eval_shape(fn, *args))[0].dtype)
    rate = steps * members / t
    size = jnp.dtype(dtype).itemsize
    bytes_step = QG_WORDS_PER_POINT * n * n * size
    return {"case": f"QG {n}^2 {jnp.dtype(dtype).name}" + (f" x{members}" if members > 1 else ""),
            "unit": "member-steps/s" if members > 1 else "steps/s", "rate": rate, "compile_s": compile_s,
            "bytes_per_step": bytes_step, "state_dtype": out_dtype,
            "roofline_fraction": None if bandwidth is None else bytes_step * rate / bandwidth}


def l96_case(members, dtype, steps, repeats):
    model = cast(TwoScaleLorenz96(K=8, J=32), dtype)
    s0 = model.initial_state(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), members)
    s0 = cast(jax.vmap(lambda k: model.initial_state(k))(keys), dtype)
    fn = eqx.filter_jit(lambda m, s: ensemble_rollout(m, m.default_stepper(), s, dt=0.001, n_steps=steps,
                                                      save_every=steps).final)
    compile_s, t = time_call(fn, (model, s0), repeats)
    return {"case": f"two-scale L96 x{members} {jnp.dtype(dtype).name}", "unit": "member-steps/s",
            "rate": steps * members / t, "compile_s": compile_s}


def train_case(name, net, x, y, repeats):
    loss = lambda m, b, k: jnp.mean((jax.vmap(m)(b[0]) - b[1]) ** 2)  # noqa: E731
    opt = optax.adam(1e-4)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    step = make_step(loss, opt)
    args = (params, static, opt.init(params), None, (x, y), jax.random.key(0))
    compile_s, t = time_call(lambda *a: step(*a)[0], args, repeats)
    return {"case": f"train step: {name}, batch {x.shape[0]}", "unit": "steps/s", "rate": 1.0 / t,
            "compile_s": compile_s}


def atmosphere_case(steps, repeats):
    from nemic.models.atmosphere import PrimitiveEquations  # optional: the global atmosphere may be absent

    model = PrimitiveEquations(21, 8)
    state = cast(model.initial_state(jax.random.key(0), perturbation=5e3), jnp.float32)
    stepper = model.default_stepper()
    fn = eqx.filter_jit(lambda p, s: rollout(p, stepper, s, dt=model.dt, n_steps=steps, save_every=steps).final)
    compile_s, t = time_call(fn, (model, state), repeats)
    return {"case": "atmosphere T21 L8 float32", "unit": "steps/s", "rate": steps / t, "compile_s": compile_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a check that runs on a CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bandwidth", type=float, default=None, help="peak memory bandwidth, bytes/s")
    ap.add_argument("--atmosphere", action="store_true", help="also the atmosphere with --quick")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.json"))
    args = ap.parse_args()
    q = args.quick
    bw = peak_bandwidth(args.bandwidth)
    sizes = (32, 64) if q else (512, 1024)
    members, l96_members = (4, 64) if q else (64, 4096)
    steps_qg, steps_l96 = (4, 20) if q else (20, 200)
    rows = []

    def run(fn, *a):
        try:
            rows.append(fn(*a))
        except Exception as e:  # noqa: BLE001 (one failing case must not hide the others' numbers)
            rows.append({"case": f"{fn.__name__}{a[:2]}", "error": f"{type(e).__name__}: {str(e)[:200]}"})
        r = rows[-1]
        if "error" in r:
            print(f"{r['case']:38s} skipped: {r['error']}", flush=True)
        else:
            frac = r.get("roofline_fraction")
            print(f"{r['case']:38s} {r['rate']:14.4g} {r['unit']:15s} compile {r['compile_s']:6.1f} s"
                  + (f"   roofline {frac:6.3f}" if frac is not None else ""), flush=True)

    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}   peak bandwidth: "
          f"{'unknown' if bw is None else f'{bw / 1e12:.2f} TB/s'}")
    for n in sizes:
        for dtype in (jnp.float32, jnp.float64):
            run(qg_case, n, dtype, 1, steps_qg, args.repeats, bw)
            run(qg_case, n, dtype, members, steps_qg, args.repeats, bw)
    for dtype in (jnp.float32, jnp.float64):
        run(l96_case, l96_members, dtype, steps_l96, args.repeats)
    g, b = (32, 4) if q else (64, 64)
    widths = (8, 8) if q else (128, 64, 32, 32, 32, 32, 32)
    net = CNNClosure(CircularCNN(2, 2, widths=widths, key=jax.random.key(2)), [1.0, 1.0], [1.0, 1.0]).net
    x = jax.random.normal(jax.random.key(3), (b, 2, g, g), jnp.float32)
    run(train_case, "QG CNN closure", cast(net, jnp.float32), x, x, args.repeats)
    f, b, w = (64, 2, 8) if q else (128, 32, 32)
    unet = cast(SuperResolutionUNet(1, 1, factor=8, width=w, depth=2 if q else 3, key=jax.random.key(4)),
                jnp.float32)
    xc = jax.random.uniform(jax.random.key(5), (b, 1, f // 8, f // 8), jnp.float32)
    yf = jax.random.uniform(jax.random.key(6), (b, 1, f, f), jnp.float32)
    run(train_case, "downscaling U-Net x8", unet, xc, yf, args.repeats)
    if not q or args.atmosphere:
        run(atmosphere_case, 4 if q else 24, args.repeats)
    out = {"device": jax.devices()[0].device_kind, "n_devices": jax.device_count(), "quick": q,
           "peak_bandwidth": bw, "words_per_point_qg": QG_WORDS_PER_POINT, "platform": platform.platform(),
           "jax": jax.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all("error" not in r or "atmosphere" in r["case"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

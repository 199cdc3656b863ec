"""Benchmark: wall time per simulated year of the diffusive EBM, nemic vs climlab, at 90, 180 and 360 latitudes.

Both models run the same configuration (climlab's ``EBM`` defaults, its latitude grid, a timestep of 1/90 year,
semi-implicit Euler) pinned to one CPU core, in the same process. nemic is jit-compiled (compile time reported
separately) and runs in float64; timings are medians of several repeats after a warm-up.

    .venv/bin/python benchmarks/ebm.py            # writes benchmarks/results/ebm.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
try:  # one core for both models
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
except (AttributeError, OSError):
    pass

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from nemic.core.rollout import rollout  # noqa: E402
from nemic.models.ebm import SECONDS_PER_YEAR, DiffusiveEBM  # noqa: E402


def final_Ts(m, s, years):
    """Final surface temperature after ``years`` at the model's default timestep (1/90 year) and stepper."""
    n = int(round(years * SECONDS_PER_YEAR / m.default_timestep))
    return rollout(m, m.default_stepper(), s, dt=m.default_timestep, n_steps=n, save_every=n).final.Ts


def import_climlab():
    """climlab (the peer), or None when it is not installed (``pip install -e .[bench]``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import climlab
        except ImportError:
            return None
    return climlab


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_nemic(num_lat, years, repeats=5):
    m = DiffusiveEBM(num_lat, grid="lat")
    n_steps = int(round(years * 90))
    run = eqx.filter_jit(lambda m, s: final_Ts(m, s, years))
    s0 = m.initial_state()
    t0 = time.perf_counter()
    run(m, s0).block_until_ready()
    compile_s = time.perf_counter() - t0
    t = median_time(lambda: run(m, s0).block_until_ready(), repeats)
    return {"per_year_s": t / years, "per_step_s": t / n_steps, "compile_s": compile_s, "years": years}


def bench_nemic_gradient(num_lat, years, repeats=3):
    m = DiffusiveEBM(num_lat, grid="lat", albedo_width=1.0)
    s0 = m.initial_state()
    loss = eqx.filter_jit(jax.grad(lambda D: final_Ts(m.with_params(D=D), s0, years).mean()))
    loss(0.555).block_until_ready()
    t = median_time(lambda: loss(0.555).block_until_ready(), repeats)
    return {"grad_per_year_s": t / years}


def bench_climlab(climlab, num_lat, years, repeats=3):
    def one():
        c = climlab.EBM(num_lat=num_lat)
        c.integrate_years(years, verbose=False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one()  # warm-up
        t = median_time(one, repeats)
    c = climlab.EBM(num_lat=num_lat)
    return {"per_year_s": t / years, "per_step_s": t / (years * SECONDS_PER_YEAR / c.timestep), "years": years}


def main():
    climlab = import_climlab()
    rows = []
    for n in (90, 180, 360, 720, 1440):
        r = {"num_lat": n, "nemic": bench_nemic(n, 200.0), **bench_nemic_gradient(n, 10.0)}
        if climlab is not None:  # climlab's dense solve gets slow beyond 360: time fewer steps there
            r["climlab"] = bench_climlab(climlab, n, 2.0 if n <= 360 else 0.1, repeats=3 if n <= 360 else 1)
            r["speedup_per_step"] = r["climlab"]["per_step_s"] / r["nemic"]["per_step_s"]
        rows.append(r)
    thousand = bench_nemic(90, 1000.0, repeats=3)
    ns = np.array([r["num_lat"] for r in rows], float)
    slope = {}
    for name in ("nemic", "climlab") if climlab is not None else ("nemic",):
        t = np.log([r[name]["per_year_s"] for r in rows])
        slope[f"{name}_90_360"] = float(np.polyfit(np.log(ns[:3]), t[:3], 1)[0])
        slope[f"{name}_360_1440"] = float(np.polyfit(np.log(ns[2:]), t[2:], 1)[0])

    print(f"{'num_lat':>8} {'nemic s/yr':>12} {'compile s':>10} {'grad s/yr':>10} {'climlab s/yr':>13} "
          f"{'speedup':>8}")
    for r in rows:
        cl = r.get("climlab", {}).get("per_year_s", float("nan"))
        print(f"{r['num_lat']:>8} {r['nemic']['per_year_s']:>12.3e} {r['nemic']['compile_s']:>10.2f} "
              f"{r['grad_per_year_s']:>10.3e} {cl:>13.3e} {r.get('speedup_per_step', float('nan')):>8.0f}")
    print("cost ~ num_lat^p, fitted exponents p: " + ", ".join(f"{k} {v:.2f}" for k, v in slope.items()))
    print(f"1000 simulated years at 90 latitudes: {thousand['per_year_s'] * 1000:.3f} s (one core)")

    out = {"benchmark": "ebm", "machine": platform.platform(), "processor": platform.processor(),
           "jax": jax.__version__, "climlab": getattr(climlab, "__version__", None), "one_core": True,
           "rows": rows, "scaling_exponent": slope, "thousand_years_s": thousand["per_year_s"] * 1000}
    path = Path(__file__).parent / "results" / "ebm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The spectral-state QG model against the previous physical-state scheme (``SpectralAB3``), side by side.

The previous model and stepper (``src/nemic/models/qg/model.py`` and ``stepper.py`` at commit 1d5d54a, PV ``q`` in
physical space, pyqg's AB3 with its history in spectral space: 12 layer FFTs per step) are read from git into a
temporary package and timed in the same process as the current model (spectral state ``qh``, generic
``Filtered(AB3)``: 10 layer FFTs per step), from the same initial PV, eddy configuration, dt = 3600 s. Medians of
``--repeats`` timings after a warm-up (compile excluded), in ``--rounds`` interleaved rounds (the best median of
each model counts, so a burst of load from other jobs does not decide the ratio). The final PV of the two is
compared too; the machine's load average is recorded.

Usage: ``python benchmarks/qg_previous_scheme.py [--repeats 5] [--rounds 3] [--dtype float64]``; writes
``benchmarks/results/qg_previous_scheme.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from nemic.core.rollout import rollout  # noqa: E402
from nemic.models.qg import QGState, get_config  # noqa: E402

OLD_COMMIT = "1d5d54a"
DT = 3600.0


def load_previous(tmp: Path):
    """Import the previous model and stepper from git as the package ``qg_previous``."""
    root = Path(__file__).resolve().parents[1]
    pkg = tmp / "qg_previous"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("model", "stepper"):
        src = subprocess.run(["git", "show", f"{OLD_COMMIT}:src/nemic/models/qg/{name}.py"], cwd=root, check=True,
                             capture_output=True, text=True).stdout
        (pkg / f"{name}.py").write_text(src.replace("nemic.models.qg.model", "qg_previous.model")
                                        .replace("nemic.models.qg.stepper", "qg_previous.stepper"))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("qg_previous.model")


def timed(fn, x, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(x))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), compile_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds (new, old, new, old, ...); the best median of each model counts")
    args = ap.parse_args()
    load = [os.getloadavg()]
    dtype = jnp.dtype(args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_previous(Path(tmp))
        results = []
        for nx, n in ((64, 1000), (256, 100)):
            m = get_config("eddy", nx=nx)
            mo = old.TwoLayerQG(**m.params())
            q = jax.random.normal(jax.random.key(0), (2, nx, nx))
            _, _, wv2 = m.wavenumbers()
            q = m.ifft(m.fft(q) * jnp.exp(-wv2 * 5e4**2 / 2))
            q0 = (q / jnp.std(q) * 3e-6).astype(dtype)
            new_run = jax.jit(lambda x, m=m, n=n: rollout(m, m.default_stepper(), QGState.from_q(x), dt=DT,
                                                          n_steps=n, save_every=n, detect_blowup=False).final.q)
            old_run = jax.jit(lambda x, mo=mo, n=n: rollout(mo, mo.stepper(), old.QGState(q=x), dt=DT, n_steps=n,
                                                            save_every=n, detect_blowup=False).final.q)
            diff = float(jnp.max(jnp.abs(new_run(q0) - old_run(q0))) / jnp.max(jnp.abs(old_run(q0))))
            # interleave the two timings so load changes on the shared machine hit both alike
            t_new, c_new = timed(new_run, q0, args.repeats)
            t_old, c_old = timed(old_run, q0, args.repeats)
            for _ in range(max(args.rounds, 1) - 1):
                t_new = min(t_new, timed(new_run, q0, args.repeats)[0])
                t_old = min(t_old, timed(old_run, q0, args.repeats)[0])
            load.append(os.getloadavg())
            r = {"nx": nx, "dtype": args.dtype, "steps": n, "spectral_state_ms": 1e3 * t_new / n,
                 "previous_ms": 1e3 * t_old / n, "previous_over_spectral": t_old / t_new,
                 "compile_s": {"spectral_state": c_new, "previous": c_old}, "max_rel_diff_final_q": diff}
            results.append(r)
            print(r, flush=True)
    print("\n| nx | dtype | spectral state ms/step | previous (SpectralAB3) ms/step | previous / spectral | "
          "max rel. diff of final q |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['nx']} | {r['dtype']} | {r['spectral_state_ms']:.3f} | {r['previous_ms']:.3f} | "
              f"{r['previous_over_spectral']:.2f} | {r['max_rel_diff_final_q']:.1e} |")
    out = Path(__file__).parent / "results" / "qg_previous_scheme.json"
    out.parent.mkdir(exist_ok=True)
    print(f"load average (1, 5, 15 min) at the start and after each size: {load}")
    out.write_text(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__, "old_commit": OLD_COMMIT,
                               "rounds": args.rounds, "repeats": args.repeats, "loadavg": load,
                               "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Time pyqg (NumPy + Cython + FFTW) per step; run by ``benchmarks/qg.py`` in a separate interpreter.

This script imports only numpy and pyqg (not nemic, not JAX), so it can run in a separate virtual environment
whose numpy differs from the project's (pyqg 0.7.2's Cython kernel builds with Cython < 3 against numpy < 2).

Input (argv[1]): a JSON file ``{"cases": [{"nx", "steps", "ntd", "q0"}...], "repeats", "warmup", "dt",
"params"}`` where ``q0`` is a ``.npy`` file holding the initial PV, shape (2, nx, nx), s^-1, float64.
Output (stdout, last line): JSON ``{"pyqg": version, "pyfftw": version, "numpy": version, "cases": [...]}``
with, per case, the median and minimum ms per step over ``repeats`` timings of ``steps`` calls of
``QGModel._step_forward`` (the body of pyqg's own ``QGModel.run`` loop), after ``warmup`` untimed steps.
Model construction (grid, FFTW planning, inversion matrices) is excluded and reported as ``setup_s``.

Reference: Abernathey et al., pyqg, https://doi.org/10.5281/zenodo.6563667.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np


def time_case(case: dict, *, repeats: int, warmup: int, dt: float, params: dict) -> dict:
    """Median ms per step of pyqg's QGModel for one (nx, ntd) case; see the module docstring."""
    import pyqg

    nx, steps, ntd = int(case["nx"]), int(case["steps"]), int(case["ntd"])
    t0 = time.perf_counter()
    # log_level=0: no periodic KE/CFL logging; diagnostics are pyqg's defaults (averaging starts after
    # tavestart = 10 years, so none are accumulated in these short runs).
    m = pyqg.QGModel(nx=nx, dt=dt, ntd=ntd, log_level=0, **params)
    setup_s = time.perf_counter() - t0
    q0 = np.load(case["q0"])
    if q0.shape != (m.nz, m.ny, m.nx):
        raise SystemExit(f"q0 has shape {q0.shape}, expected {(m.nz, m.ny, m.nx)}")
    m.set_q(q0.astype(np.float64))
    for _ in range(warmup):  # forward Euler and AB2 start-up, then AB3; warms caches
        m._step_forward()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            m._step_forward()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # this process's CPU time, all threads (FFTW, OpenMP)
    q = np.asarray(m.q)
    if not np.all(np.isfinite(q)):
        raise SystemExit(f"pyqg blew up at nx={nx}")
    return {"nx": nx, "ntd": ntd, "steps": steps, "repeats": repeats, "setup_s": setup_s,
            "ms_per_step": 1e3 * statistics.median(times) / steps, "ms_per_step_min": 1e3 * min(times) / steps,
            "cpu_ms_per_step": 1e3 * statistics.median(cpu) / steps,
            "q_std_end": float(q.std()), "t_end_s": float(m.t)}


def main(path: str) -> None:
    import pyfftw
    import pyqg

    spec = json.loads(open(path).read())
    out = {"pyqg": pyqg.__version__, "pyfftw": pyfftw.__version__, "numpy": np.__version__,
           "python": sys.version.split()[0], "cases": []}
    for case in spec["cases"]:
        out["cases"].append(time_case(case, repeats=int(spec["repeats"]), warmup=int(spec["warmup"]),
                                      dt=float(spec["dt"]), params=spec["params"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])

"""Fidelity of nemic's two-layer QG model to the original pyqg (NumPy + Cython + FFTW), from the same initial PV.

pyqg runs in its own interpreter (its Cython kernel needs numpy < 2; see docs/qg.md, "Speed", for how to install
it), given by ``--pyqg-python`` or ``$PYQG_PYTHON``. For each configuration ("eddy", "jet") and resolution, both
models start from the same smooth random PV (std 3e-6 s^-1), take ``--steps`` steps of pyqg's scheme (dt = 3600 s,
forward Euler, AB2, then AB3, exponential filter), and the script prints the maximum difference of the final PV
relative to its maximum, next to how much the flow changed (so a small difference is not a flow at rest).

Usage: ``python benchmarks/qg_pyqg_fidelity.py --pyqg-python /tmp/pyqgenv/bin/python [--steps 200]``; writes
``benchmarks/results/qg_pyqg_fidelity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nemic.core.rollout import rollout  # noqa: E402
from nemic.models.qg import QGState, get_config  # noqa: E402

PYQG_RUN = """
import sys, json, numpy as np, pyqg
spec = json.load(open(sys.argv[1]))
m = pyqg.QGModel(nx=spec["nx"], dt=spec["dt"], ntd=1, log_level=0, **spec["params"])
m.set_q(np.load(spec["q0"]))
for _ in range(spec["steps"]):
    m._step_forward()
np.save(spec["out"], np.asarray(m.q))
"""


def smooth_q0(m, seed=0):
    q = jax.random.normal(jax.random.key(seed), (2, m.ny, m.nx))
    _, _, wv2 = m.wavenumbers()
    q = m.ifft(m.fft(q) * jnp.exp(-wv2 * (5e4) ** 2 / 2))
    return np.asarray(q / jnp.std(q) * 3e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyqg-python", default=os.environ.get("PYQG_PYTHON"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--nx", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    if not args.pyqg_python:
        raise SystemExit("give --pyqg-python PATH (an interpreter that can import pyqg) or set $PYQG_PYTHON")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for cfg in ("eddy", "jet"):
            for nx in args.nx:
                m = get_config(cfg, nx=nx)
                q0 = smooth_q0(m)
                np.save(tmp / "q0.npy", q0)
                params = {k: float(getattr(m, k)) for k in ("L", "W", "rek", "beta", "rd", "delta", "H1", "U1",
                                                            "U2", "filterfac")}
                spec = {"nx": nx, "dt": 3600.0, "steps": args.steps, "params": params, "q0": str(tmp / "q0.npy"),
                        "out": str(tmp / "q_pyqg.npy")}
                (tmp / "spec.json").write_text(json.dumps(spec))
                subprocess.run([args.pyqg_python, "-c", PYQG_RUN, str(tmp / "spec.json")], check=True)
                ref = np.load(tmp / "q_pyqg.npy")
                ours = np.asarray(rollout(m, m.default_stepper(), QGState.from_q(jnp.asarray(q0)), dt=3600.0,
                                          n_steps=args.steps, save_every=args.steps).final.q)
                scale = np.max(np.abs(ref))
                row = {"config": cfg, "nx": nx, "steps": args.steps,
                       "max_rel_diff": float(np.max(np.abs(ours - ref)) / scale),
                       "flow_change": float(np.max(np.abs(ref - q0)) / scale)}
                rows.append(row)
                print(f"{cfg:>5} nx={nx:4d} {args.steps} steps: max |q_nemic - q_pyqg| / max|q| = "
                      f"{row['max_rel_diff']:.2e} (flow changed by {row['flow_change']:.2f})")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "qg_pyqg_fidelity.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

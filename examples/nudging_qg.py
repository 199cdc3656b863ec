"""A correction of a coarse two-layer QG model learned from its nudging tendencies, on a tiny generated dataset.

Run:  .venv/bin/python examples/nudging_qg.py            (128 -> 64 points, about 2.5 CPU-minutes)

Steps: (1) a 128-point eddy run is generated and coarse-grained (op1) to 64 points (`qg_subgrid.generate`);
(2) `nudging_qg.run` restarts the 128-point model, nudges the 64-point model toward it (tau = 3 days), fits a small
CNN to the nudging tendencies, chooses the correction's output scale on a validation free run and reports the
mean and spread of the climate biases over test free runs from other starts, next to the backscatter closure,
with the novelty guard's flag rates. The numbers of this toy setup mean little; the real demonstration (64 points
nudged toward coarse-grained 256-point runs) is `nemic nudging qg --data runs/qg/eddy` (docs/nudging.md).
"""

import tempfile
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from nemic.experiments.nudging_qg import NudgingQGConfig, run  # noqa: E402
from nemic.experiments.qg_subgrid import generate  # noqa: E402

work = Path(tempfile.mkdtemp(prefix="nemic_nudging_qg_"))
# 1. 2 years of the 128-point eddy model; the second year is saved every 5 days, coarse-grained to 64 points. From
# pyqg's tiny random state the eddies need ~2.5 years to saturate; a large-scale random PV of about the saturated
# amplitude (std 8e-6 and 1e-6 s^-1 in the layers, wavenumbers below 12) gets there within months.
noise = np.asarray(jax.random.normal(jax.random.key(0), (2, 128, 128)))
fh = np.fft.rfft2(noise)
j, i = np.fft.fftfreq(128, 1 / 128)[:, None], np.fft.rfftfreq(128, 1 / 128)[None, :]
q0 = np.fft.irfft2(fh * (i**2 + j**2 < 12**2), s=(128, 128))
q0 *= np.array([8e-6, 1e-6])[:, None, None] / q0.std(axis=(1, 2), keepdims=True)
generate("eddy", 2.0, work / "gen", nx_hi=128, nx_lo=64, save_every=120, spinup_years=1.0, operators=("op1",), q0=q0)

# 2. the recipe: 60 days of nudging, 300 Adam steps, free runs of 300 days (the first 60 discarded)
cfg = NudgingQGConfig(days=60.0, tau_days=3.0, widths=(8, 8), kernel_sizes=(5, 3, 3), train_steps=300,
                      free_years=300 / 360, free_spinup_days=60.0, val_starts=(5,), test_starts=(0, 25, 50),
                      scales=(0.5, 1.0), compare=("backscatter",))
m = run(work / "gen", cfg, work / "out")

print(f"holdout R2 (layers 1, 2): {m['nudged_run']['holdout_r2']}, chosen scale {m['validation']['chosen_scale']}")
for name, v in m["models"].items():
    b = v["biases"]["KE"]
    print(f"{name:>25}: KE bias {100 * b['mean']:+6.1f} % +- {100 * b['std']:.1f} % over {len(b['per_start'])} "
          f"starts; guard flags {100 * m['guard']['free_runs'][name]['flagged_fraction']:.0f} % of the states")
print("outputs (metrics.json, plots) in", work / "out")

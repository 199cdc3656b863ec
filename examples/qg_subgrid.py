"""The two-layer QG model and the ocean subgrid benchmark pipeline, end to end at toy size (~2 minutes on a CPU).

1. run the "eddy" configuration and print energy diagnostics;
2. generate coarse-grained data (here 64 -> 16 points, a few model days; the benchmark uses 256 -> 64, 10 years);
3. train a small CNN closure offline, then online through rollouts of the coarse model;
4. score Smagorinsky, backscatter and the CNN with the benchmark's similarity metrics.

Run: ``.venv/bin/python examples/qg_subgrid.py [OUT_DIR]``.
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from nemic.experiments import qg_subgrid as ex  # noqa: E402
from nemic.core.rollout import simulate  # noqa: E402
from nemic.models.qg import SECONDS_PER_YEAR, QGState, get_config  # noqa: E402
from nemic.models.qg import diagnostics as dg  # noqa: E402
from nemic.processes.qg_closures import BackscatterBiharmonic, Smagorinsky  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/qg_example")

# 1. the model: pyqg's names and defaults, AB3 + exponential filter, PV in physical space
m = get_config("eddy", nx=64)
key = jax.random.key(0)
q = jax.random.normal(key, (2, 64, 64))
_, _, wv2 = m.wavenumbers()
q = m.ifft(m.fft(q) * jnp.exp(-wv2 * (4e4) ** 2 / 2))
q0 = q / jnp.std(q) * jnp.asarray([6e-6, 1e-6])[:, None, None]
traj = simulate(m, None, QGState.from_q(q0), dt=3600.0, n_steps=480, save_every=48, observe=m.observe)
for t, qi in zip(traj.t, traj.states.q):
    b = dg.energy_budget_totals(m, qi)
    print(f"day {float(t) / 86400:5.1f}  KE {float(dg.kinetic_energy(m, qi)):.3e} m2/s2  "
          f"APE {float(dg.potential_energy(m, qi)):.3e}  APE generation {float(b['APEgenspec']):+.2e} m2/s3")

# 2. coarse-grained data: 64 -> 16 points, snapshots every 4 h for 10 days
years = 240 * 3600.0 / SECONDS_PER_YEAR
ex.generate("eddy", years, out / "data", nx_hi=64, nx_lo=16, spinup_years=0.0, save_every=4, q0=traj.final.q,
            operators=("op1",))
ds, lo = ex.load_dataset(out / "data", "op1")
print(f"dataset: {ds.sizes['time']} snapshots of {list(ds.data_vars)}")

# 3. CNN closure: offline on q_subgrid_forcing, then online through 8-step rollouts
s_q, s_S = ex.scales(ds)
cnn = ex.make_cnn_closure(s_q, s_S, widths=(16, 16), kernel_sizes=(5, 3, 3), key=jax.random.key(1))
cnn, losses = ex.train_offline(cnn, ds, steps=200, batch=16, lr=2e-3, log_every=50)
print("offline loss:", " -> ".join(f"{v:.3f}" for _, v in losses))
cnn_online, losses = ex.train_online(cnn, lo, ds, steps=20, horizon=2, batch=4, lr=3e-4, log_every=5)
print("online loss:", " -> ".join(f"{v:.4f}" for _, v in losses))
# nemic's one weights format (nemic.train.checkpoint.save_module): out/cnn_online/closure.eqx + a readable JSON
ex.save_trained_closure(cnn_online, out / "cnn_online", {"mode": "online", "losses": losses})
cnn_online, _ = ex.load_trained_closure(out / "cnn_online")

# 4. similarity 1 - D(param, HR) / D(LR, HR) over spectra, budget terms and distributions
metrics = ex.evaluate(out / "data", {"smagorinsky": Smagorinsky(lo.grid), "backscatter": BackscatterBiharmonic(lo.grid),
                                     "cnn_offline": cnn, "cnn_online": cnn_online}, out / "eval")
for name, s in metrics["closures"].items():
    print(f"{name:>12}: similarity mean {s['mean']:+.3f}, min {s['min']:+.3f}")
print(f"metrics and figures in {out / 'eval'}")

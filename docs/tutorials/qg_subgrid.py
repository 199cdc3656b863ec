# %% [markdown]
# # Ocean subgrid closures: the two-layer QG benchmark in small
#
# The two-layer quasi-geostrophic (QG) model evolves the potential vorticity \(q_m\) of two ocean layers,
#
# \[
# \partial_t q_m + J(\psi_m, q_m) + \beta\, \partial_x \psi_m + \dots = \text{forcing and dissipation},
# \]
#
# with pyqg's equations, names and stepping (AB3 + exponential filter). A coarse model misses the effect of the
# eddies it cannot resolve, the **subgrid forcing** \(S = \overline{J(\psi, q)} - J(\bar\psi, \bar q)\) of the
# ocean subgrid benchmark (Ross et al. 2023, JAMES, doi:10.1029/2022MS003258). This page runs the benchmark's
# pipeline at toy size (64 → 16 points, a few model days) to show each step; `nemic qg generate | train |
# evaluate` run it at scale ([Two-layer QG](../qg.md)).

# %%
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from nemic.core import simulate
from nemic.data.qg_benchmark import load_dataset
from nemic.experiments import qg_subgrid as ex
from nemic.models.qg import SECONDS_PER_YEAR, QGState, get_config
from nemic.models.qg import diagnostics as dg
from nemic.processes.qg_closures import BackscatterBiharmonic, Smagorinsky

# %% [markdown]
# ## The model: eddies grow from a random start
#
# The "eddy" configuration at 64 × 64, hourly steps, from smooth random PV; kinetic and available potential
# energy every two days.

# %%
m = get_config("eddy", nx=64)
q = jax.random.normal(jax.random.key(0), (2, 64, 64))
_, _, wv2 = m.wavenumbers()
q = m.ifft(m.fft(q) * jnp.exp(-wv2 * (4e4) ** 2 / 2))
q0 = q / jnp.std(q) * jnp.asarray([6e-6, 1e-6])[:, None, None]
traj = simulate(m, None, QGState.from_q(q0), dt=3600.0, n_steps=480, save_every=48, observe=m.observe)
for t, qi in zip(traj.t[::2], traj.states.q[::2]):
    print(f"day {float(t) / 86400:4.0f}  KE {float(dg.kinetic_energy(m, qi)):.3e} m2 s-2  "
          f"APE {float(dg.potential_energy(m, qi)):.3e} m2 s-2")
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for i, ax in enumerate(axes):
    im = ax.imshow(np.asarray(traj.final.q[i]), origin="lower", cmap="RdBu_r")
    ax.set(title=f"PV (s$^{{-1}}$), layer {i + 1}, day {float(traj.t[-1]) / 86400:.0f}", xticks=[], yticks=[])
    fig.colorbar(im, ax=ax, shrink=0.8)

# %% [markdown]
# ## Coarse-grained data and the subgrid forcing
#
# `generate` runs the high-resolution model on, coarse-grains every snapshot (operator 1 of the benchmark: a
# spectral truncation) and stores the coarse PV and its subgrid forcing in a netCDF file.

# %%
out = Path(tempfile.mkdtemp())
years = 96 * 3600.0 / SECONDS_PER_YEAR
ex.generate("eddy", years, out / "data", nx_hi=64, nx_lo=16, spinup_years=0.0, save_every=4, q0=traj.final.q,
            operators=("op1",))
ds, lo = load_dataset(out / "data", "op1")
print(f"{ds.sizes['time']} snapshots of {list(ds.data_vars)} on a {lo.grid.nx} x {lo.grid.nx} grid")

# %% [markdown]
# ## Closures: physics-based and learned
#
# Smagorinsky (eddy viscosity from the resolved strain), a kinetic-energy backscatter closure, and a small
# CNN trained offline to predict \(S\) from the coarse PV (20 snapshots for training, 5 held out).

# %%
s_q, s_S = ex.scales(ds)
cnn = ex.make_cnn_closure(s_q, s_S, widths=(16, 16), kernel_sizes=(5, 3, 3), key=jax.random.key(1))
train = ds.isel(time=slice(0, -5))                     # the last 5 snapshots are held out
cnn, losses = ex.train_offline(cnn, train, steps=120, batch=8, lr=2e-3, log_every=20)
print("offline loss (normalised MSE of S):", " -> ".join(f"{v:.3f}" for _, v in losses))

q_c = ds["q"].values[-1]
S_true = ds["q_subgrid_forcing"].values[-1]
S_cnn = np.asarray(cnn.forcing(jnp.asarray(q_c)))
fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
lim = np.abs(S_true[0]).max()
for ax, f, title in zip(axes, (S_true[0], S_cnn[0]), ("true subgrid forcing", "CNN prediction")):
    ax.imshow(f, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set(title=f"{title}, layer 1", xticks=[], yticks=[])
corr = np.corrcoef(S_true.ravel(), S_cnn.ravel())[0, 1]
print(f"correlation of the CNN's forcing with the truth on the last (held-out) snapshot: {corr:.2f}")

# %% [markdown]
# ## Scoring with the benchmark's similarity
#
# Each closure runs freely in the coarse model; its spectra, energy budget and PV distributions are compared
# with the high-resolution run's. Similarity \(= 1 - D(\text{closure}, \text{HR}) / D(\text{no closure},
# \text{HR})\): 1 is perfect, 0 is no better than no closure. With a few days of data and 120 training steps
# nothing here is converged; the point is the pipeline.

# %%
metrics = ex.evaluate(out / "data", {"smagorinsky": Smagorinsky(lo.grid), "backscatter": BackscatterBiharmonic(lo.grid),
                                     "cnn_offline": cnn}, out / "eval", plots=False)
for name, s in metrics["closures"].items():
    if s is None:
        print(f"{name:>12}: blew up, no score")
    else:
        print(f"{name:>12}: similarity mean {s['mean']:+.3f}, min {s['min']:+.3f}")

# %% [markdown]
# # The global atmosphere: a Held-Suarez run and the column-physics contract
#
# nemic's [global atmosphere](../atmosphere.md) is the spectral primitive-equation core of
# [dinosaur](https://github.com/neuralgcm/dinosaur) (the dynamical core of NeuralGCM) wrapped as a nemic model:
# the state is dinosaur's spectral state, the model is an `ImplicitExplicit` process (gravity waves implicit,
# everything else explicit), and physics is any process added with `+`. This page
#
# 1. runs the dry benchmark of **Held & Suarez (1994)**, a climate with no physics but a relaxation of the
#    temperature and friction near the surface (below);
# 2. shows the **column-physics contract**: a function of one column's profiles returning tendencies is applied
#    to every column of the globe, and a network whose output layer is zero reproduces the core exactly.
#
# In Held-Suarez, the temperature is relaxed towards a zonally symmetric equilibrium \(T_{eq}(\phi, \sigma)\)
# on a time scale of 40 days (4 days at the equatorial surface), and the winds near the surface are slowed by
# Rayleigh friction (1 day at the surface):
#
# \[
# \partial_t T = \dots - k_T(\phi, \sigma)\,(T - T_{eq}), \qquad
# \partial_t \mathbf v = \dots - k_v(\sigma)\, \mathbf v.
# \]
#
# Started from an isothermal atmosphere at rest, the heating gradient builds a pole-to-equator temperature
# contrast and, by thermal wind balance, westerly jets.
#
# The settings are small so that the page runs in about a minute on a laptop CPU: T21 (a \(32 \times 64\)
# Gaussian grid, about 5.6 degrees), 8 sigma levels, a 40-minute step and 12 days. The physical spin-up of the
# Held-Suarez climate takes about 200 days (`nemic atmos run --days 200`).

# %%
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nemic.core import simulate
from nemic.models.atmosphere import ColumnPhysics, HeldSuarez, PackedColumnFunction, PrimitiveEquations
from nemic.nn.column import ColumnNet

# %% [markdown]
# ## A Held-Suarez run
#
# `initial_state` gives an isothermal atmosphere (288 K) at rest with a small localised surface-pressure bump
# that breaks the zonal symmetry. `simulate` with `stepper=None` uses the model's default stepper: the SIL3
# IMEX Runge-Kutta scheme followed by dinosaur's spectral filters; `observe=model.observe` saves nodal fields in
# SI units on (level, lat, lon).

# %%
model = PrimitiveEquations(truncation=21, layers=8, dt=2400.0)
hs = HeldSuarez(model.grid)
state = model.initial_state(jax.random.key(0), perturbation=5e3)
steps_per_day = int(86400 / model.dt)
days = 12
t0 = time.perf_counter()
traj = simulate(model + hs, None, state, dt=model.dt, n_steps=days * steps_per_day, save_every=steps_per_day,
                observe=model.observe)
jax.block_until_ready(traj.states.air_temperature)
print(f"{days} days, {days * steps_per_day} steps at T{model.truncation} L{model.layers}: "
      f"{time.perf_counter() - t0:.1f} s including compilation")
f = traj.states
print("saved fields:", {k: getattr(f, k).shape for k in ("air_temperature", "eastward_wind", "surface_air_pressure")})

# %% [markdown]
# The global mean temperature falls from 288 K towards the equilibrium's (it is far colder aloft), and the
# winds grow from zero. The global means use the Gaussian quadrature weights of the grid.

# %%
w = model.grid.area_weights                                       # (lat, lon), sums to 1
dsig = model.grid.layer_thickness                                 # (level,), sums to 1
t_mean = np.einsum("tkij,ij,k->t", np.asarray(f.air_temperature), w, dsig)
u_max = np.abs(np.asarray(f.eastward_wind).mean(axis=-1)).max(axis=(1, 2))
for d in (0, 3, 6, 9, 12):
    print(f"day {d:2d}: global mean T {t_mean[d]:6.1f} K, largest zonal-mean |u| {u_max[d]:5.1f} m/s")
assert np.all(np.isfinite(np.asarray(f.air_temperature)))

# %% [markdown]
# ## The zonal mean
#
# Averaged over longitude, the last day's temperature shows the imposed equator-to-pole contrast, and the zonal
# wind the two westerly jets that thermal wind balance requires, \(\partial u / \partial \ln p \propto
# \partial T / \partial y\). Beside it, the equilibrium temperature \(T_{eq}\) the forcing relaxes towards.

# %%
lat, sigma = model.grid.lat, model.grid.sigma
T_zm = np.asarray(f.air_temperature[-1]).mean(axis=-1)
u_zm = np.asarray(f.eastward_wind[-1]).mean(axis=-1)
T_eq = np.asarray(hs.equilibrium_temperature(f.surface_air_pressure[-1])).mean(axis=-1)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
for ax, field, title, cmap in ((axes[0], T_zm, f"temperature (K), day {days}", "RdYlBu_r"),
                               (axes[1], u_zm, f"zonal wind (m/s), day {days}", "RdBu_r"),
                               (axes[2], T_eq, "equilibrium temperature (K)", "RdYlBu_r")):
    if cmap == "RdBu_r":
        lim = np.abs(field).max()
        cs = ax.contourf(lat, sigma, field, levels=np.linspace(-lim, lim, 17), cmap=cmap)
    else:
        cs = ax.contourf(lat, sigma, field, levels=16, cmap=cmap)
    fig.colorbar(cs, ax=ax)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("latitude (degrees)")
axes[0].set_ylabel("sigma = p / p_s")
axes[0].invert_yaxis()

# %% [markdown]
# After 12 days the temperature has moved only part of the way to \(T_{eq}\) (40-day relaxation), and the jets
# are still growing; in the equilibrated climate (`nemic atmos run --days 200`) they reach about 30 m/s near
# 45 degrees at the tropopause (Held & Suarez 1994, Fig. 1).
#
# ## Column physics: the contract
#
# Physics parameterisations act on one column at a time. `ColumnPhysics(grid, fn)` applies `fn` to every
# column (`vmap` over the \(32 \times 64\) columns): `fn` receives a `ColumnInputs` (profiles of T, q, u, v on
# the L levels, surface pressure, top-of-atmosphere insolation, latitude, sigma, all SI) and returns a
# `ColumnTendencies` (dT/dt in K/s, dq/dt, du/dt, dv/dt, and precipitation as a diagnostic).
# `ColumnPhysics` turns the nodal tendencies into the model's spectral state, so `model + physics` is again a
# model. `fn` may be an Equinox module, whose weights are then leaves of the hybrid model that `jax.grad` and
# `fit` reach.
#
# nemic's learned column physics, `nemic.nn.column.ColumnNet`, takes the packed column vector
# \([T, q, u, v, p_s, S, \sin\phi]\) (\(4L + 3\) numbers) and returns the four tendency profiles, precipitation
# \(P\) and evaporation \(E\), with a humidity correction that closes the column water budget
# \(\sum_k \dot q_k\, p_s \Delta\sigma_k / g = E - P\) exactly. With `zero_init=True` its last layer is zero:
# every tendency vanishes and \(P = E\), so the hybrid must equal the bare core, **bit for bit**:

# %%
sigma_bounds = np.concatenate([[0.0], np.cumsum(model.grid.layer_thickness)])
net = ColumnNet(sigma_bounds, width=32, depth=2, key=jax.random.key(1), zero_init=True)
physics = ColumnPhysics(model.grid, PackedColumnFunction(net, model.layers))
hybrid = model + hs + physics

s = jax.tree_util.tree_map(lambda x: x[-1], traj.states)          # the last saved day, as a model state
s = model.from_fields(s)
a = hybrid.explicit.tendency(s, 0.0)
b = (model + hs).explicit.tendency(s, 0.0)
same = all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
print("zero network: tendencies of core + Held-Suarez + network equal those of core + Held-Suarez bit for bit:", same)
assert same and hybrid.implicit is model.implicit

# %% [markdown]
# A network with random weights in its last layer changes every tendency but the surface pressure's (column
# physics has none; the numbers are in the model's nondimensional spectral units, and an untrained network's
# tendencies are of course unphysical), and the gradient of any scalar of
# them with respect to its weights flows through the spectral transforms; this is what online training of the
# column physics (`nemic atmos train`) differentiates through whole rollouts.

# %%
net_r = ColumnNet(sigma_bounds, width=32, depth=2, key=jax.random.key(1))
phys_r = ColumnPhysics(model.grid, PackedColumnFunction(net_r, model.layers))
a_r = (model + hs + phys_r).explicit.tendency(s, 0.0)
for name in ("vorticity", "divergence", "temperature_variation", "log_surface_pressure", "specific_humidity"):
    change = float(jnp.max(jnp.abs(getattr(a_r, name) - getattr(b, name))))
    print(f"{name:22s} largest change of its spectral tendency: {change:.2e}")


def heating(m):
    tend = (model + hs + m).explicit.tendency(s, 0.0)
    return jnp.sum(tend.temperature_variation ** 2)


g = eqx.filter_grad(heating)(phys_r)
g_norm = float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(eqx.filter(g, eqx.is_array)))))
print(f"gradient of the squared temperature tendency w.r.t. the network's weights: norm {g_norm:.3e}")
assert np.isfinite(g_norm) and g_norm > 0

# %% [markdown]
# From the command line: `nemic atmos run --days 200 --out runs/hs` (the Held-Suarez climate, CF netCDF and
# zonal-mean figures), `nemic atmos generate` (a truth with SPEEDY physics from jcm, coarse-grained to T21) and
# `nemic atmos train` (the column network, offline then online); see [global atmosphere](../atmosphere.md).

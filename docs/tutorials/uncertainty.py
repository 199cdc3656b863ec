# %% [markdown]
# # Uncertainty: a stochastic closure, ensembles and the CRPS
#
# The [fundamentals](fundamentals.md) showed that \(U_k\) is not a function of \(X_k\) alone: the same \(X_k\)
# comes with many values of \(U_k\), because the fast variables are not observed. A deterministic closure
# predicts the average and loses that variability. A **stochastic closure** adds noise with the statistics of
# the residual; here the scheme of Arnold et al. (2013, Phil. Trans. R. Soc. A 371, 20110479):
#
# \[
# U_k \approx P(X_k) + e_k, \qquad e_{k}^{n+1} = \phi\, e_k^{n} + \sigma\sqrt{1 - \phi^2}\, z^{n}_k,
# \quad z \sim \mathcal N(0, 1),
# \]
#
# a quartic polynomial \(P\) plus additive AR(1) noise with the residual's standard deviation \(\sigma\) and
# lag-1 autocorrelation \(\phi\). Forecasts become **ensembles**, scored by the continuous ranked probability
# score (CRPS; Gneiting & Raftery 2007)
#
# \[
# \mathrm{CRPS} = \frac1M \sum_i |x_i - y| - \frac{1}{2M^2}\sum_{i,j} |x_i - x_j|,
# \]
#
# and by their spread/error ratio (about 1 for a reliable ensemble) and rank histogram (flat when reliable).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import scoringrules

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, AR1Noise, ensemble_rollout, simulate
from nemic.metrics import crps_ensemble, rank_histogram, spread_error
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.processes.polynomial import PolynomialClosure

# %%
truth = TwoScaleLorenz96(h=1.0, b=10.0, c=10.0, F=20.0)
s0 = truth.initial_state(jax.random.key(0), K=8, J=32)
s0 = simulate(truth, RK4(), s0, dt=0.001, n_steps=2000, save_every=2000).final
traj = simulate(truth, RK4(), s0, dt=0.001, n_steps=12_000, save_every=5)
x = np.asarray(traj.states.x)
u = np.asarray(jax.vmap(truth.subgrid_tendency)(traj.states))
x_train, u_train, x_test = x[:1600], u[:1600], x[1600:]

poly = PolynomialClosure.fit(x_train, u_train, degree=4)
r = u_train - np.asarray(poly(jnp.asarray(x_train)))
sigma = float(r.std())
phi = float(np.mean(r[1:] * r[:-1]) / np.mean(r * r))     # per coarse step dt = 0.005
print(f"residual of the polynomial: sigma = {sigma:.3f}, lag-1 autocorrelation phi = {phi:.3f}")

# %% [markdown]
# Two ensembles of 20 members from 30 test states each, over 2 time units: the deterministic closure with
# perturbed initial states only, and the same plus AR(1) noise (each member its own random key).

# %%
physics = Lorenz96(F=20.0)
models = {"polynomial (deterministic)": physics + poly,
          "polynomial + AR(1)": physics + poly + AR1Noise(sigma, phi, field="x")}
n_members, n_lead, starts = 20, 400, np.arange(0, len(x_test) - 401, 13)[:30]
rng = np.random.default_rng(1)
results = {}
# all members of all starts in one vectorised run: member index = start * n_members + member
x0 = np.repeat(x_test[starts], n_members, axis=0) + 0.05 * rng.standard_normal((len(starts) * n_members, 8))
keys = jax.random.split(jax.random.key(100), len(starts) * n_members)
for name, model in models.items():
    run = ensemble_rollout(model, RK4(), Lorenz96State(x=jnp.asarray(x0)), keys=keys, dt=0.005, n_steps=n_lead,
                           save_every=20)
    x_ens = np.asarray(run.states.x).reshape(len(starts), n_members, -1, 8)
    results[name] = np.moveaxis(x_ens, 1, 0)                                # (member, start, lead, k)
obs = np.stack([x_test[s: s + n_lead + 1: 20] for s in starts])          # (start, lead, k)
lead = np.arange(obs.shape[1]) * 20 * 0.005

# %% [markdown]
# nemic's CRPS is checked here against scoringrules' (an independent implementation) on these ensembles.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
for name, e in results.items():
    crps = np.asarray(crps_ensemble(e, obs))                              # (start, lead, k)
    ref = scoringrules.crps_ensemble(obs, np.moveaxis(e, 0, -1), estimator="nrg")
    assert np.allclose(crps, ref, rtol=1e-10, atol=1e-12)
    ratio = [float(spread_error(e[:, :, j], obs[:, j])) for j in range(1, len(lead))]
    print(f"{name:>27}: CRPS at lead 1 = {crps[:, 10].mean():.3f}, spread/error at lead 1 = {ratio[9]:.2f}")
    axes[0].plot(lead, crps.mean(axis=(0, 2)), label=name)
    axes[1].plot(lead[1:], ratio, label=name)
axes[0].set(xlabel="lead time", ylabel="CRPS of X")
axes[1].axhline(1.0, color="grey", ls=":")
axes[1].set(xlabel="lead time", ylabel="spread / error", ylim=(0, 1.6))
axes[1].legend(fontsize=8)

fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
for ax, (name, e) in zip(axes, results.items()):
    h = np.asarray(rank_histogram(e[:, :, 10], obs[:, 10], key=jax.random.key(0)))
    ax.bar(np.arange(n_members + 1), h)
    ax.axhline(1 / (n_members + 1), color="k", ls=":")
    ax.set(title=f"{name}, lead 1", xlabel="rank of the truth")
axes[0].set(ylabel="frequency")

# %% [markdown]
# The deterministic closure's ensemble is under-dispersive (spread/error well below 1, a U-shaped rank
# histogram: the truth falls outside the ensemble too often); the AR(1) noise adds the missing spread. nemic
# can also train a stochastic *neural* closure by the CRPS through rollouts: `nemic l96 stochastic`
# ([Uncertainty](../uncertainty.md)).

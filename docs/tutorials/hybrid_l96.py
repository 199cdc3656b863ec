# %% [markdown]
# # A hybrid model: Lorenz-96 with a learned closure, offline and online
#
# The [fundamentals](fundamentals.md) fitted the subgrid tendency \(U_k\) as a function of \(X_k\). Here that
# fit becomes part of a model: the one-scale Lorenz-96 equations plus a closure,
#
# \[
# \frac{dX_k}{dt} = -X_{k-1}(X_{k-2} - X_{k+1}) - X_k + F + \mathcal{U}_\theta(X_{k-2}, \dots, X_{k+2}),
# \]
#
# written in nemic as `Lorenz96(F) + NeuralTendency(net, "x")`. We train the closure two ways:
#
# - **offline**: regression of \(\mathcal{U}_\theta\) on the diagnosed \(U_k\) (what the fundamentals did);
# - **online**: roll the hybrid model out from truth states and penalise the distance to the truth's
#   following states, differentiating through every solver step; a **curriculum** lengthens the rollouts as
#   training goes on.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, rollout, simulate
from nemic.metrics.climate import hellinger_distance
from nemic.metrics.skill import forecast_rmse
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.neural import NeuralTendency
from nemic.processes.polynomial import PolynomialClosure
from nemic.train.offline import fit_offline
from nemic.train.online import fit_online

# %% [markdown]
# The truth is the two-scale model, sampled every coarse step \(\Delta t = 0.005\) (five truth steps).

# %%
truth = TwoScaleLorenz96(h=1.0, b=10.0, c=10.0, F=20.0)
s0 = truth.initial_state(jax.random.key(0), K=8, J=32)
s0 = simulate(truth, RK4(), s0, dt=0.001, n_steps=2000, save_every=2000).final
traj = simulate(truth, RK4(), s0, dt=0.001, n_steps=15_000, save_every=5)
x = np.asarray(traj.states.x)                                   # (3001, 8)
u = np.asarray(jax.vmap(truth.subgrid_tendency)(traj.states))
n_train = 2000
x_train, u_train, x_test = x[:n_train], u[:n_train], x[n_train:]
print(f"training: {n_train} states ({n_train * 0.005:.0f} time units), test: {len(x_test)} states")

# %% [markdown]
# Three closures: Wilks' (2005) quartic polynomial of the local \(X_k\), and a local network (the same MLP
# applied at every \(k\) to \(X_{k-2..k+2}\)) trained offline, then refined online.

# %%
physics = Lorenz96(F=20.0)
poly = PolynomialClosure.fit(x_train, u_train, degree=4)

net = LocalStencilMLP(halfwidth=2, width=32, depth=2, key=jax.random.key(1), in_mean=x_train.mean(),
                      in_std=x_train.std(), out_scale=u_train.std())
net, offline_losses = fit_offline(net, x_train, u_train, n_iters=800, batch_size=128, learning_rate=3e-3,
                                  key=jax.random.key(2), progress=False)
offline = NeuralTendency(net, "x")

curriculum = ((2, 150), (5, 100), (10, 60))     # (window length in coarse steps, iterations)
online, online_losses = fit_online(offline, lambda c: physics + c, RK4(), Lorenz96State(x=jnp.asarray(x_train)),
                                   dt=0.005, curriculum=curriculum, batch_size=16, learning_rate=5e-4,
                                   key=jax.random.key(3), progress=False)
print(f"offline loss {offline_losses[0]:.3f} -> {offline_losses[-1]:.3f}; "
      f"online loss {online_losses[0]:.4f} -> {online_losses[-1]:.4f}")

# %% [markdown]
# What the curriculum does: short windows first, where errors have little time to grow and the gradient
# through the solver is well behaved, then longer ones, which judge the closure by what it does to the model
# over more steps. The loss jumps at each lengthening because errors grow along a window; within a stage it
# barely moves here, because the online training starts from the offline network and runs only a few hundred
# iterations. Long windows from the start risk exploding gradients through a chaotic model before the closure is
# any good.

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(online_losses, lw=0.8)
edge = 0
for n, iters in curriculum:
    ax.axvline(edge, color="grey", lw=0.5)
    ax.text(edge + 3, max(online_losses), f"{n} steps", va="top", fontsize=8)
    edge += iters
ax.set(xlabel="iteration", ylabel="online loss (MSE over the window)", title="rollout-length curriculum")

# %% [markdown]
# ## Forecasts and climate
#
# Forecast skill: 50 forecasts of 2 time units from test states, RMSE against lead time. Climate: the
# Hellinger distance between the distribution of \(X\) in a long free run and the truth's.

# %%
models = {"physics only": physics, "polynomial": physics + poly, "NN offline": physics + offline,
          "NN online": physics + online}
starts = np.arange(0, len(x_test) - 401, 12)[:50]
n_lead = 400
truths = np.stack([x_test[s: s + n_lead + 1] for s in starts])
fig, ax = plt.subplots(figsize=(6, 3.5))
lead = np.arange(n_lead + 1) * 0.005
for name, model in models.items():
    fc = jax.vmap(lambda x0: rollout(model, RK4(), Lorenz96State(x=x0), dt=0.005, n_steps=n_lead).states.x)(
        jnp.asarray(x_test[starts]))
    err = forecast_rmse(fc, truths)
    free = simulate(model, RK4(), Lorenz96State(x=jnp.asarray(x_test[0])), dt=0.005, n_steps=10_000)
    h = hellinger_distance(np.asarray(free.states.x), x)
    print(f"{name:>13}: RMSE at lead 1 = {float(err[200]):5.2f}, Hellinger distance of the climate = {h:.3f}")
    ax.plot(lead, err, label=name)
ax.set(xlabel="lead time (model time units)", ylabel="RMSE of X", ylim=(0, None))
ax.legend(fontsize=8)

# %% [markdown]
# With these small settings (about 10 time units of training data, a few hundred online iterations) the
# ranking can change from run to run; `nemic quickstart` and `nemic l96 closure` run the full comparison, and
# [Lorenz-96 and hybrid models](../lorenz96.md) reports its numbers.

# %% [markdown]
# # Nudging: keeping a run on track, and learning from it
#
# A coarse model drifts away from the truth it should follow. **Nudging** adds a relaxation term
#
# \[
# \frac{dX}{dt} = f(X) + \frac{X^{\mathrm{ref}}(t) - X}{\tau},
# \]
#
# which keeps the run close to a reference with relaxation time \(\tau\). The nudging tendency
# \((X^{\mathrm{ref}} - X)/\tau\) is what the model was missing to stay on track, so it is *data* for learning a
# correction. Because a learned correction is only trustworthy on states like those it was trained on, a
# **novelty guard** switches it off elsewhere.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, simulate
from nemic.io.nudging import nudging_dataset
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.guards import GuardedTendency, MahalanobisDetector, guard_report, moment_features
from nemic.processes.neural import NeuralTendency
from nemic.processes.nudging import Nudging, nudged_run
from nemic.train.offline import fit_offline

# %% [markdown]
# ## Keeping a run on track
#
# The truth is two-scale Lorenz-96; the coarse model is the one-scale model without any closure. Both start
# from the same \(X\); the nudged one is relaxed toward the truth's \(X\) with \(\tau = 0.05\).

# %%
truth_model = TwoScaleLorenz96()
s0 = truth_model.initial_state(jax.random.key(0), K=8, J=32)
s0 = simulate(truth_model, RK4(), s0, dt=0.001, n_steps=2000, save_every=2000).final
truth = simulate(truth_model, RK4(), s0, dt=0.001, n_steps=10_000, save_every=5)
x_truth = Lorenz96State(x=truth.states.x)
u_truth = np.asarray(jax.vmap(truth_model.subgrid_tendency)(truth.states))

coarse = Lorenz96(20.0)
nudging = Nudging(x_truth, tau=0.05, times=truth.t)
x0 = Lorenz96State(x=truth.states.x[0])
run = nudged_run(coarse, nudging, RK4(), x0, dt=0.005, n_steps=2000)
free = simulate(coarse, RK4(), x0, dt=0.005, n_steps=2000)
xt = np.asarray(truth.states.x)
err_nudged = np.sqrt(np.mean((np.asarray(run.trajectory.states.x) - xt) ** 2, axis=1))
err_free = np.sqrt(np.mean((np.asarray(free.states.x) - xt) ** 2, axis=1))
print(f"RMSE against the truth over the last half: free {err_free[1000:].mean():.2f}, "
      f"nudged {err_nudged[1000:].mean():.2f} (climate std of X {xt.std():.2f})")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(np.asarray(truth.t), err_free, label="free coarse run")
ax.plot(np.asarray(truth.t), err_nudged, label=r"nudged, $\tau$ = 0.05")
ax.set(xlabel="time (model units)", ylabel="RMSE of X against the truth")
ax.legend(fontsize=8)

# %% [markdown]
# ## A correction learned from the nudging tendencies
#
# `nudging_dataset` turns the nudged run into a CF-annotated xarray Dataset with the state and its nudging
# tendency. The nudging tendency is close to the true subgrid tendency \(U\) the coarse model lacks.

# %%
ds = nudging_dataset(run)
print(ds)
n_tend = ds["x_nudging_tendency"].values
print(f"correlation(nudging tendency, true subgrid tendency U) = "
      f"{np.corrcoef(n_tend.ravel(), u_truth.ravel())[0, 1]:.3f}")

x_n = ds["x"].values
net = LocalStencilMLP(2, 32, 2, key=jax.random.key(1), in_mean=x_n.mean(), in_std=x_n.std(),
                      out_scale=n_tend.std())
net, _ = fit_offline(net, x_n, n_tend, n_iters=800, batch_size=128, learning_rate=3e-3, key=jax.random.key(2),
                     progress=False)

# %% [markdown]
# ## The novelty guard
#
# A Mahalanobis detector on local moment features of the training states flags states unlike them;
# `GuardedTendency` applies the correction only where the state is familiar and falls back to the physics
# elsewhere. We compare free runs of the uncorrected and the (guarded) corrected model.

# %%
detector = MahalanobisDetector.fit(np.asarray(jax.vmap(moment_features)(jnp.asarray(x_n))).reshape(-1, 3))
guarded = GuardedTendency(NeuralTendency(net, "x"), detector, moment_features, "x")
x_last = Lorenz96State(x=truth.states.x[-1])
fig, ax = plt.subplots(figsize=(6, 3.2))
bins = np.linspace(-12, 18, 61)
ax.hist(xt.ravel(), bins, density=True, histtype="step", color="k", label="truth")
for name, model in (("uncorrected", coarse), ("corrected (guarded)", coarse + guarded)):
    run_free = simulate(model, RK4(), x_last, dt=0.005, n_steps=8000, save_every=5)
    xs = np.asarray(run_free.states.x)
    print(f"{name:>20}: mean X {xs.mean():6.2f} (truth {xt.mean():.2f}), std {xs.std():5.2f} (truth {xt.std():.2f})")
    ax.hist(xs.ravel(), bins, density=True, histtype="step", label=name)
ax.set(xlabel="X", ylabel="density", title="climate of free runs")
ax.legend(fontsize=8)
rep = guard_report(guarded, run_free)
print(f"guard: {rep['n_flagged']} of {rep['n_states']} states of the corrected run flagged as novel")
familiar = Lorenz96State(x=truth.states.x[100])
strange = Lorenz96State(x=3.0 * truth.states.x[100])        # far outside the training climate
for name, s in (("a truth state", familiar), ("the same state x 3", strange)):
    print(f"{name:>20}: Mahalanobis distance {float(guarded.distance(s)):7.1f} "
          f"(threshold {float(detector.threshold):.1f}), weight of the correction {float(guarded.weight(s)):.2f}")

# %% [markdown]
# The full recipe, with plots and metrics, is `nemic nudging l96 --out runs/nudging_l96`; the same tools work
# for the energy balance model and QG ([Nudging and guards](../nudging.md)).

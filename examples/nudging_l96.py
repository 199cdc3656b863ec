"""Nudging, corrections learned from nudging tendencies, and a novelty guard on Lorenz-96.

Run:  .venv/bin/python examples/nudging_l96.py            (a small configuration, about a minute)
The full recipe with plots and metrics is ``nemic nudging l96 --out runs/nudging_l96``.
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from nemic.core.rollout import simulate  # noqa: E402
from nemic.core.steppers import RK4  # noqa: E402
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96  # noqa: E402
from nemic.processes.guards import GuardedTendency, MahalanobisDetector, guard_report, moment_features  # noqa: E402
from nemic.processes.neural import NeuralTendency  # noqa: E402
from nemic.processes.nudging import Nudging, nudged_run  # noqa: E402
from nemic.io.nudging import nudging_dataset  # noqa: E402
from nemic.nn.mlp import LocalStencilMLP  # noqa: E402
from nemic.train.offline import fit_offline  # noqa: E402

# 1. the two-scale truth, saved every coarse step (dt = 0.005)
truth_model = TwoScaleLorenz96()
s0 = truth_model.initial_state(jax.random.PRNGKey(0), K=8, J=32)
s0 = simulate(truth_model, RK4(), s0, dt=0.001, n_steps=2000, save_every=2000).final
truth = simulate(truth_model, RK4(), s0, dt=0.001, n_steps=20000, save_every=5)
x_truth = Lorenz96State(x=truth.states.x)
u_truth = np.asarray(jax.vmap(truth_model.subgrid_tendency)(truth.states))

# 2. the one-scale model nudged toward the truth's X; the nudging tendencies are recorded
coarse = Lorenz96(20.0)
nudging = Nudging(x_truth, tau=0.05, times=truth.t)
run = nudged_run(coarse, nudging, RK4(), Lorenz96State(x=truth.states.x[0]), dt=0.005, n_steps=4000)
ds = nudging_dataset(run)  # CF dataset: x and x_nudging_tendency
n_tend = ds["x_nudging_tendency"].values
print("corr(nudging tendency, true subgrid tendency U) =", np.corrcoef(n_tend.ravel(), u_truth.ravel())[0, 1])

# 3. a correction network: nudged state -> nudging tendency
x_n = ds["x"].values
net = LocalStencilMLP(2, 32, 2, key=jax.random.PRNGKey(1), in_mean=x_n.mean(), in_std=x_n.std(),
                      out_scale=n_tend.std())
net, _ = fit_offline(net, x_n, n_tend, n_iters=1500, batch_size=128, learning_rate=3e-3,
                     key=jax.random.PRNGKey(2), progress=False)

# 4. free runs of the uncorrected and corrected models, with a guard on the correction
detector = MahalanobisDetector.fit(np.asarray(jax.vmap(moment_features)(jnp.asarray(x_n))).reshape(-1, 3))
guarded = GuardedTendency(NeuralTendency(net, "x"), detector, moment_features, "x")
x0 = Lorenz96State(x=truth.states.x[-1])
for name, model in (("uncorrected", coarse), ("corrected (guarded)", coarse + guarded)):
    free = simulate(model, RK4(), x0, dt=0.005, n_steps=20000, save_every=5)
    xs = np.asarray(free.states.x)
    print(f"{name:>20}: mean X {xs.mean():6.3f} (truth {np.asarray(truth.states.x).mean():6.3f}), std {xs.std():6.3f} "
          f"(truth {np.asarray(truth.states.x).std():6.3f})")
rep = guard_report(guarded, free)
print(f"guard: {rep['n_flagged']} of {rep['n_states']} states flagged as novel")

"""A hybrid Lorenz-96 model in a page: physics + a neural closure trained through the solver.

Run:  .venv/bin/python examples/l96_closure.py     (about a minute on a laptop CPU)
"""

import jax

import numpy as np

from nemic.core import RK4, simulate
from nemic.metrics.climate import hellinger_distance
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.neural import NeuralTendency
from nemic.train.online import fit_online

# 1. the truth: two-scale Lorenz-96 (Wilks 2005), sampled every coarse step (dt = 0.005 = 5 truth steps)
truth = TwoScaleLorenz96(h=1.0, b=10.0, c=10.0, F=20.0)
s0 = truth.initial_state(K=8, J=32, key=jax.random.PRNGKey(0))
spun_up = simulate(truth, RK4(), s0, dt=0.001, n_steps=5000, save_every=5000).final
traj = simulate(truth, RK4(), spun_up, dt=0.001, n_steps=50_000, save_every=5, progress="truth")
reference = Lorenz96State(x=traj.states.x)  # (10001, 8): the resolved variables only

# 2. the hybrid model: one-scale physics + a local MLP closure, zero-initialised (so it starts as the physics)
physics = Lorenz96(F=20.0)
x = np.asarray(reference.x)
net = LocalStencilMLP(halfwidth=2, width=32, depth=2, key=jax.random.PRNGKey(1), in_mean=x.mean(),
                      in_std=x.std(), out_scale=5.0, zero_init=True)
closure = NeuralTendency(net, "x")

# 3. train through rollouts of the solver, with a rollout-length curriculum
closure, losses = fit_online(closure, lambda c: physics + c, RK4(), reference, dt=0.005,
                             curriculum=((2, 400), (5, 300), (10, 300)), batch_size=32, learning_rate=3e-3,
                             key=jax.random.PRNGKey(2))
hybrid = physics + closure

# 4. compare the climates of long free runs (200 time units) with the truth's
for name, model in (("physics only", physics), ("hybrid", hybrid)):
    free = simulate(model, RK4(), Lorenz96State(x=reference.x[0]), dt=0.005, n_steps=40_000, save_every=1)
    print(f"{name:>12}: Hellinger distance of X to the truth = {hellinger_distance(free.states.x, x):.3f}")

# %% [markdown]
# # How to write your own Process
#
# A process is anything with `tendency(state, t, key=None)` returning a pytree of the state's structure
# (`nemic.core.AbstractProcess`, an Equinox module). Physical parameters are array fields, so `jax.grad`
# reaches them; shape-determining settings are static fields (`eqx.field(static=True)`). Processes compose with
# `+`, and any stepper, `rollout`, `simulate` and the training loop accept the sum.
#
# As an example: a linear damping \(dX/dt = -r X\), added to Lorenz-96 and checked against the exact solution
# \(X(t) = X_0 e^{-rt}\) of the damping alone.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, AbstractProcess, rollout
from nemic.io import to_xarray
from nemic.models.lorenz96 import Lorenz96, Lorenz96State


class LinearDamping(AbstractProcess):
    """Linear damping of one field of the state: d(field)/dt = -rate * field (rate in 1/time)."""

    rate: jax.Array
    field: str = eqx.field(static=True)

    def __init__(self, rate, field="x"):
        self.rate = jnp.asarray(rate, dtype=float)
        self.field = field

    def tendency(self, state, t, key=None):
        zeros = jax.tree.map(jnp.zeros_like, state)
        return eqx.tree_at(lambda s: getattr(s, self.field), zeros, -self.rate * getattr(state, self.field))


# %% [markdown]
# Alone, it reproduces the exponential decay to RK4's accuracy (error \(\propto \Delta t^4\)):

# %%
x0 = Lorenz96State(x=jnp.linspace(1.0, 2.0, 8))
damping = LinearDamping(0.7)
errors = []
for dt in (0.1, 0.05, 0.025):
    traj = rollout(damping, RK4(), x0, dt=dt, n_steps=int(round(2.0 / dt)))
    errors.append(float(jnp.max(jnp.abs(traj.final.x - x0.x * jnp.exp(-0.7 * 2.0)))))
    print(f"dt = {dt:5.3f}: max error at t = 2: {errors[-1]:.2e}")
order = np.log2(errors[-2] / errors[-1])
print(f"observed order of convergence: {order:.2f}")
assert abs(order - 4) < 0.2

# %% [markdown]
# Added to a model, it is one more term of the sum; the gradient of any function of the run reaches its rate
# (here checked against a centred finite difference), and the trajectory becomes a CF-annotated Dataset.

# %%
model = Lorenz96(F=8.0) + LinearDamping(0.1)
s0 = Lorenz96State(x=8.0 + 0.01 * jnp.arange(8.0))


def final_energy(m):
    return jnp.sum(rollout(m, RK4(), s0, dt=0.01, n_steps=200).final.x ** 2)


g = eqx.filter_grad(final_energy)(model)
rate_grad = g.terms[1].rate
h = 1e-6
fd = (final_energy(Lorenz96(F=8.0) + LinearDamping(0.1 + h)) - final_energy(Lorenz96(F=8.0) + LinearDamping(0.1 - h))) / (2 * h)
print(f"d(energy)/d(rate): jax {float(rate_grad):.6f}, finite difference {float(fd):.6f}")
assert np.isclose(float(rate_grad), float(fd), rtol=1e-5)
print(to_xarray(rollout(model, RK4(), s0, dt=0.01, n_steps=100, save_every=10)))

# %% [markdown]
# Beyond a tendency a process may provide:
#
# - an implicit part (subclass `AbstractImplicitProcess`, implement `implicit_solve(rhs, t, eta)`) for IMEX
#   steppers;
# - randomness (`stochastic = True`, draw from `key`), and a noise state with memory (`init_noise`,
#   `advance_noise`, `bind_noise`), as `nemic.core.AR1Noise` does;
# - a full model (`AbstractModel`): a static grid, `initial_state(key=)`, `default_stepper()`, `check_state`,
#   and parameters to and from dataset attributes. See [The core](../core.md).

# %% [markdown]
# # Fundamentals: from one neuron to a learned closure
#
# This chapter builds, in plain `jax.numpy`, the pieces every hybrid model in nemic is made of: a neuron, a
# feed-forward network, activation functions, the MSE and MAE losses, gradient descent and its learning rate,
# and back-propagation. The data is not a toy: it is the **subgrid tendency of the two-scale Lorenz-96
# model**, the term a closure must learn in the [next chapter](hybrid_l96.md). At the end the same network is
# an Equinox module trained with Optax, and then with nemic's own training loop.
#
# Everything runs in float64 so that the hand-written gradients can be compared with `jax.grad` to 1e-12.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, simulate
from nemic.models.lorenz96 import TwoScaleLorenz96

# %% [markdown]
# ## The data: what the small scales do to the large ones
#
# Two-scale Lorenz-96 (Lorenz 1996; Wilks 2005) has K = 8 slow variables \(X_k\), each coupled to J = 32 fast
# ones \(Y_{j,k}\):
#
# \[
# \frac{dX_k}{dt} = -X_{k-1}(X_{k-2} - X_{k+1}) - X_k + F + U_k, \qquad
# U_k = -\frac{hc}{b}\sum_{j} Y_{j,k}.
# \]
#
# A model that only has the \(X_k\) must supply \(U_k\) as a function of what it knows. We run the truth and
# collect pairs \((X_k, U_k)\).

# %%
truth = TwoScaleLorenz96(h=1.0, b=10.0, c=10.0, F=20.0)
s0 = truth.initial_state(jax.random.key(0), K=8, J=32)
s0 = simulate(truth, RK4(), s0, dt=0.001, n_steps=2000, save_every=2000).final  # spin-up
traj = simulate(truth, RK4(), s0, dt=0.001, n_steps=20_000, save_every=10)
X = np.asarray(traj.states.x).ravel()                                       # (2001 * 8,)
U = np.asarray(jax.vmap(truth.subgrid_tendency)(traj.states)).ravel()
print(f"{X.size} pairs; X in [{X.min():.1f}, {X.max():.1f}], U in [{U.min():.1f}, {U.max():.1f}]")

rng = np.random.default_rng(0)
idx = rng.permutation(X.size)
train, test = idx[: X.size // 2], idx[X.size // 2:]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(X[train], U[train], ".", ms=1, alpha=0.3)
ax.set(xlabel="$X_k$", ylabel="$U_k$", title="subgrid tendency against the local resolved variable")

# %% [markdown]
# ## One neuron, and why non-linearity matters
#
# A neuron computes \(y = \sigma(w x + b)\): a weighted sum and an **activation function** \(\sigma\).
# Without \(\sigma\), stacking layers gains nothing: \(W_2(W_1 x + b_1) + b_2\) is again linear in \(x\).

# %%
def neuron(w, b, x, activation=jnp.tanh):
    return activation(w * x + b)


z = jnp.linspace(-4, 4, 200)
activations = {"tanh": jnp.tanh, "ReLU": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "GELU": jax.nn.gelu}
fig, ax = plt.subplots(figsize=(5, 3))
for name, f in activations.items():
    ax.plot(z, f(z), label=name)
ax.set(xlabel="$z = wx + b$", ylabel=r"$\sigma(z)$", title="activation functions")
ax.legend()

# two linear layers are one linear layer
k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
W1, b1 = jax.random.normal(k1, (16, 1)), jax.random.normal(k2, (16,))
W2, b2 = jax.random.normal(k3, (1, 16)), jax.random.normal(k4, (1,))
xs = jnp.linspace(-3, 3, 7)[:, None]
deep_linear = (xs @ W1.T + b1) @ W2.T + b2
one_layer = xs @ (W2 @ W1).T + (W2 @ b1 + b2)
print("max |two linear layers - one linear layer| =", float(jnp.max(jnp.abs(deep_linear - one_layer))))

# %% [markdown]
# ## A feed-forward network and its losses
#
# A two-layer network with \(H\) hidden units:
# \(h = \tanh(W_1 x + b_1)\), \(\hat y = W_2 h + b_2\). We fit it by minimising a loss over \(N\) pairs:
#
# \[
# \mathrm{MSE} = \frac{1}{N}\sum_i (\hat y_i - y_i)^2, \qquad \mathrm{MAE} = \frac{1}{N}\sum_i |\hat y_i - y_i|.
# \]
#
# The constant that minimises the MSE is the mean of the data, the one that minimises the MAE is its
# median: MAE is less sensitive to outliers. We check it on \(U\) by a fine scan over constants.

# %%
def mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def mae(pred, y):
    return jnp.mean(jnp.abs(pred - y))


cs = jnp.linspace(U.min(), U.max(), 1001)
u_train = jnp.asarray(U[train])
best_mse = float(cs[jnp.argmin(jax.vmap(lambda c: mse(c, u_train))(cs))])
best_mae = float(cs[jnp.argmin(jax.vmap(lambda c: mae(c, u_train))(cs))])
step = cs[1] - cs[0]
print(f"argmin MSE = {best_mse:.3f}, mean   = {np.mean(U[train]):.3f}")
print(f"argmin MAE = {best_mae:.3f}, median = {np.median(U[train]):.3f}")
assert abs(best_mse - np.mean(U[train])) <= step and abs(best_mae - np.median(U[train])) <= step

# %% [markdown]
# ## Gradient descent and the learning rate
#
# Take the simplest model with two weights, \(\hat U = w_1 X + w_0\). Its MSE is a quadratic bowl, with
# constant Hessian
#
# \[
# H = \frac{2}{N}\begin{pmatrix} \sum X_i^2 & \sum X_i \\ \sum X_i & N \end{pmatrix}.
# \]
#
# Gradient descent \(w \leftarrow w - \eta \nabla L(w)\) multiplies the error along each eigenvector of
# \(H\) by \(1 - \eta\lambda\) per step, so it converges only if \(|1 - \eta\lambda| < 1\) for every
# eigenvalue: \(\eta < 2/\lambda_{\max}\). Below we compute \(\lambda_{\max}\) and run three learning rates.

# %%
x_tr, u_tr = jnp.asarray(X[train]), jnp.asarray(U[train])


def linear_loss(w):
    return mse(w[1] * x_tr + w[0], u_tr)


n = x_tr.size
H = 2.0 / n * jnp.array([[n, x_tr.sum()], [x_tr.sum(), (x_tr ** 2).sum()]])   # order (w0, w1)
assert jnp.allclose(H, jax.hessian(linear_loss)(jnp.zeros(2)), rtol=1e-12)
lam = jnp.linalg.eigvalsh(H)
eta_crit = 2.0 / lam.max()
w_star = jnp.linalg.solve(H, -jax.grad(linear_loss)(jnp.zeros(2)))
print(f"eigenvalues of H: {lam[0]:.3f}, {lam[1]:.3f};  2 / lambda_max = {eta_crit:.5f}")
print(f"least-squares weights: w0 = {w_star[0]:.3f}, w1 = {w_star[1]:.3f}")


def descend(eta, n_steps=300, w0=jnp.array([-12.0, 2.0])):
    """The path w_0, w_1, ..., w_n of gradient descent with learning rate eta (one compiled lax.scan)."""
    def step(w, _):
        w = w - eta * jax.grad(linear_loss)(w)
        return w, w

    _, path = jax.lax.scan(step, w0, None, length=n_steps)
    return jnp.concatenate([w0[None], path])


eta_best = 2.0 / (lam.min() + lam.max())        # the fastest fixed rate for a quadratic loss
print(f"best fixed rate 2 / (lambda_min + lambda_max) = {eta_best:.5f} = {eta_best / eta_crit:.3f} x critical")
rates = {"too small (0.1 x critical)": 0.1 * eta_crit, "right (2 / (lambda_min + lambda_max))": eta_best,
         "too large (1.05 x critical)": 1.05 * eta_crit}
paths = {name: descend(eta) for name, eta in rates.items()}
for name, p in paths.items():
    print(f"{name:>38}: loss {float(linear_loss(p[0])):9.2f} -> {float(linear_loss(p[-1])):12.4g}")
assert linear_loss(paths["too large (1.05 x critical)"][-1]) > 10 * linear_loss(paths["too large (1.05 x critical)"][0])
assert linear_loss(paths["right (2 / (lambda_min + lambda_max))"][-1]) < linear_loss(paths["too small (0.1 x critical)"][-1])
assert jnp.allclose(paths["right (2 / (lambda_min + lambda_max))"][-1], w_star, atol=1e-2)

# the boundary is sharp: 1 % below 2 / lambda_max converges, 1 % above diverges
for factor in (0.99, 1.01):
    end = descend(factor * eta_crit, n_steps=2000)[-1]
    print(f"eta = {factor:.2f} x 2/lambda_max: distance to the minimum after 2000 steps "
          f"{float(jnp.linalg.norm(end - w_star)):.3g}")
    assert (jnp.linalg.norm(end - w_star) < 1e-3) == (factor < 1)

g0, g1 = np.meshgrid(np.linspace(-16, 12, 120), np.linspace(-3.5, 3.5, 120))
L = np.asarray(jax.vmap(linear_loss)(jnp.stack([g0.ravel(), g1.ravel()], axis=1))).reshape(g0.shape)
fig, ax = plt.subplots(figsize=(6, 4))
ax.contour(g0, g1, np.log10(L), levels=20, cmap="Greys")
for (name, p), c in zip(paths.items(), ("tab:blue", "tab:green", "tab:red")):
    p = np.asarray(p)
    keep = (np.abs(p[:, 0]) < 16) & (np.abs(p[:, 1]) < 3.5)
    ax.plot(p[keep, 0], p[keep, 1], "o-", ms=2, color=c, label=name)
ax.plot(*np.asarray(w_star), "k*", ms=12)
ax.set(xlabel="$w_0$ (intercept)", ylabel="$w_1$ (slope)", xlim=(-16, 12), ylim=(-3.5, 3.5),
       title=r"gradient descent on the MSE of $\hat U = w_1 X + w_0$")
ax.legend(fontsize=8, loc="lower left")

# %% [markdown]
# The too-small rate crawls: along the flat direction (the small eigenvalue) it is still far from the minimum
# after 300 steps. The best fixed rate, \(2/(\lambda_{\min} + \lambda_{\max})\), zig-zags across the steep direction
# and reaches the minimum; its speed is limited by the condition number \(\lambda_{\max}/\lambda_{\min}\),
# which is why inputs are normalised before training. A rate just above \(2/\lambda_{\max}\) is thrown
# further out at every step: the error along the steep direction is multiplied by \(|1 - \eta\lambda_{\max}| >
# 1\).
#
# ## Back-propagation by hand
#
# For the two-layer network on a batch (\(x\) of shape \((N, 1)\)), with \(a = x W_1^\top + b_1\),
# \(h = \tanh a\), \(\hat y = h W_2^\top + b_2\) and \(L = \frac1N \sum (\hat y - y)^2\), the chain rule
# applied from the output backwards gives
#
# \[
# \delta_2 = \frac{2}{N}(\hat y - y),\quad \frac{\partial L}{\partial W_2} = \delta_2^\top h,\quad
# \frac{\partial L}{\partial b_2} = \textstyle\sum_i \delta_2,
# \]
#
# \[
# \delta_1 = (\delta_2 W_2) \odot (1 - h^2),\quad \frac{\partial L}{\partial W_1} = \delta_1^\top x,\quad
# \frac{\partial L}{\partial b_1} = \textstyle\sum_i \delta_1.
# \]

# %%
def init_params(key, hidden=32):
    k1, k2 = jax.random.split(key)
    return {"W1": jax.random.normal(k1, (hidden, 1)), "b1": jnp.zeros(hidden),
            "W2": jax.random.normal(k2, (1, hidden)) / jnp.sqrt(hidden), "b2": jnp.zeros(1)}


x_mean, x_std, u_std = X[train].mean(), X[train].std(), U[train].std()
xb = (jnp.asarray(X[train]) - x_mean)[:, None] / x_std     # normalised inputs and targets
yb = jnp.asarray(U[train])[:, None] / u_std


def forward(p, x):
    h = jnp.tanh(x @ p["W1"].T + p["b1"])
    return h @ p["W2"].T + p["b2"], h


def loss_fn(p, x, y):
    return mse(forward(p, x)[0], y)


def backprop(p, x, y):
    y_hat, h = forward(p, x)
    d2 = 2.0 * (y_hat - y) / y.size
    d1 = (d2 @ p["W2"]) * (1.0 - h ** 2)
    return {"W2": d2.T @ h, "b2": d2.sum(0), "W1": d1.T @ x, "b1": d1.sum(0)}


params = init_params(jax.random.key(2))
by_hand, by_jax = backprop(params, xb, yb), jax.grad(loss_fn)(params, xb, yb)
err = max(float(jnp.max(jnp.abs(by_hand[k] - by_jax[k]))) for k in params)
print(f"max |hand-written back-prop - jax.grad| = {err:.2e}")
assert err < 1e-12

# %% [markdown]
# With the gradient in hand, training is a loop. Plain gradient descent with the hand-written gradient:

# %%
@jax.jit
def gd_step(p, eta):
    g = backprop(p, xb, yb)
    return jax.tree.map(lambda a, b: a - eta * b, p, g)


p, history = params, []
for i in range(2000):
    p = gd_step(p, 0.1)
    if i % 20 == 0:
        history.append(float(loss_fn(p, xb, yb)))
x_te, y_te = (jnp.asarray(X[test]) - x_mean)[:, None] / x_std, jnp.asarray(U[test])[:, None] / u_std
lin = np.polyfit(X[train], U[train], 1)
print(f"test MSE (normalised): network {float(loss_fn(p, x_te, y_te)):.4f}, "
      f"straight line {float(mse(np.polyval(lin, X[test]) / u_std, U[test] / u_std)):.4f}")

# %% [markdown]
# ## The same network with Equinox and Optax
#
# In nemic a network is an [Equinox](https://docs.kidger.site/equinox/) module: a pytree of arrays that
# `jax.grad` differentiates like any other, so physics parameters and network weights are trained the same way.
# [Optax](https://optax.readthedocs.io/) provides the optimisers (here Adam).

# %%
net = eqx.nn.MLP(in_size=1, out_size=1, width_size=32, depth=1, activation=jnp.tanh, key=jax.random.key(3))
opt = optax.adam(1e-2)
opt_state = opt.init(eqx.filter(net, eqx.is_inexact_array))


def net_loss(model, x, y):
    return mse(jax.vmap(model)(x), y)


@eqx.filter_jit
def train_step(model, opt_state, x, y):
    loss, grads = eqx.filter_value_and_grad(net_loss)(model, x, y)
    updates, opt_state = opt.update(grads, opt_state, model)
    return eqx.apply_updates(model, updates), opt_state, loss


adam_history = []
for i in range(1000):
    batch = rng.integers(0, xb.shape[0], 256)
    net, opt_state, loss = train_step(net, opt_state, xb[batch], yb[batch])
    if i % 20 == 0:
        adam_history.append(float(net_loss(net, xb, yb)))
print(f"test MSE (normalised), Equinox + Adam: {float(net_loss(net, x_te, y_te)):.4f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
axes[0].semilogy(np.arange(len(history)) * 20, history, label="gradient descent, hand-written gradient")
axes[0].semilogy(np.arange(len(adam_history)) * 20, adam_history, label="Adam (Optax), Equinox MLP")
axes[0].set(xlabel="iteration", ylabel="training MSE (normalised)")
axes[0].legend(fontsize=8)
grid = np.linspace(X.min(), X.max(), 200)
gx = (jnp.asarray(grid) - x_mean)[:, None] / x_std
axes[1].plot(X[test], U[test], ".", ms=1, alpha=0.2, color="grey")
axes[1].plot(grid, np.polyval(lin, grid), label="straight line")
axes[1].plot(grid, np.asarray(forward(p, gx)[0][:, 0]) * u_std, label="network (hand-written)")
axes[1].plot(grid, np.asarray(jax.vmap(net)(gx)[:, 0]) * u_std, "--", label="network (Equinox)")
axes[1].set(xlabel="$X_k$", ylabel="$U_k$")
axes[1].legend(fontsize=8)

# %% [markdown]
# ## nemic's training loop
#
# Every training in nemic goes through one loop, `nemic.train.loop.fit(model, loss, sample, ...)`: the loss is
# a pure function of the model and a batch, the sampler draws a batch from a key, and the loop adds what long
# trainings need (a progress bar, checkpoints and resume, a stop on NaN, frozen leaves, an EMA of the weights).
# The same network, trained by it:

# %%
from nemic.train.loop import default_optimizer, fit

net0 = eqx.nn.MLP(1, 1, 32, 1, activation=jnp.tanh, key=jax.random.key(3))


def sample(key, iteration):
    i = jax.random.randint(key, (256,), 0, xb.shape[0])
    return xb[i], yb[i]


result = fit(net0, lambda m, batch, key: net_loss(m, *batch), sample, optimizer=default_optimizer(1e-2),
             n_iters=1000, key=jax.random.key(4), progress=False)
print(f"test MSE (normalised), nemic.train.loop.fit: {float(net_loss(result.model, x_te, y_te)):.4f}")

# %% [markdown]
# A closure that sees only \(X_k\) cannot know the fast variables' phase, so part of \(U_k\) stays
# unexplained: that scatter is the subject of the [uncertainty chapter](uncertainty.md). The
# [next chapter](hybrid_l96.md) puts such a network inside the solver and trains it through model runs.

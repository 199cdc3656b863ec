# %% [markdown]
# # Metrics as losses: Minkowski measures of a radar rain field
#
# A rain field thresholded at \(u\) gives an excursion set \(\{x > u\}\). Its **Minkowski measures** (area,
# perimeter, Euler characteristic = components minus holes) describe the *structure* of the rain: how much,
# how ragged, how fragmented. They are exact integers, and piecewise constant in the field, so their gradient
# is zero almost everywhere. To use them as a training loss nemic offers two differentiable versions:
#
# - **relaxed**: the indicator \(\mathbb{1}[x > u]\) replaced by a sigmoid \(\sigma((x - u)/\tau)\) with a
#   temperature \(\tau\), and the pixel-counting formulas applied to the soft masks, which converge to the exact
#   measures as \(\tau \to 0\);
# - **learned**: a Lipschitz-constrained CNN surrogate trained to predict them (weights ship with nemic).
#
# The field is the small OPERA radar sample that ships with nemic (EUMETNET OPERA composite, 1 August 2023,
# CC BY 4.0); the full day used to train the surrogate is not part of the package.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from skimage.measure import euler_number

jax.config.update("jax_enable_x64", True)

from nemic.data.opera import load_sample
from nemic.metrics.minkowski import MinkowskiLoss, minkowski_functionals, relaxed_minkowski_functionals
from nemic.train.surrogate import load_default_surrogate

# %%
sample = load_sample()
print(sample)
rain = np.asarray(sample.rain_rate.values[3, 64:192, 64:192])          # 11:00 UTC, 128 x 128 pixels of 2 km
surrogate = load_default_surrogate()
thr = np.asarray(surrogate.thresholds)                                  # 8 thresholds (mm/h) of the surrogate
print("thresholds (mm/h):", np.round(thr, 2))

fig, ax = plt.subplots(figsize=(4.5, 4))
im = ax.imshow(np.log1p(rain), origin="lower", cmap="Blues")
ax.contour(rain, levels=[thr[0], thr[4], thr[7]], colors=["y", "orange", "r"], linewidths=0.7)
ax.set(title="log(1 + rain rate), sets above 3 thresholds", xticks=[], yticks=[])
fig.colorbar(im, ax=ax, shrink=0.8)

# %% [markdown]
# ## Exact measures, checked against scikit-image
#
# With 8-connectivity for the rain (and 4 for the holes), the Euler characteristic is scikit-image's
# `euler_number(mask, connectivity=2)`.

# %%
exact = minkowski_functionals(rain, thr, components=True)
print(f"{'u':>6} {'area':>6} {'perimeter':>9} {'Euler':>6} {'components':>10} {'Euler (skimage)':>15}")
for k, u in enumerate(thr):
    sk = euler_number(rain > u, connectivity=2)
    print(f"{u:6.2f} {int(exact.area[k]):6d} {int(exact.perimeter[k]):9d} {int(exact.euler[k]):6d} "
          f"{int(exact.components[k]):10d} {sk:15d}")
    assert int(exact.euler[k]) == sk and int(exact.area[k]) == int((rain > u).sum())

# %% [markdown]
# ## Relaxed measures converge to the exact ones
#
# The error of the relaxed measures against the exact ones as the temperature falls. The radar data are
# quantised to 0.01 mm/h, so here the thresholds are moved half-way between two levels: a pixel exactly at a
# threshold would stay at 1/2 in the soft mask at any temperature.

# %%
thr_mid = np.round(thr, 2) + 0.005
exact_mid = minkowski_functionals(rain, thr_mid)
taus = [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
errs = []
for tau in taus:
    r = relaxed_minkowski_functionals(rain, thr_mid, tau)
    errs.append([float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1)))
                 for a, b in zip(r[:3], exact_mid[:3])])
errs = np.array(errs)
fig, ax = plt.subplots(figsize=(5, 3.2))
for j, name in enumerate(("area", "perimeter", "Euler characteristic")):
    ax.loglog(taus, np.maximum(errs[:, j], 1e-16), "o-", label=name)
ax.set(xlabel=r"temperature $\tau$ (mm/h)", ylabel="max relative error")
ax.legend(fontsize=8)
print("max relative error at tau = 0.001:", np.round(errs[-1], 5))

# %% [markdown]
# ## The learned surrogate
#
# One forward pass of the CNN gives all measures at all thresholds, differentiable and Lipschitz in the field.

# %%
pred = surrogate(jnp.asarray(rain))
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, name in zip(axes, ("area", "perimeter", "euler")):
    ax.plot(thr, np.asarray(getattr(exact, name)), "ko-", ms=3, label="exact")
    ax.plot(thr, np.asarray(getattr(pred, name)), "s--", ms=3, label="surrogate")
    ax.set(xscale="log", xlabel="threshold (mm/h)", title=name)
axes[0].legend(fontsize=8)

# %% [markdown]
# ## As a loss: the double penalty
#
# Suppose the target field is known only up to a displacement of ±6 pixels (12 km), nine equally likely
# shifts. The field that minimises the mean squared error over the shifts is their average: a blurred field
# whose excursion sets shrink (the *double penalty* of point-wise scores). The Minkowski loss compares measures,
# which do not change under a shift, so adding it to the MSE restores the structure.

# %%
shifts = [(dy, dx) for dy in (-6, 0, 6) for dx in (-6, 0, 6)]
targets = jnp.stack([jnp.roll(jnp.asarray(rain), s, axis=(0, 1)) for s in shifts])
mink = MinkowskiLoss(thr, temperature=0.05, transform="log1p", weights={"area": 1.0, "perimeter": 1.0})


def mse(q):                                          # q = log(1 + rain): optimised in log space
    return jnp.mean((q - jnp.log1p(targets)) ** 2)


def minkowski(q):
    return jnp.mean(jax.vmap(lambda t: mink(jnp.expm1(q), t))(targets))


def fit(loss_fn, steps=150):
    opt = optax.adam(0.02)
    q = jnp.mean(jnp.log1p(targets), axis=0)         # start from the MSE optimum
    state = opt.init(q)

    @jax.jit
    def step(q, state):
        upd, state = opt.update(jax.grad(loss_fn)(q), state)
        return jnp.maximum(q + upd, 0.0), state

    for _ in range(steps):
        q, state = step(q, state)
    return q


fields = {"MSE optimum": jnp.mean(jnp.log1p(targets), axis=0),
          "MSE + 20 x Minkowski": fit(lambda q: mse(q) + 20.0 * minkowski(q))}
k = 4
print(f"{'field':>22} {'MSE (log1p)':>11} {f'area @ {thr[k]:.2f}':>12} {f'perimeter @ {thr[k]:.2f}':>17}")
print(f"{'target':>22} {'':>11} {int(exact.area[k]):12d} {int(exact.perimeter[k]):17d}")
fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
axes[0].imshow(np.log1p(rain), origin="lower", cmap="Blues", vmin=0, vmax=np.log1p(rain).max())
axes[0].set(title="one possible target", xticks=[], yticks=[])
for ax, (name, q) in zip(axes[1:], fields.items()):
    m = minkowski_functionals(np.asarray(jnp.expm1(q)), thr)
    print(f"{name:>22} {float(mse(q)):11.4f} {int(m.area[k]):12d} {int(m.perimeter[k]):17d}")
    ax.imshow(np.asarray(q), origin="lower", cmap="Blues", vmin=0, vmax=np.log1p(rain).max())
    ax.set(title=name, xticks=[], yticks=[])

# %% [markdown]
# `nemic minkowski measures` computes the measures of a file; `nemic minkowski train-surrogate` trains the
# surrogate ([Minkowski measures](../minkowski.md)).

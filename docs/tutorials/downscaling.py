# %% [markdown]
# # Downscaling radar rain: deterministic and generative models, judged by their structure
#
# A coarse rain field (here 20 km, the mean over \(10 \times 10\) blocks of the 2 km OPERA radar composite) has
# lost the small-scale structure of the rain: where the cells are, how sharp their edges are, how many there
# are. **Downscaling** learns to put it back. A network trained with the mean squared error predicts the
# conditional *mean* of the fine field, which is smooth: right on average, wrong in texture. A **generative**
# model instead draws fine fields from the conditional *distribution*; nemic's uses flow matching (Lipman et al.
# 2023, arXiv:2210.02747): a network \(v_\theta(x, t \mid \text{coarse})\) learns the velocity that carries
# noise (\(t = 0\)) to rain (\(t = 1\)) along straight paths, and sampling integrates
# \(\dot x = v_\theta(x, t)\) from a fresh noise field for each ensemble member.
#
# This page uses the models shipped with nemic (trained on one day of OPERA data; see
# [downscaling](../downscaling.md) for their training and scores) on a frame of the small OPERA sample that
# ships with nemic, and scores them with the fractions skill score, radially averaged power spectra and
# Minkowski measures, the same scores as `nemic downscale evaluate`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import contextlib
import io

import numpy as np

with contextlib.redirect_stdout(io.StringIO()):      # pysteps names its configuration file when imported
    from pysteps.verification.spatialscores import fss as pysteps_fss

from nemic.data.opera import load_sample
from nemic.data.patches import block_average, downscaling_patches, upsample_nearest
from nemic.experiments.downscaling import default_weights_dir, load_models
from nemic.experiments.downscaling_eval import postprocess
from nemic.metrics import fss, minkowski_distance, rapsd
from nemic.train.downscaling_losses import predict_rain

# %% [markdown]
# ## The data and the models
#
# The sample holds 6 frames of \(256 \times 256\) points (2 km) of rain rate in mm/h. We take the last frame and
# its wettest \(120 \times 120\) window (240 km), average it over \(10 \times 10\) blocks to a \(12 \times 12\)
# coarse field, and ask each model for the fine field.

# %%
rain = load_sample()["rain_rate"]
frame = rain.isel(time=-1)
patch = downscaling_patches(frame, 120, factor=10, max_patches_per_frame=1, min_wet_fraction=0.0)
truth = np.asarray(patch.values[0], np.float32)                     # (120, 120) mm/h
coarse = np.asarray(block_average(truth, 10))                        # (12, 12)
print(f"frame {str(frame.time.values)[:16]}, window at y0={int(patch.y0[0])}, x0={int(patch.x0[0])}")
print(f"truth: max {truth.max():.1f} mm/h, wet fraction {np.mean(truth > 0.1):.2f}; coarse max {coarse.max():.1f}")

models, recipes = load_models(default_weights_dir())
for name, m in models.items():
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(m) if hasattr(x, "size"))
    print(f"{name:26s} {type(m).__name__:20s} {n_params:7d} parameters")

# %% [markdown]
# The three U-Nets differ only in their loss: MSE alone, MSE plus the relaxed Minkowski loss of the
# [metrics as losses](metrics_losses.md) page, and MSE plus the learned Minkowski surrogate (gated by its
# trust). The two flows differ the same way. The U-Nets give one field; each flow gives an ensemble.

# %%
members = 8
c = jnp.asarray(coarse[None])                                        # a batch of one coarse field
preds = {"nearest": np.asarray(upsample_nearest(coarse, 10))}
for name, m in models.items():
    if hasattr(m, "sample_batch"):
        preds[name] = np.asarray(postprocess(m.sample_batch(c, jax.random.key(0), members)))[:, 0]
    else:
        preds[name] = np.asarray(postprocess(predict_rain(m, c)))[0]
print({k: v.shape for k, v in preds.items()})

# %%
vmax = float(np.percentile(truth, 99.5))
show = [("coarse (nearest)", preds["nearest"]), ("truth", truth), ("mse", preds["mse"]),
        ("mse + relaxed Minkowski", preds["mse_minkowski_relaxed"]),
        ("generative, member 1", preds["generative"][0]), ("generative, member 2", preds["generative"][1])]
fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
for ax, (title, f) in zip(axes.flat, show):
    im = ax.imshow(f, cmap="Blues", vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
fig.colorbar(im, ax=axes, shrink=0.8, label="rain rate (mm/h)")

# %% [markdown]
# The U-Nets sharpen the blocks but stay smooth; the flow's members have rain cells with sharp edges, and differ
# from each other where the coarse field does not decide.
#
# ## Scores
#
# **FSS** (Roberts & Lean 2008): the fractions of pixels above a threshold in windows around each pixel,
# compared; 1 is perfect, and a window larger than the displacement forgives it. **RAPSD** (radially averaged
# power spectral density): power against wavenumber; a smooth field lacks power at small scales. **Minkowski
# distance**: how far the area, perimeter and Euler characteristic of the excursion sets \(\{x \ge u\}\) are
# from the truth's over thresholds \(u\) (0 is perfect). For the flows the scores are averaged over members.
# nemic's FSS is checked here against pysteps' implementation.

# %%
thresholds = jnp.asarray([0.5, 1.0, 2.0, 5.0, 10.0])


def scores(f):
    md = minkowski_distance(f, truth, thresholds)
    return {"max (mm/h)": float(np.max(f)), "FSS 1 mm/h, 9 px": float(fss(f, truth, 1.0, 9)),
            "FSS 5 mm/h, 9 px": float(fss(f, truth, 5.0, 9)),
            "Minkowski distance": float(md.mean), "  perimeter": float(md.perimeter)}


table = {}
for name, p in preds.items():
    per = [scores(p[k]) for k in range(p.shape[0])] if p.ndim == 3 else [scores(p)]
    table[name] = {k: np.mean([d[k] for d in per]) for k in per[0]}
cols = list(next(iter(table.values())))
print(f"{'model':26s}" + "".join(f"{c:>20s}" for c in cols))
for name, row in table.items():
    print(f"{name:26s}" + "".join(f"{row[c]:20.3f}" for c in cols))

ref = pysteps_fss(preds["mse"], truth, 1.0, 9)
print(f"\nFSS of mse at 1 mm/h, 9 px: nemic {float(fss(preds['mse'], truth, 1.0, 9)):.6f}, pysteps {ref:.6f}")
assert abs(float(fss(preds["mse"], truth, 1.0, 9)) - ref) < 1e-5

# %% [markdown]
# At 5 mm/h the coarse field and the U-Nets have no event at all (their largest rates stay below it), so their
# FSS is 0: a model trained for the conditional mean cannot produce the peaks of the truth's rain cells, which
# each member of a generative model does. The perimeter part of the Minkowski distance tells the same story:
# the smooth fields have too few and too round rain areas.
#
# One patch is one sample: the numbers above show the method, not the models' skill, which
# [downscaling](../downscaling.md) measures on 32 test patches of a later time block. The spectra show the
# smoothness directly:

# %%
spec_truth, freq = rapsd(truth, d=2.0, return_freq=True)
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(freq[1:], np.asarray(spec_truth)[1:], "k", lw=2, label="truth")
for name, style in (("nearest", ":"), ("mse", "--"), ("mse_minkowski_relaxed", "-."), ("generative", "-")):
    p = preds[name]
    s = np.mean([np.asarray(rapsd(q)) for q in p], axis=0) if p.ndim == 3 else np.asarray(rapsd(p))
    ax.loglog(freq[1:], s[1:], style, label=name + (" (member mean)" if p.ndim == 3 else ""))
ax.set(xlabel="wavenumber (1/km)", ylabel="power", title="radially averaged power spectra")
ax.legend(fontsize=8)
ax.grid(alpha=0.3, which="both")

# %% [markdown]
# ## An ensemble
#
# The generative model's members are conditioned on the same coarse field. Their mean is smooth like the
# U-Nets' prediction; their spread says where the fine structure is uncertain. Averaging each member back to
# 20 km shows how closely each one respects the coarse field it was given (the flow is not constrained to it
# exactly).

# %%
ens = preds["generative"]
back = np.asarray(block_average(ens, 10))
err = np.abs(back - coarse[None]).mean(axis=(1, 2))
print("members:", ens.shape[0], "; mean |block average of member - coarse| (mm/h):", np.round(err, 3))
print(f"coarse field mean {coarse.mean():.3f} mm/h")
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, f, title in zip(axes, (ens.mean(0), ens.std(0), truth), ("ensemble mean", "ensemble spread", "truth")):
    im = ax.imshow(f, cmap="Blues" if title != "ensemble spread" else "Oranges", vmin=0)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)

# %% [markdown]
# The same on the command line, with every model and a figure: `nemic downscale sample --out runs/sample`
# (the shipped sample and weights by default); `nemic downscale evaluate` scores many patches, and
# `nemic downscale train --data FILE` trains the five models on an OPERA file.

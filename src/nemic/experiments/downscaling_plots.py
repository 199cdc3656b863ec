"""Figures of the downscaling recipe: cases side by side (coarse / truth / each model / ensemble members), mean
RAPSD curves, FSS against window size, mean Minkowski curves per threshold, training losses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from nemic.io.output import save_figure

COLORS = {"truth": "k", "nearest": "0.6", "mse": "tab:blue", "mse_minkowski_relaxed": "tab:orange",
          "mse_minkowski_surrogate": "tab:green", "generative": "tab:red", "generative_minkowski": "tab:purple"}


def _show(ax, field: np.ndarray, title: str, vmax: float) -> Any:
    im = ax.imshow(np.where(field > 0, field, np.nan), norm=LogNorm(0.1, vmax), cmap="viridis",
                   interpolation="nearest")
    ax.set_title(title.replace("_minkowski", "\n+ minkowski"), fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def plot_cases(out: Path, preds: dict[str, np.ndarray], truth: np.ndarray, coarse: np.ndarray,
               n_cases: int = 3, n_members: int = 3, name: str = "cases.png") -> Path:
    """One row per case: coarse input, truth, each deterministic model, ensemble members of each generative one."""
    cases = list(range(min(n_cases, truth.shape[0])))
    cols: list[tuple[str, Any]] = [("coarse input", lambda i: coarse[i]), ("truth", lambda i: truth[i])]
    for mname, p in preds.items():
        if p.ndim == 4:
            for k in range(min(n_members, p.shape[0])):
                cols.append((f"{mname} #{k}", lambda i, p=p, k=k: p[k, i]))
        else:
            cols.append((mname, lambda i, p=p: p[i]))
    fig, axes = plt.subplots(len(cases), len(cols), figsize=(1.9 * len(cols), 2.0 * len(cases)), squeeze=False)
    im = None
    for r, i in enumerate(cases):
        vmax = max(float(truth[i].max()), 1.0)
        for c, (title, get) in enumerate(cols):
            im = _show(axes[r, c], np.asarray(get(i)), title if r == 0 else "", vmax)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="rain rate (mm/h)")
    return save_figure(fig, out / name)


def plot_curves(out: Path, cv: dict[str, Any], thresholds: tuple[float, ...], fss_threshold: float) -> list[Path]:
    """``rapsd.png``, ``fss_scales.png`` and ``minkowski_curves.png`` from :func:`downscaling_eval.curves`."""
    names = [k for k in cv if k not in ("truth", "scales", "freq")]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    f = cv["freq"]
    sel = f > 0
    ax.loglog(f[sel], cv["truth"]["rapsd"][sel], color="k", lw=2, label="truth")
    for n in names:
        ax.loglog(f[sel], cv[n]["rapsd"][sel], color=COLORS.get(n), label=n)
    ax.set(xlabel="wavenumber (cycles per 2 km pixel)", ylabel="power", title="mean radially averaged PSD")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "rapsd.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        ax.plot(cv["scales"], cv[n]["fss"], marker="o", color=COLORS.get(n), label=n)
    ax.set(xscale="log", xlabel="window (pixels of 2 km)", ylabel="FSS",
           title=f"fractions skill score at {fss_threshold:g} mm/h (pooled over test patches)", ylim=(0, 1))
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "fss_scales.png"))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, m, lab in zip(axes, ("area", "perimeter", "euler"), ("area (pixels)", "perimeter (pixel edges)",
                                                                 "Euler characteristic")):
        ax.plot(thresholds, cv["truth"][m], color="k", lw=2, marker="o", label="truth")
        for n in names:
            ax.plot(thresholds, cv[n][m], color=COLORS.get(n), marker=".", label=n)
        ax.set(xscale="log", xlabel="threshold (mm/h)", ylabel=lab, title=f"mean {m} per patch")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, out / "minkowski_curves.png"))
    return paths


def plot_training(out: Path, record: dict[str, Any]) -> Path:
    """Loss against iteration for each trained model (log scale; deterministic and flow losses side by side)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, r in record.items():
        if not isinstance(r, dict) or "history" not in r or not r["history"]:
            continue
        flow = n.startswith(("generative", "flow"))
        ax = axes[1] if flow else axes[0]
        h = np.asarray(r["history"])
        k = max(1, h.size // 50)
        smooth = np.convolve(h, np.ones(k) / k, mode="valid")
        pre = record.get("flow_pretrain" if flow else "unet_pretrain")
        start = int(pre["steps"]) if isinstance(pre, dict) and not n.endswith("pretrain") else 0
        ax.plot(np.arange(smooth.size) + k - 1 + start, smooth, color=COLORS.get(n, "0.5"), label=n)
    axes[0].set(yscale="log", xlabel="iteration", ylabel="loss", title="U-Net losses (running mean)")
    axes[1].set(yscale="log", xlabel="iteration", ylabel="loss", title="flow-matching losses (running mean)")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    return save_figure(fig, out / "training.png")

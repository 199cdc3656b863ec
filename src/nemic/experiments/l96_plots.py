"""Plots of the Lorenz-96 closure recipe: RMSE against lead time, PDFs of X, Hovmoller diagrams, ACF, losses."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from nemic.io.output import save_figure as _save
from nemic.metrics.climate import autocorrelation

COLORS = {"truth": "black", "none": "tab:gray", "polynomial": "tab:blue", "nn_offline": "tab:orange",
          "nn_online": "tab:red"}


def plot_x_pdfs(x_truth, runs: dict, colors: dict, title: str):
    """A figure with the histogram (density) of the truth's X and of each run's X; returns the figure."""

    x_truth = np.asarray(x_truth)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(x_truth.min() - 2, x_truth.max() + 2, 60)
    ax.hist(x_truth.ravel(), bins=bins, density=True, histtype="step", color="k", lw=2, label="truth")
    for name, xs in runs.items():
        ax.hist(np.asarray(xs).ravel(), bins=bins, density=True, histtype="step", color=colors.get(name),
                label=name)
    ax.set(xlabel="X", ylabel="probability density", title=title)
    ax.legend(fontsize=8)
    return fig


def plot_all(out: Path, cfg, test, results, acf_truth, n_acf, hist_off, hist_on) -> None:
    """Write the Lorenz-96 closure recipe's figures into ``out``: forecast RMSE against lead
    time (rmse_vs_lead.png), the distribution of X in free runs (pdf_x.png), Hovmoller diagrams (hovmoller.png),
    the autocorrelation of X (acf_x.png) and the training losses (training_loss.png)."""
    x_test = np.asarray(test.states.x)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(r["lead_times"], r["rmse_curve"], label=name, color=COLORS[name])
    ax.axhline(x_test.std(), color="k", ls=":", lw=1, label="climatological std")
    ax.set(xlabel="lead time (model time units)", ylabel="RMSE of X",
           title=f"Forecast error, mean over {cfg.n_forecasts} initial conditions")
    ax.legend()
    _save(fig, out / "rmse_vs_lead.png")

    _save(plot_x_pdfs(x_test, {n: r["free_run"].states.x for n, r in results.items()}, COLORS,
                      "Climate: distribution of X in long free runs"), out / "pdf_x.png")

    n_show = min(int(round(10.0 / cfg.coarse_dt)), x_test.shape[0])
    panels = [("truth", x_test[:n_show])] + [(n, np.asarray(r["free_run"].states.x)[:n_show])
                                             for n, r in results.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 4), sharey=True)
    vmax = np.abs(x_test).max()
    for ax, (name, xs) in zip(axes, panels):
        t = np.arange(xs.shape[0]) * cfg.coarse_dt
        im = ax.pcolormesh(np.arange(cfg.K + 1) - 0.5, np.append(t, t[-1] + cfg.coarse_dt) if len(t) else [0],
                           xs, cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="flat")
        ax.set(title=name, xlabel="k")
    axes[0].set_ylabel("time (model time units)")
    fig.colorbar(im, ax=axes, label="X", shrink=0.8)
    fig.suptitle("Hovmoller diagrams (free runs; chaotic, so only the patterns should match)")
    _save(fig, out / "hovmoller.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    lags = np.arange(n_acf + 1) * cfg.coarse_dt
    ax.plot(lags, acf_truth, color="k", lw=2, label="truth")

    for name, r in results.items():
        xs = np.asarray(r["free_run"].states.x)
        if xs.shape[0] > n_acf + 1:
            ax.plot(lags, autocorrelation(xs, n_acf), color=COLORS[name], label=name)
    ax.set(xlabel="lag (model time units)", ylabel="autocorrelation of X")
    ax.legend()
    _save(fig, out / "acf_x.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].semilogy(hist_off)
    axes[0].set(title="offline training", xlabel="iteration", ylabel="MSE of U")
    if hist_on:
        axes[1].semilogy(hist_on)
    axes[1].set(title="online training (curriculum)", xlabel="iteration", ylabel="rollout MSE of X")
    _save(fig, out / "training_loss.png")

"""Figures of the QG nudging recipe (:mod:`nemic.experiments.nudging_qg`): climate biases with their spread over
test starts, KE spectra, energy series and the nudging tendency, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from nemic.io.output import save_figure

DAY = 86400.0

_STYLE = {"hr_coarse": ("k", "high res (op1)"), "low_res": ("C7", "low res"),
          "nudging_corrected": ("C3", "+ nudging correction"),
          "nudging_corrected_scaled": ("C2", "+ scaled nudging correction"), "backscatter": ("C0", "+ backscatter")}


def _style(name: str, i: int):
    return _STYLE.get(name, (f"C{4 + i % 5}", f"+ {name}"))


def plot_results(out: Path, high: dict, summ: dict, ref_stats: dict, runs: dict, ke_series: dict, metrics: dict,
          save_dt: float, N, q_n, n_dt: float) -> None:
    """Write the QG nudging recipe's figures into ``out``: biases of the free runs with their spread over test
    starts (bias_spread.png), kinetic-energy spectra (ke_spectra.png), energy series (energy_series.png) and the
    nudging tendencies (nudging_tendency.png)."""
    names = list(runs)
    # 1. biases with their spread over test starts
    fig, ax = plt.subplots(figsize=(9, 4))
    keys = ("KE", "KE1", "KE2", "enstrophy")
    w = 0.8 / len(names)
    for j, name in enumerate(names):
        c, lab = _style(name, j)
        b = metrics["models"][name]["biases"]
        x = np.arange(len(keys)) + (j - (len(names) - 1) / 2) * w
        m = np.array([100 * b[k]["mean"] for k in keys])
        sd = np.array([100 * b[k]["std"] for k in keys])
        ax.bar(x, np.clip(m, -100, 100), w, yerr=sd, color=c, alpha=0.7, label=lab, capsize=2)
        for xi, k in zip(x, keys):
            v = np.clip(100 * np.array(b[k]["per_start"]), -100, 100)
            ax.plot(np.full(v.size, xi), v, "k.", ms=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(keys)), keys)
    ax.set(ylabel="relative bias (%)", title="Free-run climate biases: mean, std (bars) and each test start (dots)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "bias_spread.png")

    # 2. KE spectra averaged over the test runs
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for ax, layer in zip(axs, ("1", "2")):
        ax.loglog(high["kr"], np.abs(high[f"KEspec{layer}"]), "k-", marker=".", label="high res (op1)")
        for j, name in enumerate(names):
            c, lab = _style(name, j)
            sp = [s[f"KEspec{layer}"] for s in summ[name] if s is not None]
            if sp:
                ax.loglog(high["kr"], np.abs(np.mean(sp, axis=0)), color=c, marker=".", label=lab)
        top = float(np.max(np.abs(high[f"KEspec{layer}"])))
        ax.set(xlabel="isotropic wavenumber (rad/m)", ylabel="KE density (m^3 s^-2)", ylim=(1e-4 * top, None),
               title=f"layer {layer}: time-mean KE spectrum (test runs)")
    axs[0].legend(fontsize=8)
    save_figure(fig, out / "ke_spectra.png")

    # 3. energy series
    fig, ax = plt.subplots(figsize=(8, 4))
    ref_ke = float(ref_stats["KE"].mean())
    for j, name in enumerate(names):
        c, lab = _style(name, j)
        for i, ke in enumerate(ke_series[name]):
            ax.plot(np.arange(ke.size) * save_dt / DAY, ke / ref_ke, color=c, lw=0.8, label=lab if i == 0 else None)
    ax.axhline(1.0, color="k", label="high res (op1), mean")
    ax.set(xlabel="days after spin-up", ylabel="KE / high-res mean KE", title="Total kinetic energy of the test runs")
    ax.legend(fontsize=8)
    save_figure(fig, out / "energy_series.png")

    # 4. the nudging tendency
    fig, axs = plt.subplots(1, 3, figsize=(12, 3.6))
    i = N.shape[0] - 1
    for ax, f, title in zip(axs, (q_n[i, 0], N[i, 0], N[i, 1]),
                            ("nudged q, layer 1", "nudging tendency, layer 1", "nudging tendency, layer 2")):
        v = float(np.max(np.abs(f))) or 1.0
        im = ax.imshow(f, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set(title=title, xticks=[], yticks=[])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"end of the nudged run (t = {i * n_dt / DAY:.1f} days)")
    save_figure(fig, out / "nudging_tendency.png")

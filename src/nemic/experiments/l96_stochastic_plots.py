"""Files of the stochastic Lorenz-96 recipe: scores against lead time (netCDF), an example ensemble with a member
axis, and PNGs of CRPS against lead, spread against error, rank histograms and the climate PDFs of X."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from nemic.core.rollout import Trajectory
from nemic.experiments.l96_plots import plot_x_pdfs
from nemic.io.output import save_figure, to_xarray, write_netcdf
from nemic.models.lorenz96 import Lorenz96State

COLORS = {"deterministic_nn": "tab:orange", "ar1": "tab:blue", "stochastic_nn": "tab:red"}


def write_datasets(out: Path, cfg: Any, results: dict[str, dict[str, Any]], x_test: np.ndarray) -> None:
    """``scores.nc`` (closure x lead_time: crps, rmse, spread, spread_error; rank histograms) and
    ``ensemble_<closure>.nc`` (the forecast from the first initial condition, dims member x time x k)."""
    names = list(results)
    leads = np.asarray(results[names[0]]["lead_times"])
    meta = {"crps": ("fair CRPS of X, mean over sites and initial conditions", "1"),
            "rmse": ("RMSE of the ensemble mean of X", "1"),
            "spread": ("ensemble spread of X (sqrt((M+1)/M) x member std)", "1"),
            "ratio": ("spread/error ratio", "1")}
    data = {("spread_error" if k == "ratio" else k): (("closure", "lead_time"),
                                                      np.stack([results[n][k] for n in names]),
                                                      {"long_name": v[0], "units": v[1]})
            for k, v in meta.items()}
    hl = list(results[names[0]]["rank_histograms"])
    if hl:
        data["rank_histogram"] = (("closure", "rank_lead", "rank"),
                                  np.stack([[results[n]["rank_histograms"][h] for h in hl] for n in names]),
                                  {"long_name": "relative frequency of the truth's rank among the members"})
    data["hellinger_x"] = (("closure",), np.asarray([results[n]["hellinger_x"] for n in names]),
                           {"long_name": "Hellinger distance of the climate PDF of X from the truth's"})
    coords = {"closure": names, "lead_time": ("lead_time", leads, {"units": "1", "long_name": "lead time"})}
    if hl:
        coords["rank_lead"] = ("rank_lead", np.asarray([float(h) for h in hl]), {"units": "1"})
        coords["rank"] = np.arange(cfg.n_members + 1)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic l96 stochastic", "c": cfg.c,
                     "n_members": cfg.n_members, "n_ics": cfg.n_ics})
    write_netcdf(ds, out / "scores.nc")
    for n in names:
        ex = results[n]["example"]  # (M, L, K)
        traj = Trajectory(t=leads, states=Lorenz96State(x=ex), blowup_step=np.full(ex.shape[0], -1),
                          member_axis=True)
        write_netcdf(to_xarray(traj, attrs={"title": f"ensemble forecast, closure {n}, first initial condition",
                                            "c": cfg.c}), out / f"ensemble_{n}.nc")


def plot_all(out: Path, cfg: Any, results: dict[str, dict[str, Any]], x_test: np.ndarray,
             histories: dict[str, list[float]]) -> None:
    """Write the stochastic recipe's figures into ``out``: CRPS against lead time (crps_vs_lead.png),
    RMSE, spread and their ratio (spread_error.png), rank histograms, the climate of X (pdf_x.png) and the
    training histories (training.png)."""

    title = f"c = {cfg.c:g}, {cfg.n_members} members, {cfg.n_ics} initial conditions"
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, r in results.items():
        ax.plot(r["lead_times"], r["crps"], color=COLORS.get(n), label=n)
    ax.set(xlabel="lead time (model time units)", ylabel="CRPS of X", title=title)
    ax.legend()
    save_figure(fig, out / "crps_vs_lead.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, r in results.items():
        axes[0].plot(r["lead_times"], r["rmse"], color=COLORS.get(n), label=f"{n} RMSE")
        axes[0].plot(r["lead_times"], r["spread"], color=COLORS.get(n), ls="--", label=f"{n} spread")
        axes[1].plot(r["lead_times"], r["ratio"], color=COLORS.get(n), label=n)
    axes[0].set(xlabel="lead time", ylabel="X", title="ensemble-mean RMSE (solid) and spread (dashed)")
    axes[1].axhspan(0.8, 1.25, color="0.9")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set(xlabel="lead time", ylabel="spread / error", title=title, ylim=(0, 2))
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=8)
    save_figure(fig, out / "spread_error.png")

    leads = list(next(iter(results.values()))["rank_histograms"])
    if leads:
        fig, axes = plt.subplots(len(results), len(leads), figsize=(3 * len(leads), 2.2 * len(results)),
                                 squeeze=False, sharey=True)
        for i, (n, r) in enumerate(results.items()):
            for j, lead in enumerate(leads):
                h = r["rank_histograms"][lead]
                axes[i, j].bar(np.arange(h.size), h, color=COLORS.get(n), width=1.0)
                axes[i, j].axhline(1.0 / h.size, color="k", lw=0.8)
                axes[i, j].set(title=f"{n}, lead {lead}", xlabel="rank" if i == len(results) - 1 else None)
        fig.suptitle(f"Rank histograms ({title})")
        fig.tight_layout()
        save_figure(fig, out / "rank_histograms.png")

    save_figure(plot_x_pdfs(x_test, {n: r["free_run"] for n, r in results.items()}, COLORS,
                            f"Climate of X: {cfg.n_members}-member free runs (c = {cfg.c:g})"), out / "pdf_x.png")

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (name, h) in zip(axes, histories.items()):
        if h:
            ax.semilogy(h)
        ax.set(title=f"{name} loss", xlabel="iteration")
    save_figure(fig, out / "training.png")

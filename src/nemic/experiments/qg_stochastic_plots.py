"""Files of the stochastic QG recipe: scores against lead time (netCDF), the first ensemble forecast with a member
axis, and PNGs of spread against error, CRPS against lead, free-run spectra, training histories and members."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from nemic.core.rollout import Trajectory
from nemic.io.output import save_figure, to_xarray, write_netcdf
from nemic.models.qg import QGFields

COLORS = {"low_res": "tab:gray", "deterministic_cnn": "tab:orange", "stochastic_cnn": "tab:red",
          "stochastic_cnn_exact_ic": "tab:purple", "deterministic_cnn_ensemble": "tab:brown"}


def write_datasets(out: Path, leads_days: np.ndarray, fc: dict[str, dict[str, np.ndarray]], ens_first: np.ndarray,
                   cfg: Any) -> None:
    """``scores.nc`` (closure x lead_time: crps, rmse, spread, spread_error of normalised PV) and
    ``forecast_stochastic_cnn.nc`` (the first forecast: member x time x lev x y x x)."""
    names = list(fc)
    meta = {"crps": "CRPS of PV normalised per layer (fair; a one-member forecast's is its mean absolute error)",
            "rmse": "RMSE of the ensemble-mean PV, normalised per layer",
            "spread": "ensemble spread of normalised PV (sqrt((M+1)/M) x member std)",
            "ratio": "spread/error ratio (0 for a one-member forecast)"}
    data = {("spread_error" if k == "ratio" else k): (("closure", "lead_time"), np.stack([fc[n][k] for n in names]),
                                                      {"long_name": v, "units": "1"}) for k, v in meta.items()}
    coords = {"closure": names, "lead_time": ("lead_time", leads_days, {"units": "days", "long_name": "lead time"})}
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic qg stochastic", "n_members": cfg.n_members,
                     "n_forecasts": cfg.n_forecasts})
    write_netcdf(ds, out / "scores.nc")
    traj = Trajectory(t=leads_days * 86400.0, states=QGFields(q=ens_first),
                      blowup_step=np.full(ens_first.shape[0], -1), member_axis=True)
    write_netcdf(to_xarray(traj, attrs={"title": "ensemble forecast of the stochastic CNN closure, first initial "
                                                 "state"}), out / "forecast_stochastic_cnn.nc")


def plot_all(out: Path, leads_days: np.ndarray, fc: dict, high: dict, summ: dict, record: dict,
             ens_first: np.ndarray, truth_first: np.ndarray) -> None:
    """spread_error.png, crps_vs_lead.png, spectra.png, training.png and members.png."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, s in fc.items():
        axes[0].plot(leads_days, s["rmse"], color=COLORS.get(n), label=f"{n} RMSE")
        if n != "deterministic_cnn":
            axes[0].plot(leads_days, s["spread"], color=COLORS.get(n), ls="--", label=f"{n} spread")
            axes[1].plot(leads_days, s["ratio"], color=COLORS.get(n), label=n if n != "stochastic_cnn" else
                         f"{n}, both layers")
        if n == "stochastic_cnn":
            for i, ls in ((1, ":"), (2, "-.")):
                axes[1].plot(leads_days, s[f"ratio_layer{i}"], color=COLORS.get(n), ls=ls, lw=1, label=f"layer {i}")
    axes[0].set(xlabel="lead time (days)", ylabel="normalised PV", title="ensemble-mean RMSE and spread")
    axes[1].axhspan(0.7, 1.3, color="0.9")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set(xlabel="lead time (days)", ylabel="spread / error", title="spread/error (goal 0.7-1.3 at 1-5 days)",
                ylim=(0, 2))
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    save_figure(fig, out / "spread_error.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for n, s in fc.items():
        ax.plot(leads_days, s["crps"], color=COLORS.get(n), label=n)
    ax.set(xlabel="lead time (days)", ylabel="CRPS (normalised PV)", title="CRPS against lead time")
    ax.legend()
    save_figure(fig, out / "crps_vs_lead.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, k, title in zip(axes, ("KEspec1", "KEspec2"), ("upper-layer KE spectrum", "lower-layer KE spectrum")):
        ax.loglog(high["kr"], np.abs(high[k]), "k", lw=2, label="high res")
        for n, s in summ.items():
            ax.loglog(s["kr"], np.abs(s[k]), color=COLORS.get(n), label=n)
        ax.axvline(high["kmax"], color="0.6", ls=":", lw=1)
        ax.set(title=f"{title} (free runs)", xlabel="isotropic wavenumber (rad/m)")
    axes[0].legend(fontsize=7)
    save_figure(fig, out / "spectra.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    off = record["deterministic_cnn"].get("losses") or []
    if off:
        axes[0].semilogy([i for i, _ in off], [v for _, v in off])
    axes[0].set(title="offline MSE (deterministic CNN)", xlabel="step")
    h = record["stochastic_cnn"]["crps_history"]
    axes[1].plot(h)
    axes[1].set(title="fair CRPS through rollouts (stochastic CNN)", xlabel="step")
    save_figure(fig, out / "training.png")

    m = min(3, ens_first.shape[0])
    fig, axes = plt.subplots(1, m + 1, figsize=(3 * (m + 1), 3))
    vmax = float(np.max(np.abs(truth_first[-1, 0])))
    axes[0].imshow(truth_first[-1, 0], origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes[0].set_title("truth (coarse-grained), q1", fontsize=8)
    for j in range(m):
        axes[j + 1].imshow(ens_first[j, -1, 0], origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        axes[j + 1].set_title(f"member {j}, lead {leads_days[-1]:g} d", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, out / "members.png")

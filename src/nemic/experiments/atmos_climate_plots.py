"""Figures of ``nemic atmos evaluate`` (:mod:`nemic.experiments.atmos_climate`): zonal-mean cross sections
(run, truth, difference), precipitation zonal means, frequency distributions, power spectra, Minkowski curves, a
precipitation map and the global-mean time series of the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from nemic.io.output import save_figure

__all__ = ["climate_plots", "per_year_plot"]

LABELS = {"T": ("temperature", "K", 1.0, "inferno"), "u": ("zonal wind", "m/s", 1.0, "RdBu_r"),
          "q": ("specific humidity", "g/kg", 1e3, "viridis")}


def _cross_sections(run: dict, ref: dict, lat: np.ndarray, sigma: np.ndarray, out: Path) -> None:
    fig, axes = plt.subplots(3, 3, figsize=(13, 9), sharex=True, sharey=True)
    for row, (k, (name, units, scale, cmap)) in zip(axes, LABELS.items()):
        a, b = run[k] * scale, ref[k] * scale
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        levels = np.linspace(lo, hi, 17) if hi > lo else 8
        for ax, data, title in ((row[0], a, "run"), (row[1], b, "truth (test period)")):
            cs = ax.contourf(lat, sigma, data, levels=levels, cmap=cmap)
            ax.set_title(f"{title}: {name}", fontsize=9)
        fig.colorbar(cs, ax=row[:2].tolist(), label=units, shrink=0.8)
        d = a - b
        lim = float(np.abs(d).max()) or 1.0
        cs = row[2].contourf(lat, sigma, d, levels=np.linspace(-lim, lim, 17), cmap="RdBu_r")
        row[2].set_title(f"run - truth: {name}", fontsize=9)
        fig.colorbar(cs, ax=row[2], label=units, shrink=0.8)
    for ax in axes[:, 0]:
        ax.set_ylabel("sigma")
    axes[0, 0].invert_yaxis()
    for ax in axes[-1]:
        ax.set_xlabel("latitude [deg]")
    save_figure(fig, out / "zonal_mean_cross_sections.png")


def _precip(samples: dict, ref: dict, lat: np.ndarray, out: Path, bins: np.ndarray, thresholds: np.ndarray) -> None:
    curves = {"truth (test)": ref, **samples}
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in curves.items():
        ax.plot(lat, s["precip"]["zonal_mean"], label=name, lw=2.0 if name.startswith("truth") else 1.2)
    ax.set_xlabel("latitude [deg]")
    ax.set_ylabel("precipitation [mm/day]")
    ax.set_title("zonal-mean precipitation")
    ax.legend(fontsize=8)
    save_figure(fig, out / "precipitation_zonal_mean.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    edges = bins
    centres = np.sqrt(edges[2:] * edges[1:-1])
    for name, s in curves.items():
        ax.loglog(centres, np.maximum(s["precip"]["histogram"][1:-1], 1e-8), label=name, marker=".")
    ax.set_xlabel("instantaneous precipitation [mm/day]")
    ax.set_ylabel("fraction of grid-point samples")
    ax.set_title("precipitation frequency distribution (bins log-spaced)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "precipitation_histogram.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in curves.items():
        spec = s["precip"]["spectrum"]
        if np.any(spec[1:] > 0):
            ax.semilogy(np.arange(1, spec.size), spec[1:], label=name, marker=".")
    ax.set_xlabel("total wavenumber l")
    ax.set_ylabel("power [(mm/day)^2]")
    ax.set_title("precipitation power spectrum")
    ax.legend(fontsize=8)
    save_figure(fig, out / "precipitation_spectrum.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, m in zip(axes, ("area", "perimeter", "euler")):
        for name, s in curves.items():
            ax.semilogx(thresholds, s["precip"][m], label=name, marker="o")
        ax.set_xlabel("threshold [mm/day]")
        ax.set_title({"area": "area [grid cells]", "perimeter": "perimeter [cell edges]",
                      "euler": "Euler characteristic"}[m])
    axes[0].legend(fontsize=8)
    save_figure(fig, out / "precipitation_minkowski.png")


def _series(samples: dict, out: Path) -> None:
    runs = {k: s for k, s in samples.items() if "series" in s}
    names = ("global_mean_air_temperature", "global_mean_column_water", "global_mean_dry_surface_pressure",
             "global_mean_precipitation_flux")
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 8), sharex=True)
    for ax, k in zip(axes, names):
        for name, s in runs.items():
            if k not in s["series"]:
                continue
            y = np.asarray(s["series"][k]) * (86400.0 if "precipitation" in k else 1.0)
            ax.plot(s["series_days"], y, lw=0.8, label=name)
        ax.set_ylabel(k.replace("global_mean_", "").replace("_", " ").replace("flux", "[mm/day]"), fontsize=8)
    axes[0].legend(fontsize=8)
    axes[0].set_title("global means of the runs (stability)")
    axes[-1].set_xlabel("days since 2000-01-01")
    save_figure(fig, out / "global_mean_series.png")


def climate_plots(samples: dict[str, Any], ref: dict[str, Any], out: Path, test: xr.Dataset, bins: np.ndarray,
                  thresholds: np.ndarray) -> None:
    """Write the PNGs of an evaluation into ``out`` (``bins``: histogram edges, ``thresholds``: Minkowski
    thresholds, both in mm/day)."""
    lat, sigma = test["lat"].values, test["level"].values
    _cross_sections(samples["run"], ref, lat, sigma, out)
    _precip(samples, ref, lat, out, bins, thresholds)
    _series(samples, out)


def per_year_plot(scores: dict[str, Any], out: Path) -> None:
    """``per_year_rmse.png``: each year's zonal-mean RMSE of T, u, q and precipitation (the season window of every
    year of a long run, and of the baselines) against the truth's test period: a drift shows as a trend."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), layout="constrained")
    labels = {"T": ("temperature", "K", 1.0), "u": ("zonal wind", "m/s", 1.0), "q": ("specific humidity", "g/kg", 1e3),
              "P": ("precipitation", "mm/day", 1.0)}
    for name, s in scores.items():
        py = s.get("per_year")
        if not py or not py["year"]:
            continue
        years = np.asarray(py["year"]) + 1
        for ax, (k, (_, _, f)) in zip(axes, labels.items()):
            ax.plot(years, np.asarray(py[k]) * f, marker="o", label=name)
    for ax, (title, units, _) in zip(axes, labels.values()):
        ax.set(title=title, xlabel="year of the run", ylabel=f"zonal-mean RMSE [{units}]")
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle("season-window climate of each year against the truth's test period")
    save_figure(fig, out / "per_year_rmse.png")

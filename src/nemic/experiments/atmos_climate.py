"""Recipe ``nemic atmos evaluate``: the climate of a long run against the held-out period of the SPEEDY truth.

Compares like with like in season: insolation follows the calendar (daily means on the date, time in days since
2000-01-01 in both the truth and the runs; the aquaplanet's sea-surface temperatures are fixed), so a run is
sampled only on the calendar days of the truth's test period (every year of the run, the window taken modulo
the year of 365.2422 days). Scores, each against the truth's test period:

* zonal-mean (level x latitude) climatologies of temperature, zonal wind and specific humidity: bias (area- and
  mass-weighted mean of the difference) and RMSE over the cross section (area- and mass-weighted);
* precipitation: global-mean bias, RMSE of the zonal mean, the frequency distribution of instantaneous rates
  (histogram on fixed bins in mm/day, Hellinger distance), the spatial power spectrum per total wavenumber
  (dinosaur's spherical-harmonic transform), and the exact Minkowski measures (area, perimeter, Euler
  characteristic of the excursion sets over thresholds, :func:`nemic.metrics.minkowski.minkowski_functionals`) of
  the instantaneous fields, as means over the samples.

References for the comparison, scored the same way: any baseline runs (e.g. the bare dynamical core) and a noise
floor, SPEEDY against itself: the truth's own training period on the window half a year before the test period,
mirrored north-south. With zonally and equatorially symmetric SSTs the aquaplanet's climate half a year later is
the mirror image up to the orbit's eccentricity (insolation about 7 % stronger at perihelion in January), so
this is the closest a same-length, same-season, independent SPEEDY sample gets in a one-year truth. The
un-mirrored last ``test`` days of the training period (an adjacent, different season) are reported too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nemic.core.errors import DataError
from nemic.data.atmosphere.dataset import check_truth, days_since_2000, open_truth
from nemic.experiments.atmos_climate_plots import climate_plots, per_year_plot
from nemic.experiments.atmos_climate_run import EPOCH
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.metrics.climate import hellinger_distance
from nemic.metrics.minkowski import minkowski_functionals
from nemic.models.atmosphere import AtmosphereGrid
from nemic.models.ebm.insolation import DAYS_PER_YEAR

__all__ = ["PRECIP_BINS_MM_DAY", "MINKOWSKI_THRESHOLDS_MM_DAY", "season_mask", "zonal_scores", "power_spectrum",
           "precip_summary", "climate_sample", "truth_sample", "run_sample", "compare", "per_year_scores", "evaluate"]

MM_DAY = 86400.0  # kg m-2 s-1 -> mm/day
PRECIP_BINS_MM_DAY = np.concatenate([[0.0], np.logspace(-1, np.log10(500.0), 28)])
MINKOWSKI_THRESHOLDS_MM_DAY = np.array([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0])
VARIABLES = (("T", "K"), ("u", "m s-1"), ("q", "kg kg-1"))


def days_of(ds: xr.Dataset) -> np.ndarray:
    """The dataset's times as days since 2000-01-01 (:func:`nemic.data.atmosphere.dataset.days_since_2000`)."""
    return days_since_2000(ds["time"].values)


def season_mask(days: np.ndarray, start: float, length: float, year: float = DAYS_PER_YEAR) -> np.ndarray:
    """True for the times ``days`` that fall on the calendar window ``[start, start + length]`` of any year."""
    return np.mod(np.asarray(days, float) - start, year) <= length + 1e-6


def _weights(lat: np.ndarray, level_thickness: np.ndarray, truncation: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitude weights (Gaussian quadrature, sum 1) and level weights (sigma thickness, sum 1)."""
    w = AtmosphereGrid(truncation, 2).area_weights.sum(-1)
    if w.size != lat.size:
        raise DataError(f"{lat.size} latitudes do not form the T{truncation} Gaussian grid")
    return w / w.sum(), np.asarray(level_thickness, float) / np.sum(level_thickness)


def zonal_scores(run_zm: np.ndarray, truth_zm: np.ndarray, w_lat: np.ndarray, w_lev: np.ndarray | None) -> dict:
    """Bias and RMSE of a zonal-mean climatology, (level, lat) or (lat,), weighted by latitude (area) and level
    (mass): ``bias = sum w (r - t)``, ``rmse = sqrt(sum w (r - t)^2)`` with ``w`` the normalised product."""
    d = np.asarray(run_zm, float) - np.asarray(truth_zm, float)
    w = w_lat if d.ndim == 1 else np.outer(w_lev, w_lat)
    w = w / w.sum()
    return {"bias": float(np.sum(w * d)), "rmse": float(np.sqrt(np.sum(w * d * d)))}


def power_spectrum(fields: np.ndarray, truncation: int) -> np.ndarray:
    """Mean spatial power spectrum per total wavenumber l = 0..truncation of fields (n, lat, lon) on the
    T<truncation> Gaussian grid: ``E(l) = sum_m c_lm^2`` with ``c_lm`` dinosaur's real spherical-harmonic
    coefficients (orthonormal on the unit sphere, so ``sum_l E(l) = 4 pi <f^2>`` for a band-limited field)."""
    g = AtmosphereGrid(truncation, 2)
    _, l_mesh = (np.asarray(a) for a in g.horizontal.modal_mesh)
    c = np.asarray(g.to_modal(np.asarray(fields, float)))
    out = np.zeros(truncation + 1)
    for ell in range(truncation + 1):
        out[ell] = np.mean(np.sum(c[..., l_mesh == ell] ** 2, axis=-1))
    return out


def precip_summary(p_mm_day: np.ndarray, w_lat: np.ndarray, truncation: int) -> dict[str, Any]:
    """Precipitation statistics of instantaneous fields (n, lat, lon) in mm/day: global mean, zonal mean,
    histogram (probability per bin of :data:`PRECIP_BINS_MM_DAY`), power spectrum, mean Minkowski measures over
    :data:`MINKOWSKI_THRESHOLDS_MM_DAY` (8-connectivity, pixels as cells of the lat-lon grid)."""
    p = np.asarray(p_mm_day, float)
    counts, _ = np.histogram(p.ravel(), bins=np.append(PRECIP_BINS_MM_DAY, np.inf))
    mk = minkowski_functionals(p, MINKOWSKI_THRESHOLDS_MM_DAY, connectivity=8)
    zm = p.mean(axis=(0, 2))
    return {"global_mean": float(np.sum(zm * w_lat)), "zonal_mean": zm, "samples": p.ravel(),
            "histogram": counts / counts.sum(), "spectrum": power_spectrum(p, truncation),
            "area": np.asarray(mk.area, float).mean(0), "perimeter": np.asarray(mk.perimeter, float).mean(0),
            "euler": np.asarray(mk.euler, float).mean(0)}


def climate_sample(zm: dict[str, np.ndarray], precip: np.ndarray, w_lat: np.ndarray, w_lev: np.ndarray,
                   truncation: int, days: np.ndarray) -> dict[str, Any]:
    """A climate: time-mean zonal means of T, u, q (level, lat), precipitation statistics, sample days."""
    out = {k: np.asarray(v, float).mean(0) for k, v in zm.items()}
    out["precip"] = precip_summary(precip * MM_DAY, w_lat, truncation)
    out["days"] = np.asarray(days, float)
    out["w_lat"], out["w_lev"] = w_lat, w_lev
    return out


def _level_thickness(ds: xr.Dataset) -> np.ndarray:
    if "level_bounds" in ds:
        b = np.asarray(ds["level_bounds"].values, float)
        return np.abs(b[:, 1] - b[:, 0])
    return np.full(ds.sizes["level"], 1.0 / ds.sizes["level"])


def truth_sample(ds: xr.Dataset, truncation: int, *, mirror: bool = False, where: str = "truth") -> dict[str, Any]:
    """The climate of a truth dataset (T, u, q, precipitation on (time, level, lat, lon)); ``mirror`` flips it
    north-south (latitudes are symmetric on a Gaussian grid)."""
    check_truth(ds, where=where, truncation=truncation, variables=("T", "u", "q", "precipitation"))
    w_lat, w_lev = _weights(ds["lat"].values, _level_thickness(ds), truncation)
    flip = (lambda a: a[..., ::-1]) if mirror else (lambda a: a)
    zm = {k: flip(ds[k].mean("lon").values) for k, _ in VARIABLES}
    precip = ds["precipitation"].values[..., ::-1, :] if mirror else ds["precipitation"].values
    return climate_sample(zm, precip, w_lat, w_lev, truncation, days_of(ds))


def run_sample(run_dir: str | Path, truth: xr.Dataset, truncation: int, window: tuple[float, float]
               ) -> dict[str, Any]:
    """The climate of a run (``daily.nc`` of ``nemic atmos run``) on the calendar window of the truth's test
    period; all its samples when it never reaches that window (``season_matched`` False)."""
    p = Path(run_dir) / "daily.nc"
    if not p.exists():
        raise DataError(f"'{p}' does not exist: --run must be a directory written by 'nemic atmos run'")
    with xr.open_dataset(p, decode_times=False) as d:
        d = d.load()
    if d.sizes.get("lat") != truth.sizes["lat"] or not np.allclose(d["lat"].values, truth["lat"].values, atol=1e-6):
        raise DataError(f"the run is on {d.sizes.get('lat')} x {d.sizes.get('lon')} points but the truth on "
                        f"{truth.sizes['lat']} x {truth.sizes['lon']}: evaluate against a truth of the run's resolution")
    if d.sizes.get("level") != truth.sizes["level"] or not np.allclose(d["level"].values, truth["level"].values,
                                                                        atol=1e-6):
        raise DataError(f"the run has sigma levels {np.round(d['level'].values, 3).tolist()} but the truth "
                        f"{np.round(truth['level'].values, 3).tolist()}")
    days = d["time"].values.astype(float)
    sel = season_mask(days, window[0], window[1])
    matched = bool(sel.any())
    if not matched:
        sel = np.ones_like(sel)
    names = {"T": "zonal_mean_air_temperature", "u": "zonal_mean_eastward_wind", "q": "zonal_mean_specific_humidity"}
    zm = {k: d[v].values[sel] for k, v in names.items()}
    for k, v in zm.items():
        if not np.all(np.isfinite(v)):
            raise DataError(f"the run '{run_dir}' has non-finite {names[k]}")
    w_lat, w_lev = _weights(truth["lat"].values, _level_thickness(truth), truncation)
    out = climate_sample(zm, d["precipitation_flux"].values[sel], w_lat, w_lev, truncation, days[sel])
    # the same window year by year (the drift test of a long run): time-mean zonal means per year
    year = np.floor((days[sel] - window[0]) / DAYS_PER_YEAR + 1e-9).astype(int) if matched else np.zeros(sel.sum(), int)
    pz = d["precipitation_flux"].values[sel].mean(-1) * MM_DAY
    out["by_year"] = {int(y): {**{k: v[year == y].mean(0) for k, v in zm.items()}, "P": pz[year == y].mean(0),
                               "n": int((year == y).sum())} for y in np.unique(year)}
    out["season_matched"] = matched
    out["years"] = float((days[-1] - days[0]) / DAYS_PER_YEAR) if days.size > 1 else 0.0
    out["series"] = {k: d[k].values for k in d.data_vars if k.startswith("global_mean")}
    out["series_days"] = days
    return out


def compare(sample: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Scores of a climate ``sample`` against the reference climate ``ref`` (the truth's test period)."""
    w_lat, w_lev = ref["w_lat"], ref["w_lev"]
    out: dict[str, Any] = {}
    for k, units in VARIABLES:
        s = zonal_scores(sample[k], ref[k], w_lat, w_lev)
        out[k] = {"zonal_mean_rmse": s["rmse"], "global_mean_bias": s["bias"], "units": units}
    ps, pr = sample["precip"], ref["precip"]
    zs = zonal_scores(ps["zonal_mean"], pr["zonal_mean"], w_lat, None)
    spec = np.log10(np.maximum(ps["spectrum"][1:], 1e-30) / np.maximum(pr["spectrum"][1:], 1e-30))
    rel = lambda a, b: float(np.sum(np.abs(a - b)) / max(np.sum(np.abs(b)), 1e-30))  # noqa: E731
    out["precipitation"] = {
        "units": "mm/day", "global_mean": ps["global_mean"], "global_mean_bias": ps["global_mean"] - pr["global_mean"],
        "zonal_mean_rmse": zs["rmse"],
        "hellinger_distance": hellinger_distance(ps["samples"], pr["samples"], np.append(PRECIP_BINS_MM_DAY, 1e9)),
        "log10_spectrum_rms": float(np.sqrt(np.mean(spec ** 2))),
        "minkowski_relative_error": {m: rel(ps[m], pr[m]) for m in ("area", "perimeter", "euler")},
        "minkowski": {m: np.asarray(ps[m]).tolist() for m in ("area", "perimeter", "euler")},
    }
    out["n_samples"] = int(np.size(sample["days"]))
    return out


def per_year_scores(by_year: dict[int, dict[str, Any]], ref: dict[str, Any]) -> dict[str, list[float]]:
    """Zonal-mean RMSE of T, u, q and of the precipitation zonal mean of each year's window against the reference
    (the drift test of a long run): lists over the years, with the year index (0 = the first window reached)."""
    out: dict[str, list[float]] = {"year": [], "n_samples": [], "T": [], "u": [], "q": [], "P": []}
    for y, s in sorted(by_year.items()):
        out["year"].append(int(y))
        out["n_samples"].append(int(s["n"]))
        for k, _ in VARIABLES:
            out[k].append(zonal_scores(s[k], ref[k], ref["w_lat"], ref["w_lev"])["rmse"])
        out["P"].append(zonal_scores(s["P"], ref["precip"]["zonal_mean"], ref["w_lat"], None)["rmse"])
    return out


def _open_split(truth_dir: Path, split: str, truncation: int) -> xr.Dataset:
    ds = open_truth(truth_dir / f"{split}.zarr")
    ds = ds[[v for v in ("T", "u", "q", "precipitation", "level_bounds") if v in ds]].load()
    check_truth(ds, where=f"truth '{truth_dir / split}.zarr'", truncation=truncation,
                variables=("T", "u", "q", "precipitation"))
    return ds


def evaluate(run_dir: str | Path, truth_dir: str | Path, out: str | Path, *, baselines: dict[str, str] | None = None,
             truncation: int = 21, plots: bool = True) -> dict[str, Any]:
    """Score the run in ``run_dir`` (and ``baselines``, name -> run directory) against the test period of the
    truth in ``truth_dir``; write ``metrics.json`` and PNGs into ``out`` (one transaction)."""
    truth_dir = Path(truth_dir)
    test = _open_split(truth_dir, "test", truncation)
    ref = truth_sample(test, truncation, where="truth test period")
    td = ref["days"]
    step = float(np.median(np.diff(td))) if td.size > 1 else 0.25
    window = (float(td[0]), float(td[-1] - td[0]))
    samples = {"run": run_sample(run_dir, test, truncation, window)}
    for name, d in (baselines or {}).items():
        samples[name] = run_sample(d, test, truncation, window)
    floors: dict[str, str] = {}
    if (truth_dir / "train.zarr").exists():
        train = _open_split(truth_dir, "train", truncation)
        days = days_of(train)
        lo = window[0] - DAYS_PER_YEAR / 2
        mir = (days >= lo - step / 2) & (days <= lo + window[1] + step / 2)
        if days[0] <= lo + step and days[-1] >= lo + window[1] - step:
            samples["speedy_mirrored_half_year"] = truth_sample(train.isel(time=np.flatnonzero(mir)), truncation,
                                                                mirror=True)
        else:
            floors["speedy_mirrored_half_year"] = (f"the training period (days {days[0]:.0f}-{days[-1]:.0f}) does "
                                                   f"not cover days {lo:.0f}-{lo + window[1]:.0f}")
        n = td.size
        if days.size >= n:
            samples["speedy_adjacent_period"] = truth_sample(train.isel(time=slice(-n, None)), truncation)
    metrics: dict[str, Any] = {
        "truth": str(truth_dir), "run": str(run_dir), "baselines": dict(baselines or {}),
        "test_period_days_since_2000": [float(td[0]), float(td[-1])], "time_units": EPOCH,
        "season_window": {"start_day_of_year": float(np.mod(window[0], DAYS_PER_YEAR)), "length_days": window[1]},
        "truth_precipitation_mm_day": ref["precip"]["global_mean"],
        "truth_minkowski": {m: np.asarray(ref["precip"][m]).tolist() for m in ("area", "perimeter", "euler")},
        "minkowski_thresholds_mm_day": MINKOWSKI_THRESHOLDS_MM_DAY.tolist(),
        "scores": {name: compare(s, ref) for name, s in samples.items()},
        "not_computed": floors,
    }
    for name in ["run", *(baselines or {})]:
        metrics["scores"][name]["per_year"] = per_year_scores(samples[name]["by_year"], ref)
        metrics["scores"][name]["season_matched"] = samples[name]["season_matched"]
        metrics["scores"][name]["years_run"] = samples[name]["years"]
        metrics["scores"][name]["finite"] = bool(all(np.all(np.isfinite(v)) for v in samples[name]["series"].values()))
    with staged_run(out, "atmos evaluate", {"run": str(run_dir), "truth": str(truth_dir),
                                            "baselines": dict(baselines or {})}) as stage:
        write_json(metrics, stage / "metrics.json")
        if plots:
            climate_plots(samples, ref, stage, test, PRECIP_BINS_MM_DAY, MINKOWSKI_THRESHOLDS_MM_DAY)
            per_year_plot({k: v for k, v in metrics["scores"].items() if "per_year" in v}, stage)
    return metrics

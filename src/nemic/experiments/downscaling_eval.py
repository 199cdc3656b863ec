"""Evaluation of downscaling models on test patches: predictions, ensembles, verification scores, netCDF output.

Every prediction is post-processed like the truth: rates below the drizzle floor (0.1 mm/h) are set to 0
(:data:`nemic.data.patches.DRIZZLE_FLOOR`). Scores (:mod:`nemic.metrics`) per model, over the test patches:

* ``mae`` (mm/h, mean absolute error; for a generative model that of the ensemble mean, ``mae_member`` that of
  single members), ``fss_<u>mm_<n>px`` (fractions skill score pooled over patches, thresholds 1, 5, 10 mm/h,
  windows 3, 9, 27 px), ``rapsd_error`` (mean |log10| difference of the radially averaged power spectra),
  ``minkowski_distance`` (mean relative L1 distance of the area / perimeter / Euler-characteristic curves, also
  per functional), ``csi_1mm``, ``ets_1mm``, ``wasserstein_wet`` (mm/h);
* for ensembles ``crps`` (mm/h, mean over pixels) and ``spread_error``; the other scores of a generative model are
  those of its members (averaged over members), since the ensemble mean is a smooth field that no longer looks
  like rain.

``nearest`` (the coarse field repeated over its blocks) is scored as a reference.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.data.patches import DRIZZLE_FLOOR, upsample_nearest
from nemic.io.terminal import progress_bar
from nemic.metrics import (crps_ensemble, csi, ets, fss, mae, minkowski_distance, rapsd, rapsd_error,
                           spread_error, wasserstein_wet)
from nemic.metrics.minkowski import minkowski_functionals
from nemic.train.downscaling_losses import predict_rain

FSS_THRESHOLDS = (1.0, 5.0, 10.0)
FSS_WINDOWS = (3, 9, 27)
FSS_SCALES = (1, 3, 5, 9, 17, 27, 45, 65)


def postprocess(rain: Any) -> jax.Array:
    """Rates below the drizzle floor set to 0 (as in the truth patches)."""
    rain = jnp.asarray(rain)
    return jnp.where(rain < DRIZZLE_FLOOR, 0.0, rain)


@eqx.filter_jit
def _det(net, coarse):
    return postprocess(predict_rain(net, coarse))


@eqx.filter_jit
def _ens(model, coarse, key, n_members):
    return postprocess(model.sample_batch(coarse, key, n_members))


def predict(models: dict[str, Any], coarse: np.ndarray, members: int, key: jax.Array, *, batch: int = 4,
            progress: bool = False) -> dict[str, np.ndarray]:
    """Predictions of every model on coarse fields (N, h, w): (N, H, W) for U-Nets, (members, N, H, W) for
    flows; plus ``nearest``."""
    factor = next(iter(models.values())).factor
    out = {"nearest": np.asarray(postprocess(upsample_nearest(coarse, factor)))}
    n = coarse.shape[0]
    with progress_bar(progress) as pb:
        for i, (name, m) in enumerate(models.items()):
            is_flow = hasattr(m, "sample_batch")
            task = pb.add_task(f"predicting {name}", total=n, info="")
            parts = []
            for j in range(0, n, batch):
                c = jnp.asarray(coarse[j:j + batch])
                if is_flow:
                    parts.append(np.asarray(_ens(m, c, jax.random.fold_in(jax.random.fold_in(key, i), j), members)))
                else:
                    parts.append(np.asarray(_det(m, c)))
                pb.update(task, completed=min(j + batch, n))
            out[name] = np.concatenate(parts, axis=1 if is_flow else 0)
    return out


def _single_scores(pred: np.ndarray, truth: np.ndarray, thresholds: tuple[float, ...]) -> dict[str, float]:
    s: dict[str, float] = {"mae": float(jnp.mean(mae(pred, truth))),
                           "rapsd_error": float(jnp.mean(rapsd_error(pred, truth)))}
    for u in FSS_THRESHOLDS:
        for w in FSS_WINDOWS:
            s[f"fss_{u:g}mm_{w}px"] = float(fss(pred, truth, u, w, pooled=True))
    md = minkowski_distance(pred, truth, jnp.asarray(thresholds))
    s["minkowski_distance"] = float(jnp.mean(md.mean))
    for f in ("area", "perimeter", "euler"):
        s[f"minkowski_distance_{f}"] = float(jnp.mean(getattr(md, f)))
    s["csi_1mm"] = float(csi(pred, truth, 1.0, pooled=True))
    s["ets_1mm"] = float(ets(pred, truth, 1.0, pooled=True))
    s["wasserstein_wet"] = float(jnp.nanmean(wasserstein_wet(pred, truth)))
    return s


def score(preds: dict[str, np.ndarray], truth: np.ndarray, thresholds: tuple[float, ...]) -> dict[str, Any]:
    """``{model: {score: value}}`` for every prediction (see the module docstring)."""
    out: dict[str, Any] = {}
    for name, p in preds.items():
        if p.ndim == 4:  # ensemble (M, N, H, W)
            per = [_single_scores(p[k], truth, thresholds) for k in range(p.shape[0])]
            s = {k: float(np.mean([d[k] for d in per])) for k in per[0]}
            s["mae_member"] = s.pop("mae")
            s["mae"] = float(jnp.mean(mae(p.mean(axis=0), truth)))
            s["crps"] = float(jnp.mean(crps_ensemble(p, truth)))
            s["spread_error"] = float(spread_error(p, truth))
            s["members"] = int(p.shape[0])
        else:
            s = _single_scores(p, truth, thresholds)
        out[name] = s
    return out


def checks(models: dict[str, Any]) -> dict[str, Any]:
    """The issue's "Must show" comparisons on the test block, from the scores (``None`` when a model is missing)."""
    c: dict[str, Any] = {}
    mse = models.get("mse")
    for name in ("mse_minkowski_relaxed", "mse_minkowski_surrogate"):
        m = models.get(name)
        if mse is None or m is None:
            continue
        c[name] = {"beats_mse_fss_5mm_9px": m["fss_5mm_9px"] > mse["fss_5mm_9px"],
                   "beats_mse_rapsd_error": m["rapsd_error"] < mse["rapsd_error"],
                   "beats_mse_minkowski_distance": m["minkowski_distance"] < mse["minkowski_distance"],
                   "mae_change_vs_mse": m["mae"] / mse["mae"] - 1.0,
                   "mae_within_5pct": m["mae"] <= 1.05 * mse["mae"]}
    det = [models[n] for n in ("mse", "mse_minkowski_relaxed", "mse_minkowski_surrogate") if n in models]
    for name in ("generative", "generative_minkowski"):
        g = models.get(name)
        if g is None or not det:
            continue
        c[name] = {"beats_deterministic_rapsd_error": all(g["rapsd_error"] < d["rapsd_error"] for d in det),
                   "beats_deterministic_minkowski_distance": all(g["minkowski_distance"] < d["minkowski_distance"]
                                                                 for d in det),
                   "spread_error_in_0.7_1.3": 0.7 <= g["spread_error"] <= 1.3,
                   "crps_below_deterministic_mae": all(g["crps"] < d["mae"] for d in det)}
    return c


def curves(preds: dict[str, np.ndarray], truth: np.ndarray, thresholds: tuple[float, ...],
           fss_threshold: float) -> dict[str, Any]:
    """Mean RAPSD, FSS against window and mean Minkowski curves per model (members pooled) and for the truth."""
    thr = jnp.asarray(thresholds)
    limit = 2 * truth.shape[-1] - 1
    scales = [w for w in FSS_SCALES if w <= limit]

    def one(x: np.ndarray) -> dict[str, Any]:
        m = minkowski_functionals(x, thr)
        return {"rapsd": np.asarray(jnp.mean(rapsd(x).reshape(-1, rapsd(x[:1]).shape[-1]), axis=0)),
                "area": np.asarray(jnp.mean(m.area.reshape(-1, thr.size), axis=0)),
                "perimeter": np.asarray(jnp.mean(m.perimeter.reshape(-1, thr.size), axis=0)),
                "euler": np.asarray(jnp.mean(m.euler.reshape(-1, thr.size).astype(float), axis=0))}

    out: dict[str, Any] = {"truth": one(truth), "scales": np.asarray(scales)}
    _, freq = rapsd(truth[:1], return_freq=True)
    out["freq"] = freq
    for name, p in preds.items():
        d = one(p)
        obs = np.broadcast_to(truth, p.shape)
        d["fss"] = np.asarray([float(fss(p, obs, fss_threshold, w, pooled=True)) for w in scales])
        out[name] = d
    return out


def _cf(arr: np.ndarray, dims: tuple[str, ...], long_name: str) -> tuple:
    return (dims, np.asarray(arr, np.float32), {"units": "mm h-1", "standard_name": "rainfall_rate",
                                                "long_name": long_name})


def predictions_dataset(preds: dict[str, np.ndarray], truth: np.ndarray, coarse: np.ndarray, meta: xr.Dataset,
                        n_cases: int = 4, attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """CF-annotated predictions: truth, coarse input, each deterministic prediction, each ensemble's mean and
    standard deviation (patch, y, x) and its members for the first ``n_cases`` patches (member, case, y, x)."""
    data = {"truth": _cf(truth, ("patch", "y", "x"), "observed rain rate (OPERA, 2 km)"),
            "coarse": _cf(coarse, ("patch", "y_coarse", "x_coarse"), "block-averaged rain rate (model input)")}
    for name, p in preds.items():
        if p.ndim == 4:
            data[f"{name}_mean"] = _cf(p.mean(0), ("patch", "y", "x"), f"ensemble mean of {name}")
            std = (("patch", "y", "x"), np.asarray(p.std(0), np.float32),
                   {"units": "mm h-1", "long_name": f"ensemble standard deviation of {name}"})
            data[f"{name}_std"] = std
            data[f"{name}_members"] = _cf(p[:, :n_cases], ("member", "case", "y", "x"),
                                          f"ensemble members of {name}")
        else:
            data[name] = _cf(p, ("patch", "y", "x"), f"rain rate downscaled by {name}")
    ds = xr.Dataset(data, coords={k: ("patch", meta[k].values) for k in ("time", "y0", "x0") if k in meta.coords})
    for k, ln in (("y0", "first row of the patch in the source frame"),
                  ("x0", "first column of the patch in the source frame")):
        if k in ds.coords:
            ds[k].attrs["long_name"] = ln
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic downscale",
                     "comment": "Contains EUMETNET OPERA radar data (CC BY 4.0)"})
    ds.attrs.update(attrs or {})
    return ds


def score_table(models: dict[str, Any], keys: tuple[str, ...]) -> list[list[str]]:
    """Rows of formatted scores for a console table."""
    fmt: Callable[[Any], str] = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    return [[name] + [fmt(s.get(k)) for k in keys] for name, s in models.items()]

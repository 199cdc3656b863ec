"""Recipe ``nemic atmos perturb``: SPEEDY's physics on perturbed states of a truth, for off-attractor training.

Reads ``TRUTH/train.zarr`` (checked like every truth store), perturbs every column of every saved state
(:func:`nemic.data.atmosphere.perturbed.perturb_columns`: smooth random profiles of temperature, relative humidity
change and winds, an amplitude fraction ``s ~ U(0, 1)`` per column), evaluates jcm's SPEEDY physics on the
perturbed states and writes ``perturbed.zarr`` (the layout of a truth store plus ``amplitude``) and
``metrics.json`` into ``--out`` (replaced whole at the end). ``nemic atmos train --offline`` adds these columns to
the truth's when its ``perturbed`` setting names the directory. Only the training period is perturbed: the test
period stays untouched for scoring.

With ``states`` (``nemic atmos perturb --states RUN/states.nc``) the states come from elsewhere, typically the
snapshots of a free run of the hybrid (``nemic atmos run --snapshot-days``), and the truth directory only gives
the grid, the levels and the sea-surface temperature: SPEEDY's physics on the states the hybrid actually visits,
zero amplitudes leaving them as they are, is the data-aggregation step of DAgger (Ross, Gordon & Bagnell 2011,
AISTATS, arXiv:1011.0686) for a learned physics that drifts off the truth's attractor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.atmosphere.columns import TRUTH_VARIABLES
from nemic.data.atmosphere.dataset import check_truth, open_truth, truth_dataset
from nemic.data.atmosphere.perturbed import PerturbationConfig, perturbed_physics
from nemic.experiments.atmos_truth import column_water_budget
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.terminal import progress_bar

__all__ = ["generate_perturbed", "quick_perturbation_config"]


def quick_perturbation_config() -> PerturbationConfig:
    """One copy (the default); the quick path only limits the number of states (``max_times``)."""
    return PerturbationConfig(copies=1)


def open_states(path: str | Path, like: xr.Dataset) -> xr.Dataset:
    """States (T, u, v, q, ps on (time, level, lat, lon)) from a netCDF file or zarr store, checked against the
    grid and levels of the truth ``like`` (one-line :class:`DataError` otherwise), with its attributes."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"states '{p}' do not exist (write them with 'nemic atmos run --snapshot-days')")
    try:
        ds = xr.open_zarr(p, consolidated=False) if p.is_dir() else xr.open_dataset(p)
    except Exception as e:  # noqa: BLE001  (any reader error becomes one line)
        raise DataError(f"states '{p}' cannot be read: {' '.join(str(e).split())[:200]}") from None
    ds = ds[["T", "u", "v", "q", "ps"]]
    check_truth(ds, where=f"states '{p}'", truncation=int(like.attrs.get("truncation", 21)),
                sigma=like["level"].values, variables=("T", "u", "v", "q", "ps"))
    ds.attrs = dict(like.attrs)
    return ds


def generate_perturbed(cfg: PerturbationConfig, truth: str | Path, out: str | Path, *, max_times: int | None = None,
                       states: str | Path | None = None, progress: bool = True,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``out/perturbed.zarr`` with SPEEDY's physics on perturbed states of ``truth/train.zarr`` (or of
    ``states``, on the truth's grid, levels and sea-surface temperature)."""
    t0 = time.perf_counter()
    truth = Path(truth)
    if not truth.is_dir():
        raise ConfigError(f"truth directory '{truth}' does not exist (create it with 'nemic atmos generate')")
    train = open_truth(truth / "train.zarr", variables=TRUTH_VARIABLES)
    source = train if states is None else open_states(states, train)
    if max_times is not None:
        source = source.isel(time=slice(0, max_times))
    vertical = "speedy" if "speedy sigma" in str(train.attrs.get("source", "")) else "equidistant"
    sst_offset = float(train.attrs.get("sst_offset", 0.0))
    sigma_b = np.concatenate([train["level_bounds"].values[:, 0], train["level_bounds"].values[-1:, 1]])
    settings = {**cfg.__dict__, "truth": str(truth.resolve()), "max_times": max_times, "vertical": vertical,
                "states": None if states is None else str(Path(states).resolve())}
    attrs = {k: train.attrs[k] for k in ("truncation", "layers", "save_hours", "sst_offset") if k in train.attrs}
    attrs.update({"title": "SPEEDY physics on perturbed states of a truth (off-attractor training columns)",
                  "source": str(train.attrs.get("source", "")), "split": "perturbed",
                  "history": "nemic atmos perturb"})
    if states is not None:
        attrs["title"] = "SPEEDY physics on the states of a run (DAgger columns)"
        attrs["states"] = str(Path(states).resolve())
    resid, amp, n = [], [], 0
    with staged_run(out, "atmos perturb", settings) as stage, progress_bar(progress) as pb:
        task = pb.add_task("SPEEDY physics on perturbed states", total=cfg.copies * source.sizes["time"], info="")
        chunks = perturbed_physics(source, cfg, vertical=vertical, sst_offset=sst_offset,
                                   progress=lambda d, tot: pb.update(task, completed=d))
        for times, fields in chunks:
            bad = [k for k, v in fields.items() if not np.all(np.isfinite(v))]
            if bad:
                raise ConfigError(f"SPEEDY's physics gave non-finite {bad} on perturbed states near day "
                                  f"{times[0]:.2f}; lower the perturbation amplitudes")
            ds = truth_dataset(times, fields, lat=train["lat"].values, lon=train["lon"].values,
                               sigma=train["level"].values, sigma_boundaries=sigma_b, sst=train["sst"].values,
                               attrs=attrs)
            store = stage / "perturbed.zarr"
            if n == 0:
                ds.to_zarr(store, mode="w", consolidated=False)
            else:
                ds.drop_vars(["sst", "level_bounds"]).to_zarr(store, append_dim="time", consolidated=False)
            n += times.size
            budget = column_water_budget(fields["dqdt_phys"], fields["ps"], np.diff(sigma_b))
            resid.append((budget - (fields["evaporation"] - fields["precipitation"])).ravel())
            amp.append(fields["amplitude"].ravel())
        r = np.concatenate(resid)
        metrics = {"config": settings, "states": n, "columns": int(np.concatenate(amp).size),
                   "water_budget_residual_kg_m2_s": {"rms": float(np.sqrt(np.mean(r ** 2))),
                                                     "max_abs": float(np.max(np.abs(r)))},
                   "wall_seconds": time.perf_counter() - t0}
        write_json(metrics, stage / "metrics.json")
    log(f"{n} perturbed states written to {out}")
    return metrics

"""Recipe ``nemic atmos perturb``: SPEEDY's physics on perturbed states of a truth, for off-attractor training.

Reads ``TRUTH/train.zarr`` (checked like every truth store), perturbs every column of every saved state
(:func:`nemic.data.atmosphere.perturbed.perturb_columns`: smooth random profiles of temperature, relative humidity
change and winds, an amplitude fraction ``s ~ U(0, 1)`` per column), evaluates jcm's SPEEDY physics on the
perturbed states and writes ``perturbed.zarr`` (the layout of a truth store plus ``amplitude``) and
``metrics.json`` into ``--out`` (replaced whole at the end). ``nemic atmos train --offline`` adds these columns to
the truth's when its ``perturbed`` setting names the directory. Only the training period is perturbed: the test
period stays untouched for scoring.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nemic.core.errors import ConfigError
from nemic.data.atmosphere.columns import TRUTH_VARIABLES
from nemic.data.atmosphere.dataset import open_truth, truth_dataset
from nemic.data.atmosphere.perturbed import PerturbationConfig, perturbed_physics
from nemic.experiments.atmos_truth import column_water_budget
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.terminal import progress_bar

__all__ = ["generate_perturbed", "quick_perturbation_config"]


def quick_perturbation_config() -> PerturbationConfig:
    """One copy (the default); the quick path only limits the number of states (``max_times``)."""
    return PerturbationConfig(copies=1)


def generate_perturbed(cfg: PerturbationConfig, truth: str | Path, out: str | Path, *, max_times: int | None = None,
                       progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``out/perturbed.zarr`` with SPEEDY's physics on perturbed states of ``truth/train.zarr``."""
    t0 = time.perf_counter()
    truth = Path(truth)
    if not truth.is_dir():
        raise ConfigError(f"truth directory '{truth}' does not exist (create it with 'nemic atmos generate')")
    train = open_truth(truth / "train.zarr", variables=TRUTH_VARIABLES)
    if max_times is not None:
        train = train.isel(time=slice(0, max_times))
    vertical = "speedy" if "speedy sigma" in str(train.attrs.get("source", "")) else "equidistant"
    sst_offset = float(train.attrs.get("sst_offset", 0.0))
    sigma_b = np.concatenate([train["level_bounds"].values[:, 0], train["level_bounds"].values[-1:, 1]])
    settings = {**cfg.__dict__, "truth": str(truth.resolve()), "max_times": max_times, "vertical": vertical}
    attrs = {k: train.attrs[k] for k in ("truncation", "layers", "save_hours", "sst_offset") if k in train.attrs}
    attrs.update({"title": "SPEEDY physics on perturbed states of a truth (off-attractor training columns)",
                  "source": str(train.attrs.get("source", "")), "split": "perturbed",
                  "history": "nemic atmos perturb"})
    resid, amp, n = [], [], 0
    with staged_run(out, "atmos perturb", settings) as stage, progress_bar(progress) as pb:
        task = pb.add_task("SPEEDY physics on perturbed states", total=cfg.copies * train.sizes["time"], info="")
        chunks = perturbed_physics(train, cfg, vertical=vertical, sst_offset=sst_offset,
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

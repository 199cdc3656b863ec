"""Recipe ``nemic atmos generate``: the SPEEDY aquaplanet truth of the global hybrid atmosphere.

Runs jcm's SPEEDY physics on dinosaur's core (:func:`nemic.data.atmosphere.truth.jcm_truth`, offline aquaplanet),
discards a spin-up, keeps ``days`` of 6-hourly states with the physics-only tendencies, optionally coarse-grains
them in spectral space to the hybrid's truncation, and writes two CF-annotated zarr stores chunked in time:
``train.zarr`` (the first ``days - test_days``) and ``test.zarr`` (the last ``test_days``, kept apart for
evaluation), plus ``metrics.json`` (jcm's time per step on this machine, sizes, global means, the water budget of
the truth's physics).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nemic.core.errors import ConfigError
from nemic.data.atmosphere.dataset import truth_dataset
from nemic.data.atmosphere.spectral import spectral_coarsen
from nemic.data.atmosphere.truth import jcm_truth
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.terminal import progress_bar

__all__ = ["TruthConfig", "quick_truth_config", "generate", "column_water_budget"]

GRAVITY = 9.81  # m s-2 (SPEEDY's value)


@dataclasses.dataclass(frozen=True)
class TruthConfig:
    """Settings of the truth run.

    Attributes:
        truncation: jcm's spectral truncation (T21 is the hybrid's; T31 is SPEEDY's standard).
        target_truncation: truncation of the stored fields (spectral coarse-graining when below ``truncation``).
        layers: number of sigma levels. vertical: ``"speedy"`` (SPEEDY's table) or ``"equidistant"`` (the
            hybrid's default levels).
        spinup_days: discarded. days: kept (6-hourly by default). test_days: the last days, written apart.
        save_hours: interval between saved states [h]. chunk_days: days per compiled jcm call and zarr chunk.
        sst_offset: uniform change of the control SSTs [K] (4.0 gives the "+4 K" climate).
    """

    truncation: int = 21
    target_truncation: int = 21
    layers: int = 8
    vertical: str = "speedy"
    spinup_days: float = 60.0
    days: float = 100.0
    test_days: float = 25.0
    save_hours: float = 6.0
    chunk_days: float = 5.0
    sst_offset: float = 0.0

    def __post_init__(self):
        if self.target_truncation > self.truncation:
            raise ConfigError(f"target_truncation T{self.target_truncation} is finer than the run's T{self.truncation}")
        if not 0 < self.test_days < self.days:
            raise ConfigError(f"need 0 < test_days < days, got test_days={self.test_days}, days={self.days}")
        if self.layers < 2:
            raise ConfigError(f"layers must be >= 2, got {self.layers}")
        for k in ("days", "test_days"):
            n = getattr(self, k) / self.chunk_days
            if abs(n - round(n)) > 1e-9:
                raise ConfigError(f"{k} ({getattr(self, k)}) must be a whole number of chunk_days ({self.chunk_days})")


def quick_truth_config() -> TruthConfig:
    """A few days (a smoke test of the whole path, not a climate)."""
    return TruthConfig(spinup_days=1.0, days=2.0, test_days=1.0, chunk_days=1.0)


def column_water_budget(dqdt: np.ndarray, ps: np.ndarray, d_sigma: np.ndarray) -> np.ndarray:
    """Column-integrated physics moisture tendency ``sum_k dq/dt_k ps d_sigma_k / g`` [kg m-2 s-1], which for a
    closed water budget equals evaporation minus precipitation. dqdt: (..., level, lat, lon); ps: (..., lat, lon)."""
    return np.einsum("...kij,k->...ij", dqdt, d_sigma) * ps / GRAVITY


def generate(cfg: TruthConfig, out: str | Path, *, progress: bool = True,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the truth and write ``train.zarr``, ``test.zarr`` and ``metrics.json`` into ``out`` (one transaction)."""
    t_start = time.perf_counter()
    settings = dataclasses.asdict(cfg)
    with staged_run(out, "atmos generate", settings) as stage, progress_bar(progress) as pb:
        task = pb.add_task("jcm SPEEDY aquaplanet", total=cfg.spinup_days + cfg.days, info="spin-up")
        info, chunks = jcm_truth(cfg.truncation, cfg.layers, vertical=cfg.vertical, spinup_days=cfg.spinup_days, days=cfg.days,
                                 save_hours=cfg.save_hours, chunk_days=cfg.chunk_days,
                                 sst_offset=cfg.sst_offset, progress=lambda d, tot: pb.update(task, completed=d, info=f"day {d:g}"))
        lat, lon = info["lat"], info["lon"]
        sst = info["sst"]
        if cfg.target_truncation < cfg.truncation:
            from nemic.data.atmosphere.spectral import lat_lon

            lat, lon = lat_lon(cfg.target_truncation)
            sst = np.asarray(spectral_coarsen(sst, cfg.truncation, cfg.target_truncation))
        attrs = {
            "title": "SPEEDY aquaplanet truth (jcm on dinosaur), physics-only tendencies",
            "source": f"jcm SPEEDY physics, T{cfg.truncation} L{cfg.layers} ({cfg.vertical} sigma), dt {info['dt']:g} s, Neale & Hoskins "
                      "(2000) control SSTs" + (f" {cfg.sst_offset:+g} K" if cfg.sst_offset else "") + ", analytic ozone, isothermal rest start",
            "truncation": cfg.target_truncation, "run_truncation": cfg.truncation, "layers": cfg.layers,
            "spinup_days": cfg.spinup_days, "save_hours": cfg.save_hours, "sst_offset": cfg.sst_offset,
            "history": "nemic atmos generate",
        }
        test_start = cfg.spinup_days + cfg.days - cfg.test_days
        per_step, budgets, n_saved = [], [], {"train": 0, "test": 0}
        sums = {}
        first_chunk = True
        for ch in chunks:
            fields = ch.fields
            if cfg.target_truncation < cfg.truncation:
                fields = {k: np.asarray(spectral_coarsen(v, cfg.truncation, cfg.target_truncation), np.float32)
                          for k, v in fields.items()}
            if not first_chunk:
                per_step.append(ch.seconds_per_step)
            split = "test" if ch.time_days[0] > test_start + 1e-9 else "train"
            ds = truth_dataset(ch.time_days, fields, lat=lat, lon=lon, sigma=info["sigma"],
                               sigma_boundaries=info["sigma_boundaries"], sst=sst, attrs={**attrs, "split": split})
            store = stage / f"{split}.zarr"
            if n_saved[split] == 0:
                ds.to_zarr(store, mode="w", consolidated=False)
            else:
                ds.drop_vars(["sst", "level_bounds"]).to_zarr(store, append_dim="time", consolidated=False)
            n_saved[split] += ch.time_days.size
            budget = column_water_budget(fields["dqdt_phys"], fields["ps"], np.diff(info["sigma_boundaries"]))
            budgets.append((budget - (fields["evaporation"] - fields["precipitation"])).ravel())
            for k, v in fields.items():
                sums.setdefault(k, []).append(float(np.mean(v)))
            first_chunk = False
        resid = np.concatenate(budgets)
        metrics = {
            "config": settings,
            "grid": {"truncation": cfg.target_truncation, "lat": int(lat.size), "lon": int(lon.size),
                     "sigma": info["sigma"].tolist(), "dt_seconds": info["dt"]},
            "saves": n_saved,
            "jcm_seconds_per_step": float(np.median(per_step)) if per_step else None,
            "mean_of_chunk_means": {k: float(np.mean(v)) for k, v in sums.items()},
            "water_budget_residual_kg_m2_s": {"rms": float(np.sqrt(np.mean(resid ** 2))),
                                              "max_abs": float(np.max(np.abs(resid))),
                                              "mean_precipitation": float(np.mean(sums["precipitation"]))},
            "wall_seconds": time.perf_counter() - t_start,
        }
        write_json(metrics, stage / "metrics.json")
    log(f"truth written to {out}: {n_saved['train']} training and {n_saved['test']} test states")
    return metrics

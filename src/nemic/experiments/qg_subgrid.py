"""The ocean subgrid-parameterization benchmark of Ross et al. (2023) on nemic's two-layer QG model.

Recipe (each step a function here and a ``nemic qg`` command):

1. :func:`generate`: spin up the high-resolution model of a configuration, coarse-grain snapshots with the three
   operators and write CF netCDF files ``hires.nc``, ``op1.nc``, ``op2.nc``, ``op3.nc`` (coarse PV and the
   ``q_subgrid_forcing`` / ``q_forcing_total`` targets) plus ``generate.json``.
2. :func:`train_offline` / :func:`train_online`: fit a CNN closure on the forcing targets (offline) or through
   rollouts of the low-resolution model against coarse-grained high-resolution trajectories (online).
3. :func:`evaluate`: free runs of the low-resolution model with each closure, scored by the similarity
   ``1 - D(param, HR) / D(LR, HR)`` (Ross et al. 2023, eq. 9) over spectra, energy-budget terms and marginal
   distributions, written to ``metrics.json`` and PNG figures.

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError
from nemic.core.output import ensure_writable_dir, to_xarray, write_json, write_netcdf
from nemic.data.coarsen import OPERATORS, Coarsener, forcing_dataset
from nemic.models.qg import SECONDS_PER_YEAR, get_config


def steps_for(years: float, dt: float) -> int:
    n = int(round(years * SECONDS_PER_YEAR / dt))
    return n


def generate(config: str, years: float, out: str | Path, *, nx_hi: int = 256, nx_lo: int = 64, dt: float = 3600.0,
             spinup_years: float | None = None, save_every: int = 1000, operators: Sequence[str] = OPERATORS,
             seed: int = 0, progress: bool = False, write_hires: bool = True) -> dict:
    """Run the high-resolution model and write coarse-grained datasets (see the module documentation).

    Args:
        config: "eddy" or "jet".
        years: total model time (360-day years); snapshots are saved after ``spinup_years`` (default: half).
        out: output directory.
        nx_hi, nx_lo: resolutions (benchmark: 256 and 64).
        dt: timestep, s (benchmark: 3600).
        save_every: steps between saved snapshots (benchmark: 1000).
        operators: subset of ("op1", "op2", "op3").
        seed: ``jax.random`` seed of the initial condition.
    Returns:
        A summary dict (also written to ``generate.json``).
    """
    for op in operators:
        if op not in OPERATORS:
            raise ConfigError(f"unknown coarse-graining operator {op!r}; choose from {list(OPERATORS)}")
    hi, lo = get_config(config, nx_hi), get_config(config, nx_lo)
    if years <= 0:
        raise ConfigError(f"years must be > 0, got {years}")
    spinup_years = years / 2 if spinup_years is None else spinup_years
    n_total = steps_for(years, dt)
    n_total -= n_total % save_every
    if n_total < save_every:
        raise ConfigError(f"{years} years at dt={dt} s is fewer steps than save_every={save_every}")
    out = ensure_writable_dir(out)
    t0 = time.perf_counter()
    state0 = hi.random_state(jax.random.key(seed))
    traj = hi.run(state0, dt=dt, n_steps=n_total, save_every=save_every, progress=progress and "spin-up")
    wall = time.perf_counter() - t0
    keep = np.asarray(traj.t) >= spinup_years * SECONDS_PER_YEAR - 1e-6
    t = np.asarray(traj.t)[keep]
    q = np.asarray(traj.states.q)[keep]
    attrs = {"config": config, "dt": dt, "years": years, "spinup_years": spinup_years, "seed": seed}
    files = {}
    if write_hires:
        ds = to_xarray(traj.take(len(traj)), attrs={**attrs, **{f"hi_{k}": v for k, v in hi.params().items()}})
        files["hires"] = str(write_netcdf(ds, out / "hires.nc"))
    for op in operators:
        ds = forcing_dataset(Coarsener(hi, lo, op), t, q, attrs=attrs)
        files[op] = str(write_netcdf(ds, out / f"{op}.nc"))
    summary = {"config": config, "years": years, "steps": n_total, "dt": dt, "nx_hi": nx_hi, "nx_lo": nx_lo,
               "snapshots": int(keep.sum()), "wall_s": wall, "ms_per_step": 1e3 * wall / n_total,
               "files": files}
    write_json(summary, out / "generate.json")
    return summary

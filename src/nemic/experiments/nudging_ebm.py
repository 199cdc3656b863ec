"""Recipe: a flux correction of the dry energy balance model learned from its nudging tendencies.

Truth: the moist EBM (radiation of North's EBM with moist-static-energy diffusion, Hwang & Frierson 2010, GRL 37,
L24807, doi:10.1029/2010GL045440; :func:`nemic.models.ebm.moist_ebm_process`). Coarse model: the dry diffusive EBM
(North 1975, J. Atmos. Sci. 32, 2033-2043), whose heat transport has the wrong shape: a structural error.

1. the truth is run from climlab's initial condition for ``years`` years, saved every step;
2. the dry EBM is nudged toward it (tau a few days) and its nudging tendencies are recorded (CF netCDF);
3. the flux correction is the time mean of the nudging tendency over the second half of the nudged run, times
   the heat capacity: a fixed latitude profile in W m-2 (the classical flux adjustment of coupled models, Sausen,
   Barthel & Hasselmann 1988, Clim. Dyn. 2, 145-163, doi:10.1007/BF01053472);
4. the dry EBM with and without the correction is run free to equilibrium and compared with the truth's
   equilibrium: area-weighted RMSE and global-mean bias of Ts, ice-edge latitude.

With a steady reference the nudged equilibrium T_n satisfies f(T_n) + N = 0, so the corrected model's equilibrium
is T_n, whose distance from the truth is of order tau / tau_B (tau_B = C / B ~ 240 days): the bias shrinks
linearly with tau.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, check_int_at_least, check_positive
from nemic.experiments.config import staged_run
from nemic.experiments.ebm import check_ebm_size
from nemic.io.output import save_figure, write_json, write_netcdf
from nemic.core.process import AbstractProcess
from nemic.core.rollout import simulate
from nemic.core.steppers import SemiImplicitEuler
from nemic.models.ebm import SECONDS_PER_YEAR, DiffusiveEBM, EBMState, global_mean, ice_edge_latitude, \
    moist_ebm_process
from nemic.processes.nudging import Nudging, nudged_run
from nemic.io.nudging import nudging_dataset

DAY = 86400.0


class FluxCorrection(AbstractProcess):
    """A fixed heating profile ``heating`` (num_lat,) [K s-1] added to ``Ts``: a flux [W m-2] divided by the heat
    capacity, computed once (:meth:`from_flux`), so the corrected model ``ebm + correction`` holds C only once.

    The flux adjustment of Sausen et al. (1988), Clim. Dyn. 2, 145-163.
    """

    heating: jax.Array

    @classmethod
    def from_flux(cls, flux: Any, heat_capacity: Any) -> "FluxCorrection":
        """The correction of a flux profile [W m-2] in a mixed layer of ``heat_capacity`` [J m-2 K-1]."""
        return cls(heating=jnp.asarray(flux) / heat_capacity)

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        return EBMState(Ts=self.heating)


@dataclasses.dataclass(frozen=True)
class NudgingEBMConfig:
    """Settings: grid size, nudging time scale [days], nudged and free run lengths [years]."""

    num_lat: int = 90
    tau_days: float = 5.0
    years: float = 20.0
    free_years: float = 30.0
    moist_D: float = 0.3
    dry_D: float = 0.555

    def __post_init__(self):
        check_int_at_least("num_lat", self.num_lat, 4)
        for n in ("tau_days", "years", "free_years", "moist_D", "dry_D"):
            check_positive(n, getattr(self, n))
        if self.tau_days * DAY < 0.5 * SECONDS_PER_YEAR / 90:
            raise ConfigError(f"tau_days ({self.tau_days}) must be at least half a timestep "
                              f"({SECONDS_PER_YEAR / 90 / DAY / 2:.2f} days) for the explicit nudging term")
        check_ebm_size(self.num_lat, self.years, per_year=90, what="years")
        check_ebm_size(self.num_lat, self.free_years, per_year=90, what="free_years", saved_per_year=0)


def run(cfg: NudgingEBMConfig = NudgingEBMConfig(), out: str | Path = "runs/nudging_ebm", *,
        log=print) -> dict[str, Any]:
    """Run the recipe; write ``metrics.json``, ``nudged_run.nc``, ``equilibria.nc`` and ``ebm_flux_correction.png``.

    The results are staged and replace ``out`` whole at the end; a failed run leaves an earlier ``out`` as it was.
    """
    if not isinstance(cfg, NudgingEBMConfig):
        raise ConfigError(f"cfg must be a NudgingEBMConfig, got {type(cfg).__name__}")
    with staged_run(out, "nudging ebm", dataclasses.asdict(cfg)) as stage:
        return _run(cfg, stage, log=log)


def _run(cfg: NudgingEBMConfig, out: Path, *, log) -> dict[str, Any]:
    t_start = time.perf_counter()
    dry = DiffusiveEBM(cfg.num_lat, grid="lat", insolation_type="annual", D=cfg.dry_D)
    dt = dry.default_timestep
    n = int(round(cfg.years * SECONDS_PER_YEAR / dt))
    n_free = int(round(cfg.free_years * SECONDS_PER_YEAR / dt))
    s0 = dry.initial_state()

    log("[1/4] truth: the moist EBM")
    truth_proc = moist_ebm_process(dry, D=cfg.moist_D)
    truth = simulate(truth_proc, SemiImplicitEuler(), s0, dt=dt, n_steps=n)
    truth_eq = simulate(truth_proc, SemiImplicitEuler(), truth.final, dt=dt, n_steps=n_free,
                        save_every=n_free).final.Ts

    log(f"[2/4] dry EBM nudged toward the truth (tau = {cfg.tau_days:g} days)")
    nud = Nudging(truth, cfg.tau_days * DAY)
    nrun = nudged_run(dry, nud, dry.default_stepper(), s0, dt=dt, n_steps=n)  # dry + nudging: IMEX
    write_netcdf(nudging_dataset(nrun, attrs={"title": "dry EBM nudged toward the moist EBM",
                                              "tau_seconds": cfg.tau_days * DAY}), out / "nudged_run.nc")
    tend = np.asarray(nrun.nudging_tendency.states.Ts)
    flux = jnp.asarray(tend[tend.shape[0] // 2:].mean(axis=0)) * dry.heat_capacity

    log("[3/4] free runs of the dry EBM with and without the flux correction")
    eq = {"truth": np.asarray(truth_eq)}
    corrected = dry + FluxCorrection.from_flux(flux, dry.heat_capacity)  # an ImplicitExplicit like dry itself
    for name, model in (("uncorrected", dry), ("flux_corrected", corrected)):
        tr = simulate(model, SemiImplicitEuler(), s0, dt=dt, n_steps=n_free, save_every=n_free)
        eq[name] = np.asarray(tr.final.Ts)

    log("[4/4] metrics and plots")
    w = np.asarray(dry.weights)
    lat = dry.grid.lat
    metrics: dict[str, Any] = {"config": dataclasses.asdict(cfg), "models": {}}
    for name in ("uncorrected", "flux_corrected"):
        d = eq[name] - eq["truth"]
        metrics["models"][name] = {
            "rmse_Ts": float(np.sqrt(np.sum(w * d ** 2) / np.sum(w))),
            "global_mean_bias": float(global_mean(jnp.asarray(eq[name]), dry.weights)
                                      - global_mean(jnp.asarray(eq["truth"]), dry.weights)),
            "max_abs_error": float(np.max(np.abs(d))),
            "ice_edge": float(ice_edge_latitude(jnp.asarray(eq[name]), lat, dry.Tf)),
        }
    metrics["truth"] = {"global_mean_Ts": float(global_mean(jnp.asarray(eq["truth"]), dry.weights)),
                        "ice_edge": float(ice_edge_latitude(jnp.asarray(eq["truth"]), lat, dry.Tf))}
    metrics["flux_correction_W_m2"] = {"min": float(flux.min()), "max": float(flux.max()),
                                       "global_mean": float(global_mean(flux, dry.weights))}
    ds = xr.Dataset({k: ("lat", v, {"units": "degC", "long_name": f"equilibrium Ts, {k}"}) for k, v in eq.items()},
                    coords={"lat": ("lat", np.asarray(lat), {"units": "degrees_north", "standard_name": "latitude"})})
    ds["flux_correction"] = ("lat", np.asarray(flux), {"units": "W m-2", "long_name": "flux correction"})
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic"})
    write_netcdf(ds, out / "equilibria.nc")
    _plot(out, lat, eq, np.asarray(flux))
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(metrics, out / "metrics.json")
    return metrics


def _plot(out: Path, lat, eq, flux) -> None:
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("truth", "k-"), ("uncorrected", "C7--"), ("flux_corrected", "C2-.")):
        axs[0].plot(lat, eq[name], style, label=name)
    axs[0].set(xlabel="latitude (deg)", ylabel="equilibrium Ts (degC)", title="Dry EBM vs moist EBM truth")
    axs[0].legend()
    axs[1].plot(lat, flux, "C2")
    axs[1].set(xlabel="latitude (deg)", ylabel="W m-2", title="Flux correction from nudging tendencies")
    save_figure(fig, out / "ebm_flux_correction.png")


__all__ = ["FluxCorrection", "NudgingEBMConfig", "run"]

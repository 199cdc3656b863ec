"""The stochastic hybrid atmosphere: SPPT on the learned column physics, its amplitude fitted by CRPS.

:class:`SPPTBalance` is the balanced column physics of the long runs (:class:`GlobalBalance`) whose column outputs
are multiplied, before balancing, by ``1 + e`` with ``e`` a :class:`SphericalAR1Field` pattern (stochastically
perturbed parametrisation tendencies, Buizza, Miller & Palmer 1999; Palmer et al. 2009): the temperature,
humidity and wind tendencies, precipitation and evaporation of a column are scaled alike, so the column's water
budget ``sum dq/dt dp / g = E - P`` stays closed. The pattern lives in the rollout's noise state (one AR(1) step
per model step), so ``rollout(..., key=...)`` of an ensemble of keys gives an ensemble.

The amplitude ``sigma`` is fitted by the **CRPS** of ensemble forecasts: for each candidate, ensembles of
``members`` forecasts from ``n_starts`` states of the truth's training period (leads 1..``lead_days`` days); the
CRPS of T, u, q and p_s per grid point and level (``nemic.metrics.crps_ensemble``), divided by the deterministic
forecast's MAE of the same variable and lead, averaged over variables and leads; the candidate with the lowest
mean is kept (a one-parameter search: gradients of ensemble rollouts through the spectral core were beyond this
machine's budget). It is then scored on the held-out test period against the deterministic hybrid (``sigma = 0``):
CRPS, the MAE of the deterministic forecast, the ensemble-mean RMSE and spread/error
(``nemic.metrics.spread_error``) per variable and lead.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core import rollout
from nemic.core.errors import ConfigError, DataError
from nemic.experiments.atmos_climate_fixers import GlobalBalance
from nemic.experiments.atmos_climate_run import climate_stepper
from nemic.data.atmosphere.dataset import days_since_2000
from nemic.experiments.atmos_training import check_levels, reference_states
from nemic.metrics.verification_ensemble import crps_ensemble, spread_error
from nemic.models.atmosphere import ColumnPhysics, ColumnTendencies, PackedColumnFunction, PrimitiveEquations
from nemic.models.atmosphere.random_field import SphericalAR1Field
from nemic.nn.column import ColumnNet

__all__ = ["SPPTBalance", "stochastic_hybrid", "ensemble_forecasts", "forecast_scores", "VARIABLES"]

#: (short name, truth variable, field of the model's observation)
VARIABLES = (("T", "T", "air_temperature"), ("u", "u", "eastward_wind"), ("q", "q", "specific_humidity"),
             ("ps", "ps", "surface_air_pressure"))


class SPPTBalance(GlobalBalance):
    """:class:`GlobalBalance` column physics with SPPT: the column outputs times ``1 + e`` (module docs).

    Args:
        physics: the hybrid's :class:`ColumnPhysics`.
        pattern: the :class:`SphericalAR1Field` of ``e``.
        value: the current pattern (modal coefficients), bound by the rollout.
    """

    pattern: SphericalAR1Field
    value: Any = None
    stochastic: ClassVar[bool] = True

    def __init__(self, physics: ColumnPhysics, pattern: SphericalAR1Field, value: Any = None):
        self.physics = physics
        self.pattern = pattern
        self.value = value

    def _columns(self, state, t):
        if self.value is None:
            raise ConfigError("SPPTBalance has no pattern: run it through rollout/simulate with a key")
        fields, out = self.physics.columns(state, t)
        f = 1.0 + self.pattern.nodal(self.value).reshape(-1).astype(out.temperature.dtype)
        evap = None if out.evaporation is None else out.evaporation * f
        return fields, ColumnTendencies(out.temperature * f[:, None], out.specific_humidity * f[:, None],
                                        out.eastward_wind * f[:, None], out.northward_wind * f[:, None],
                                        out.precipitation * f, evap)

    def init_noise(self, state, key):
        return self.pattern.init(key, state.temperature_variation.dtype)

    def advance_noise(self, noise, key, dt):
        return self.pattern.advance(noise, key)

    def bind_noise(self, noise):
        return SPPTBalance(self.physics, self.pattern, noise)


def stochastic_hybrid(model: PrimitiveEquations, net: ColumnNet, sigma: float, *, length_km: float = 500.0,
                      tau_hours: float = 6.0, day0: float = 0.0):
    """``model + SPPTBalance(net)`` (``sigma > 0``) or ``model + GlobalBalance(net)`` (``sigma = 0``), daily
    insolation from calendar day ``day0`` at ``t = 0``."""
    check_levels(model, net)
    phys = ColumnPhysics(model.grid, PackedColumnFunction(net, net.levels), insolation="daily", day0=day0)
    if sigma == 0:
        return model + GlobalBalance(phys)
    pattern = SphericalAR1Field(model.grid, sigma, length_km, tau_hours, model.dt)
    return model + SPPTBalance(phys, pattern)


def _start_indices(ds: xr.Dataset, lead_days: int, n_starts: int) -> tuple[np.ndarray, int]:
    t_days = days_since_2000(ds["time"].values)
    per_day = int(round(1.0 / float(np.median(np.diff(t_days)))))
    n_days = (len(t_days) - 1) // per_day
    if n_days < lead_days:
        raise DataError(f"the truth period has {n_days} days, fewer than the {lead_days}-day lead")
    return np.linspace(0, len(t_days) - 1 - lead_days * per_day, n_starts).astype(int), per_day


def ensemble_forecasts(process, model: PrimitiveEquations, ds: xr.Dataset, *, members: int, lead_days: int = 5,
                       n_starts: int = 3, key: Any, stepper=None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Forecasts of ``process`` from ``n_starts`` evenly spread states of ``ds`` (members via ``vmap`` over keys;
    ``members = 1`` and a deterministic process give the deterministic forecast).

    Returns ``(forecasts, truth)``: name -> (start, member, lead, ...) and name -> (start, lead, ...).
    """
    starts, per_day = _start_indices(ds, lead_days, n_starts)
    steps_per_day = int(round(86400.0 / model.dt))
    stepper = stepper if stepper is not None else climate_stepper(model)
    ref = reference_states(model, ds)
    t_days = days_since_2000(ds["time"].values)

    def one(state0, t0, k):
        traj = rollout(process, stepper, state0, dt=model.dt, n_steps=lead_days * steps_per_day,
                       save_every=steps_per_day, observe=model.observe, t0=t0,
                       key=k if process.stochastic else None)
        return {name: getattr(traj.states, field)[1:] for name, _, field in VARIABLES}

    run = eqx.filter_jit(jax.vmap(one, in_axes=(None, None, 0)))
    fc = {name: [] for name, _, _ in VARIABLES}
    truth = {name: [] for name, _, _ in VARIABLES}
    for i, s in enumerate(starts):
        state0 = jax.tree_util.tree_map(lambda x: x[s], ref)
        keys = jax.random.split(jax.random.fold_in(key, i), members)
        out = jax.device_get(run(state0, jnp.asarray(t_days[s] * 86400.0), keys))
        idx = s + per_day * np.arange(1, lead_days + 1)
        for name, var, _ in VARIABLES:
            fc[name].append(np.asarray(out[name]))
            truth[name].append(ds[var].values[idx])
    return {k: np.stack(v) for k, v in fc.items()}, {k: np.stack(v) for k, v in truth.items()}


def forecast_scores(ensemble: dict[str, np.ndarray], deterministic: dict[str, np.ndarray],
                    truth: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Per variable and lead day: ``crps`` (mean over starts and points), ``mae`` of the deterministic forecast,
    ``crps_over_mae``, ``rmse_mean`` (ensemble mean) and ``spread_error``."""
    out = {}
    for name in ensemble:
        e, d, y = (np.asarray(a, dtype=np.float64) for a in (ensemble[name], deterministic[name], truth[name]))
        leads = y.shape[1]
        sc = {"crps": [], "mae": [], "crps_over_mae": [], "rmse_mean": [], "spread_error": []}
        for j in range(leads):
            ej = np.moveaxis(e[:, :, j], 1, 0)  # (member, start, ...)
            crps = float(np.mean(crps_ensemble(ej, y[:, j], member_axis=0)))
            mae = float(np.mean(np.abs(d[:, 0, j] - y[:, j])))
            sc["crps"].append(crps)
            sc["mae"].append(mae)
            sc["crps_over_mae"].append(crps / max(mae, 1e-300))
            sc["rmse_mean"].append(float(np.sqrt(np.mean((ej.mean(0) - y[:, j]) ** 2))))
            sc["spread_error"].append(float(spread_error(ej, y[:, j], member_axis=0)) if ej.shape[0] > 1
                                      else float("nan"))
        out[name] = sc
    return out

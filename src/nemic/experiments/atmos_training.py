"""Online training of the hybrid atmosphere: dinosaur's core + the column network, through short rollouts
against the truth, with a rollout-length curriculum (Kochkov et al. 2024, Nature 632, 1060-1066,
doi:10.1038/s41586-024-07744-y).

The hybrid is ``PrimitiveEquations + ColumnPhysics(grid, PackedColumnFunction(net, L), insolation="daily")``;
its levels must be the truth's (a truth made with ``vertical = "equidistant"`` for the core's default grid). The
reference trajectory is the truth's 6-hourly states converted to the core's spectral state
(``model.from_fields``); each iteration rolls the hybrid out from ``batch_size`` truth states for ``n`` saves and
scores every saved state with a normalised mean squared error (each state variable divided by its variance over the
reference, so vorticity, divergence, temperature, log surface pressure and humidity weigh alike). The curriculum
grows ``n`` from 6 hours to a day (:func:`nemic.train.online.fit_online`, the one loop underneath); only the
MLP's weights are trained (the stored normalisation and the level thicknesses stay fixed).
:func:`forecast_rmse` scores forecasts of 1-5 days against the held-out truth. :func:`run_online` is the recipe
``nemic atmos train --online`` (:mod:`nemic.experiments.atmos_online`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.core.rollout import rollout
from nemic.data.atmosphere.dataset import days_since_2000
from nemic.models.atmosphere import AtmosphereFields, ColumnPhysics, PackedColumnFunction, PrimitiveEquations
from nemic.nn.column import ColumnNet
from nemic.train.online import fit_online

__all__ = ["OnlineConfig", "quick_online_config", "mlp_only", "check_levels", "hybrid", "reference_states",
           "state_loss", "train_online", "forecast_rmse"]


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Settings of online training: time step, curriculum ``((saves, iterations), ...)``, batch, learning rate."""

    dt: float = 1200.0
    curriculum: tuple = ((1, 100), (2, 100), (4, 100))
    batch_size: int = 4
    learning_rate: float = 1e-4
    seed: int = 0
    truncation: int = 21
    checkpoint_grad: bool = False
    lead_days: int = 5
    n_starts: int = 4
    score_bare: bool = True
    loss_normalisation: str = "increment"

    def __post_init__(self):
        if not self.curriculum or any(len(c) != 2 or int(c[0]) < 1 or int(c[1]) < 0 for c in self.curriculum):
            raise ConfigError(f"curriculum must be ((saves >= 1, iterations >= 0), ...), got {self.curriculum!r}")
        for k in ("dt", "learning_rate"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{k} must be > 0, got {getattr(self, k)!r}")
        if self.loss_normalisation not in ("variance", "increment"):
            raise ConfigError(f"loss_normalisation must be 'variance' or 'increment', got {self.loss_normalisation!r}")
        for k in ("batch_size", "lead_days", "n_starts"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)!r}")


def quick_online_config() -> OnlineConfig:
    """Two iterations of 6-hour windows, one 1-day forecast: a smoke test of the whole path (mostly compilation)."""
    return OnlineConfig(dt=3600.0, curriculum=((1, 2),), batch_size=1, lead_days=1, n_starts=1, score_bare=False)


def mlp_only(net: ColumnNet):
    """Filter spec (``equinox.partition``) that trains the MLP's arrays and freezes the rest of ``net``."""
    spec = jax.tree_util.tree_map(lambda _: False, net)
    return eqx.tree_at(lambda n: n.mlp, spec, replace=jax.tree_util.tree_map(eqx.is_inexact_array, net.mlp))


def check_levels(model: PrimitiveEquations, net: ColumnNet) -> None:
    """A one-line :class:`DataError` when the network's sigma levels are not the model's."""
    sig = 0.5 * (np.asarray(net.sigma_boundaries[1:]) + np.asarray(net.sigma_boundaries[:-1]))
    if sig.shape != model.grid.sigma.shape or not np.allclose(sig, model.grid.sigma, atol=1e-6):
        raise DataError(f"the column network was trained on sigma levels {np.round(sig, 3).tolist()} but the model "
                        f"has {np.round(model.grid.sigma, 3).tolist()}")


def hybrid(model: PrimitiveEquations, net: ColumnNet, insolation: str = "daily", day0: float = 0.0):
    """``model + ColumnPhysics(net)``; a one-line :class:`DataError` when the net's levels are not the model's."""
    check_levels(model, net)
    return model + ColumnPhysics(model.grid, PackedColumnFunction(net, net.levels), insolation=insolation, day0=day0)


def reference_states(model: PrimitiveEquations, ds: xr.Dataset):
    """The truth's states as the model's spectral states, leaves with a leading time axis."""
    if not np.allclose(ds["level"].values, model.grid.sigma, atol=1e-6):
        raise DataError(f"the truth has sigma levels {np.round(ds['level'].values, 3).tolist()} but the model has "
                        f"{np.round(model.grid.sigma, 3).tolist()}")
    f = AtmosphereFields(jnp.asarray(ds["T"].values, float), jnp.asarray(ds["u"].values, float),
                         jnp.asarray(ds["v"].values, float), jnp.asarray(ds["q"].values, float),
                         jnp.asarray(ds["ps"].values, float), None)
    return jax.vmap(model.from_fields)(f)


def state_loss(reference: Any, normalisation: str = "variance"):
    """``metric(pred, target)``: mean over state variables of the mean squared error divided by a scale of the
    variable over ``reference`` (leading axis = time).

    ``normalisation``: ``"variance"``, the variable's variance over ``reference`` (including its time-mean spatial
    structure, which for temperature, log surface pressure and humidity is so large that their errors hardly
    count: a 6-hour persistence error is < 1e-4 of the scale for these, 0.02-0.06 for vorticity and divergence on
    the equidistant truth); ``"increment"``, the mean square of the reference's change between consecutive states,
    so that every variable's persistence error counts alike.
    """
    if normalisation == "variance":
        var = jax.tree_util.tree_map(lambda x: jnp.maximum(jnp.var(x), 1e-30), reference)
    elif normalisation == "increment":
        var = jax.tree_util.tree_map(lambda x: jnp.maximum(jnp.mean((x[1:] - x[:-1]) ** 2), 1e-30), reference)
    else:
        raise ConfigError(f"loss normalisation must be 'variance' or 'increment', got {normalisation!r}")

    def metric(pred, target):
        terms = jax.tree_util.tree_map(lambda p, t, v: jnp.mean((p - t) ** 2) / v, pred, target, var)
        leaves = jax.tree_util.tree_leaves(terms)
        return sum(leaves) / len(leaves)

    return metric


def _days(ds: xr.Dataset) -> np.ndarray:
    """The dataset's times as days since 2000-01-01 (:func:`nemic.data.atmosphere.dataset.days_since_2000`)."""
    return days_since_2000(ds["time"].values)


def train_online(net: ColumnNet, model: PrimitiveEquations, train: xr.Dataset, cfg: OnlineConfig, *,
                 progress: bool = True, checkpoint_dir=None) -> tuple[ColumnNet, list[float]]:
    """Fit ``net`` through rollouts of ``hybrid(model, net)`` against the truth ``train`` (6-hourly saves)."""
    ref = reference_states(model, train)
    t_days = _days(train)
    save_s = float(np.median(np.diff(t_days))) * 86400.0
    save_every = int(round(save_s / cfg.dt))
    if abs(save_every * cfg.dt - save_s) > 1e-6:
        raise DataError(f"the truth's save interval ({save_s:g} s) is not a whole number of steps of {cfg.dt:g} s")
    return fit_online(net, lambda n: hybrid(model, n), model.default_stepper(), ref, dt=cfg.dt,
                      save_every=save_every, curriculum=cfg.curriculum, batch_size=cfg.batch_size,
                      learning_rate=cfg.learning_rate, key=jax.random.key(cfg.seed),
                      loss=state_loss(ref, cfg.loss_normalisation),
                      reference_times=jnp.asarray(t_days * 86400.0), progress=progress,
                      checkpoint_dir=checkpoint_dir, filter_spec=mlp_only(net),
                      checkpoint_grad=cfg.checkpoint_grad)


def forecast_rmse(process, model: PrimitiveEquations, test: xr.Dataset, *, dt: float = 1200.0,
                  lead_days: int = 5, n_starts: int = 4) -> dict[str, list[float]]:
    """RMSE of T [K], u [m/s], q [kg/kg] and ps [Pa] of forecasts by ``process`` from ``n_starts`` truth states of
    ``test`` against the truth at leads 1..``lead_days`` days (mean over starts, grid points and levels)."""
    t_days = _days(test)
    per_day = int(round(1.0 / float(np.median(np.diff(t_days)))))
    n_days = (len(t_days) - 1) // per_day
    if n_days < lead_days:
        raise DataError(f"the test period has {n_days} days, fewer than the {lead_days}-day lead")
    starts = np.linspace(0, len(t_days) - 1 - lead_days * per_day, n_starts).astype(int)
    steps_per_day = int(round(86400.0 / dt))
    ref = reference_states(model, test)

    @eqx.filter_jit
    def run(state0, t0):
        traj = rollout(process, model.default_stepper(), state0, dt=dt, n_steps=lead_days * steps_per_day,
                       save_every=steps_per_day, observe=model.observe, t0=t0)
        return traj.states

    sq = {"T": [], "u": [], "q": [], "ps": []}
    for s in starts:
        state0 = jax.tree_util.tree_map(lambda x: x[s], ref)
        f = run(state0, jnp.asarray(t_days[s] * 86400.0))  # an array: one compilation for every start
        idx = s + per_day * np.arange(1, lead_days + 1)
        for k, name in (("T", "air_temperature"), ("u", "eastward_wind"), ("q", "specific_humidity"),
                        ("ps", "surface_air_pressure")):
            pred = np.asarray(getattr(f, name))[1:]  # the rollout's first save is the start state
            truth = test[k].values[idx]
            sq[k].append(((pred - truth) ** 2).reshape(lead_days, -1).mean(-1))
    return {k: np.sqrt(np.mean(v, axis=0)).tolist() for k, v in sq.items()}

"""The hybrid EBM: a neural meridional heat transport trained online, through the solver, against a moist EBM.

The reference is the moist EBM of :mod:`nemic.models.ebm.moist` (Hwang & Frierson 2010,
doi:10.1029/2010GL045440); the hybrid keeps the EBM's radiation and replaces its diffusion by
:class:`NeuralDiffusivity`, an implicit, energy-conserving, down-gradient transport whose edge diffusivity is an
MLP. It is trained with Adam on short rollouts of the seasonal cycle and tested on climates it never saw
(annual-mean equilibrium, CO2 doubling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractImplicitProcess, ImplicitExplicit
from nemic.core.rollout import rollout
from nemic.core.steppers import SemiImplicitEuler
from nemic.io.output import save_figure
from nemic.models.ebm import SECONDS_PER_YEAR, DiffusiveEBM, EBMState, latitude_grid
from nemic.models.ebm.model import _diffusion_coefficients
from nemic.models.ebm.moist import moist_ebm_process
from nemic.nn.registry import register_module
from nemic.train.loop import fit


class NeuralDiffusivity(AbstractImplicitProcess):
    """A learned meridional heat transport: flux form with an MLP edge diffusivity, treated implicitly.

    On each interior cell edge k the diffusivity is ``D_k = D_scale * softplus(mlp(x_k, T_k / 30 K) + log(e - 1))``
    [W m-2 K-1] (``T_k`` the mean of the two neighbouring cells), so it is positive, the transport is down-gradient
    and conserves energy exactly (zero flux at the poles), and a zero-initialised last layer gives ``D_k = D_scale``:
    the dry EBM. ``implicit_solve`` freezes ``D_k`` at the right-hand side and solves the tridiagonal system
    (linearly implicit, stable at the dry EBM's timestep). This is an ``AbstractProcess`` of its own until it is
    unified with ``nemic.processes.neural.NeuralTendency``.

    Attributes: mlp (eqx.nn.MLP, 2 -> 1), D_scale [W m-2 K-1], heat_capacity [J m-2 K-1], num_lat, grid.
    """

    mlp: eqx.nn.MLP
    D_scale: jax.Array
    heat_capacity: jax.Array
    num_lat: int = eqx.field(static=True)
    grid: str = eqx.field(static=True, default="sin")

    @staticmethod
    def init(model: DiffusiveEBM, key: jax.Array, *, width: int = 16, depth: int = 2,
             D_scale: float = 0.555) -> "NeuralDiffusivity":
        """A zero-output MLP (last layer zeroed): starts exactly at the dry EBM with D = D_scale."""
        mlp = eqx.nn.MLP(2, 1, width, depth, activation=jnp.tanh, key=key)
        last = mlp.layers[-1]
        mlp = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                          (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        return NeuralDiffusivity(mlp=mlp, D_scale=jnp.asarray(D_scale, float), heat_capacity=model.heat_capacity,
                                 num_lat=model.num_lat, grid=model.grid)

    def edge_diffusivity(self, T: jax.Array) -> jax.Array:
        """Diffusivity on the interior edges (num_lat-1,) [W m-2 K-1] for temperatures T (num_lat,) [degC]."""
        xe = jnp.asarray(latitude_grid(self.num_lat, self.grid)["x_edges"][1:-1])
        feats = jnp.stack([xe, 0.5 * (T[1:] + T[:-1]) / 30.0], axis=-1)
        out = jax.vmap(self.mlp)(feats)[:, 0]
        return self.D_scale * jax.nn.softplus(out + np.log(np.e - 1.0))

    def config(self) -> dict[str, Any]:
        """Hyperparameters that rebuild the skeleton (see :func:`nemic.train.checkpoint.save_module`)."""
        return {"num_lat": int(self.num_lat), "grid": str(self.grid), "width": int(self.mlp.width_size),
                "depth": int(self.mlp.depth)}

    def _coeffs(self, T):
        lo, up = _diffusion_coefficients(self.num_lat, self.grid)
        Dk = self.edge_diffusivity(T) / self.heat_capacity
        one = jnp.ones(1, Dk.dtype)
        return jnp.asarray(lo) * jnp.concatenate([one, Dk]), jnp.asarray(up) * jnp.concatenate([Dk, one])

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        T = state.Ts
        lo, up = self._coeffs(T)
        dT = jnp.diff(T)
        z = jnp.zeros(1, T.dtype)
        return EBMState(Ts=up * jnp.concatenate([dT, z]) - lo * jnp.concatenate([z, dT]))

    def implicit_solve(self, rhs: EBMState, t: Any, eta: Any) -> EBMState:
        lo, up = self._coeffs(rhs.Ts)
        dl = (-eta * lo).at[0].set(0.0)
        du = (-eta * up).at[-1].set(0.0)
        x = jax.lax.linalg.tridiagonal_solve(dl, 1.0 + eta * (lo + up), du, rhs.Ts[:, None])[:, 0]
        return EBMState(Ts=x)


def _build_neural_diffusivity(config: dict[str, Any], key: jax.Array) -> NeuralDiffusivity:
    """Skeleton for :func:`nemic.train.checkpoint.load_module` (D_scale and heat capacity come from the file)."""
    mlp = eqx.nn.MLP(2, 1, config["width"], config["depth"], activation=jnp.tanh, key=key)
    return NeuralDiffusivity(mlp=mlp, D_scale=jnp.asarray(0.0), heat_capacity=jnp.asarray(0.0),
                             num_lat=int(config["num_lat"]), grid=str(config.get("grid", "sin")))


register_module("NeuralDiffusivity", NeuralDiffusivity, build=_build_neural_diffusivity)


def hybrid_process(model: DiffusiveEBM, transport: AbstractImplicitProcess) -> ImplicitExplicit:
    """The EBM's radiation (explicit) with ``transport`` (implicit) in place of its diffusion."""
    return ImplicitExplicit(explicit=model.radiation(), implicit=transport)


def _run(process, state, n_steps, dt, t0=0.0, save_every=None):
    return rollout(process, SemiImplicitEuler(), state, dt=dt, n_steps=n_steps, t0=t0,
                   save_every=save_every or n_steps)


def train_hybrid_ebm(num_lat: int = 30, *, moist_D: float = 0.3, relative_humidity: float = 0.8,
                     albedo_width: float = 2.0, steps: int = 300, learning_rate: float = 3e-3,
                     horizon_days: float = 120.0, n_starts: int = 6, key: jax.Array | None = None,
                     dt: float | None = None, progress: bool = False, checkpoint: Any = None) -> dict[str, Any]:
    """Train a :class:`NeuralDiffusivity` online, through the solver, to reproduce a moist EBM's seasonal climate.

    The reference (:func:`~nemic.models.ebm.moist.moist_ebm_process`, Hwang & Frierson 2010) is spun up for 30
    years with daily insolation and run one more year; the loss is the mean squared Ts error [K^2] of hybrid
    rollouts of ``horizon_days`` started from ``n_starts`` reference states spread over that year (all via
    ``vmap``), saved every 5 steps. Optax Adam, ``steps`` updates of :func:`nemic.train.loop.fit`, with the MLP
    trained and ``D_scale`` and the heat capacity frozen (a ``filter_spec``). The radiation is the same in both
    models, so only the transport is learned. A NaN/inf loss, gradient or weight stops with
    :class:`~nemic.train.loop.TrainingDivergedError` (one line); ``checkpoint`` (a file) saves and resumes.

    Returns a dict with the trained process, the loss history and the models (see :func:`evaluate_hybrid_ebm`).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ConfigError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    model = DiffusiveEBM(num_lat, insolation_type="daily", albedo_width=albedo_width)
    dt = SECONDS_PER_YEAR / 90 if dt is None else dt
    steps_per_year = int(round(SECONDS_PER_YEAR / dt))
    ref_proc = moist_ebm_process(model, D=moist_D, relative_humidity=relative_humidity)
    spin = eqx.filter_jit(_run)(ref_proc, model.initial_state(), 30 * steps_per_year, dt)
    ref = eqx.filter_jit(lambda p, s: _run(p, s, steps_per_year + steps_per_year // 2, dt,
                                           t0=30 * steps_per_year * dt, save_every=1))(ref_proc, spin.final)
    horizon = max(5, int(round(horizon_days * 86400.0 / dt)) // 5 * 5)
    starts = np.linspace(0, steps_per_year, n_starts, endpoint=False).astype(int)
    idx = starts[:, None] + np.arange(0, horizon + 1, 5)[None, :]
    batch = (EBMState(Ts=ref.states.Ts[starts]), ref.t[starts], ref.states.Ts[idx])  # target (B, horizon/5+1, J)

    net = NeuralDiffusivity.init(model, key)
    trainable = eqx.tree_at(lambda n: (n.D_scale, n.heat_capacity), jax.tree_util.tree_map(eqx.is_inexact_array, net),
                            (False, False))

    def loss(n: NeuralDiffusivity, b, k) -> jax.Array:
        s0, t0, target = b
        proc = hybrid_process(model, n)
        pred = jax.vmap(lambda s, t: _run(proc, s, horizon, dt, t0=t, save_every=5).states.Ts)(s0, t0)
        return jnp.mean((pred - target) ** 2)

    res = fit(net, loss, _FixedBatch(batch), optimizer=optax.adam(learning_rate), n_iters=steps, key=key,
              filter_spec=trainable, progress=progress, description="hybrid EBM training", checkpoint=checkpoint)
    history = res.history
    return {"transport": res.model, "history": np.asarray(history), "model": model, "moist_D": moist_D,
            "relative_humidity": relative_humidity, "dt": dt, "initial_loss": history[0] if history else None,
            "horizon_steps": horizon, "n_starts": n_starts}


class _FixedBatch(eqx.Module):
    """A sampler that returns the same batch every iteration (full-batch training)."""

    batch: Any

    def __call__(self, key: jax.Array, iteration: Any = None) -> Any:
        return self.batch


def evaluate_hybrid_ebm(result: dict[str, Any], *, years: float = 30.0) -> dict[str, Any]:
    """Compare the hybrid EBM, the moist reference and the dry EBM (D = 0.555) on climates not used in training:
    the annual-mean-insolation equilibrium, the seasonal cycle (daily insolation), and the CO2-doubling response.

    Returns RMSEs of Ts [K] and global-mean quantities for the three models (JSON-ready), plus profiles.
    """
    model, net, dt = result["model"], result["transport"], result["dt"]
    n_year = int(round(SECONDS_PER_YEAR / dt))
    n = int(round(years)) * n_year
    w = np.asarray(model.weights)

    def transports(m):
        return {"reference": moist_ebm_process(m, D=result["moist_D"],
                                               relative_humidity=result["relative_humidity"]).implicit,
                "hybrid": net, "dry": m.diffusion()}

    def equilibrium_T(m):
        out = {}
        for name, tr in transports(m).items():
            run = eqx.filter_jit(lambda p, s: _run(p, s, n, dt).final.Ts)
            out[name] = np.asarray(run(hybrid_process(m, tr), m.initial_state()))
        return out

    def seasonal(m):
        out = {}
        for name, tr in transports(m).items():
            run = eqx.filter_jit(lambda p, s: _run(p, s, n + n_year, dt, save_every=1).states.Ts[-n_year:])
            out[name] = np.asarray(run(hybrid_process(m, tr), m.initial_state()))
        return out

    annual = model.__class__(model.num_lat, grid=model.grid, insolation_type="p2",
                             albedo_width=float(model.albedo_width))
    eq = equilibrium_T(annual)
    eq2 = equilibrium_T(annual.with_params(co2_ratio=2.0))
    seas = seasonal(model)
    amp = {k: v.max(0) - v.min(0) for k, v in seas.items()}

    def gm(T):
        return float((T * w).sum() / w.sum())

    report: dict[str, Any] = {"lat": np.asarray(model.lat).tolist(), "models": {}}
    for name in ("reference", "hybrid", "dry"):
        report["models"][name] = {
            "equilibrium_global_mean_Ts": gm(eq[name]),
            "equilibrium_rmse_vs_reference": float(np.sqrt(np.mean((eq[name] - eq["reference"]) ** 2))),
            "co2_doubling_global_warming": gm(eq2[name] - eq[name]),
            "co2_response_rmse_vs_reference": float(np.sqrt(np.mean(((eq2[name] - eq[name])
                                                                     - (eq2["reference"] - eq["reference"])) ** 2))),
            "seasonal_amplitude_rmse_vs_reference": float(np.sqrt(np.mean((amp[name] - amp["reference"]) ** 2))),
            "seasonal_cycle_rmse_vs_reference": float(np.sqrt(np.mean((seas[name] - seas["reference"]) ** 2))),
            "equilibrium_Ts": eq[name].tolist(), "co2_delta_Ts": (eq2[name] - eq[name]).tolist(),
            "seasonal_amplitude": amp[name].tolist(),
        }
    return report


def plot_hybrid(report: dict[str, Any], history, path) -> Path:
    """Plot training loss, equilibrium Ts, CO2 response and seasonal amplitude of the three models."""

    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    ax[0].semilogy(np.asarray(history))
    ax[0].set(xlabel="Adam step", ylabel="MSE [K^2]", title="online training loss")
    lat = report["lat"]
    for name, style in (("reference", "k-"), ("hybrid", "C1--"), ("dry", "C0:")):
        r = report["models"][name]
        ax[1].plot(lat, r["equilibrium_Ts"], style, label=name)
        ax[2].plot(lat, r["co2_delta_Ts"], style, label=name)
        ax[3].plot(lat, r["seasonal_amplitude"], style, label=name)
    ax[1].set(xlabel="latitude", ylabel="Ts [degC]", title="annual-mean equilibrium")
    ax[2].set(xlabel="latitude", ylabel="dTs [K]", title="CO2 doubling response")
    ax[3].set(xlabel="latitude", ylabel="K", title="seasonal amplitude")
    for a in ax[1:]:
        a.legend()
    fig.tight_layout()
    return save_figure(fig, path)

"""Recipe: stochastic closures of the two-scale Lorenz-96 model, judged as ensembles.

Truth: the two-scale model of the quickstart (Wilks 2005, doi:10.1256/qj.04.03; K=8, J=32, h=1, b=10, F=20) for
a given time-scale ratio ``c`` (10 and 4 in Arnold et al. 2013). Coarse model: the one-scale model at ``coarse_dt``
plus one of three closures of the subgrid tendency U:

``deterministic_nn``  the local stencil MLP of the quickstart, regressed offline then trained online (MSE through
                      rollouts); its ensemble spreads only through perturbed initial states;
``ar1``               cubic polynomial + additive AR(1) noise fitted to the residuals U - poly(X) as in Arnold,
                      Moroz & Palmer (2013, Phil. Trans. R. Soc. A 371, doi:10.1098/rsta.2011.0479): the residuals'
                      standard deviation and lag-1 autocorrelation at the coarse step;
``stochastic_nn``     the deterministic network with a Gaussian random field as an extra input
                      (:class:`~nemic.processes.stochastic.StochasticNeuralClosure`), warm-started from
                      ``deterministic_nn`` and fine-tuned with the fair CRPS of small ensembles through rollouts
                      (:func:`~nemic.train.ensemble_losses.fit_ensemble`).

Evaluation: ``n_members``-member ensembles from ``n_ics`` initial conditions of an independent truth run (initial
states perturbed by ``ic_perturbation`` for every closure), scored against the truth up to ``max_lead``: CRPS,
ensemble-mean RMSE, spread and spread/error ratio against lead time, rank histograms; the Hellinger distance
between the X distribution of an ``n_members``-member free run and the truth's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_int_at_least, check_positive
from nemic.core.random import AR1Noise
from nemic.core.rollout import ensemble_simulate
from nemic.core.steppers import RK4
from nemic.experiments.config import staged_run
from nemic.experiments.l96_closure import truth_run
from nemic.io.files import write_json
from nemic.io.terminal import progress as progress_reporter
from nemic.metrics.climate import hellinger_distance
from nemic.metrics.probabilistic import crps_ensemble, rank_histogram, spread_error_by_lead
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96
from nemic.nn.mlp import LocalStencilMLP
from nemic.processes.neural import NeuralTendency
from nemic.processes.polynomial import PolynomialClosure
from nemic.processes.stochastic import GaussianRandomField, NoisyStencilMLP, StochasticNeuralClosure
from nemic.train.ensemble_losses import fit_ensemble
from nemic.train.offline import fit_offline
from nemic.train.online import fit_online

CLOSURES = ("deterministic_nn", "ar1", "stochastic_nn")
REPORT_LEADS = (0.2, 0.5, 1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class L96StochasticConfig:
    """Settings of the stochastic Lorenz-96 recipe (non-dimensional model time; 1 unit ~ 5 days)."""

    K: int = 8
    J: int = 32
    h: float = 1.0
    b: float = 10.0
    c: float = 10.0
    F: float = 20.0
    truth_dt: float = 0.001
    coarse_dt: float = 0.005
    spinup_time: float = 5.0
    train_time: float = 50.0
    n_ics: int = 100
    ic_spacing: float = 1.0
    n_members: int = 40
    ic_perturbation: float = 0.05
    max_lead: float = 2.0
    lead_save_every: int = 10
    climate_time: float = 10.0
    polynomial_degree: int = 3
    nn_halfwidth: int = 2
    nn_width: int = 32
    nn_depth: int = 2
    offline_iters: int = 1500
    offline_batch: int = 128
    offline_lr: float = 3e-3
    online_curriculum: tuple = ((2, 150), (5, 150), (10, 200))
    online_batch: int = 32
    online_lr: float = 1e-3
    noise_channels: int = 1
    noise_length: float = 1.0
    noise_tau: float = 0.1
    noise_weight: float = 0.3
    crps_members: int = 4
    crps_curriculum: tuple = ((5, 150), (20, 150), (40, 150), (80, 100))
    crps_batch: int = 16
    crps_lr: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        check_int_at_least("K", self.K, 4)
        check_int_at_least("J", self.J, 1)
        for name in ("truth_dt", "coarse_dt", "train_time", "climate_time", "max_lead", "ic_spacing",
                     "offline_lr", "online_lr", "crps_lr", "noise_length", "noise_tau", "b"):
            check_positive(name, getattr(self, name))
        check_positive("ic_perturbation", self.ic_perturbation, allow_zero=True)
        check_positive("spinup_time", self.spinup_time, allow_zero=True)
        for name in ("n_ics", "lead_save_every", "offline_iters", "offline_batch", "online_batch", "nn_width",
                     "nn_depth", "noise_channels", "crps_batch"):
            check_int_at_least(name, getattr(self, name), 1)
        check_int_at_least("n_members", self.n_members, 2)
        check_int_at_least("crps_members", self.crps_members, 2)
        r = self.coarse_dt / self.truth_dt
        if abs(r - round(r)) > 1e-9 or round(r) < 1:
            raise ConfigError(f"coarse_dt ({self.coarse_dt}) must be a whole multiple of truth_dt ({self.truth_dt})")

    @property
    def ratio(self) -> int:
        return int(round(self.coarse_dt / self.truth_dt))

    def steps(self, duration: float, dt: float) -> int:
        return int(round(duration / dt))

    @property
    def test_time(self) -> float:
        return max((self.n_ics - 1) * self.ic_spacing + self.max_lead, self.climate_time)


#: named truth configurations: ``terrax`` is the demo configuration of Google's terrax stochastic Lorenz-96
#: parameterization (K=8, J=4, h=1, b=3, c=5, F=18); its ``c`` values replace the default (10, 4)
PRESETS: dict[str, dict[str, Any]] = {
    "wilks": {"K": 8, "J": 32, "h": 1.0, "b": 10.0, "F": 20.0, "c_values": (10.0, 4.0)},
    "terrax": {"K": 8, "J": 4, "h": 1.0, "b": 3.0, "F": 18.0, "c_values": (5.0,)},
}


def preset(name: str) -> tuple[dict[str, Any], tuple[float, ...]]:
    """``(config overrides, c values)`` of a named truth configuration (:data:`PRESETS`); one-line ConfigError for
    an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown configuration {name!r}; choose one of {sorted(PRESETS)} or give a TOML/JSON file")
    p = dict(PRESETS[name])
    return p, tuple(p.pop("c_values"))


def quick_config(**overrides: Any) -> L96StochasticConfig:
    """Tiny sizes that run the whole recipe in about a minute (for tests and a first look)."""
    base = dict(spinup_time=1.0, train_time=6.0, n_ics=8, ic_spacing=0.5, n_members=6, climate_time=2.0,
                offline_iters=100, online_curriculum=((2, 10),), crps_curriculum=((5, 10), (10, 10)),
                crps_members=2, crps_batch=4, nn_width=8, nn_depth=1)
    base.update(overrides)
    return L96StochasticConfig(**base)


# ------------------------------------------------------------------------------------------------ fitting
def fit_ar1(x: np.ndarray, u: np.ndarray, degree: int) -> tuple[PolynomialClosure, float, float]:
    """Polynomial of X for U by least squares, and the standard deviation and lag-1 autocorrelation (per saved
    step, averaged over sites) of the residuals U - poly(X): Arnold et al. (2013), additive AR(1) scheme."""
    poly = PolynomialClosure.fit(x, u, degree=degree)
    r = u - np.asarray(poly(jnp.asarray(x)))
    r = r - r.mean()
    sigma = float(r.std())
    phi = float(np.mean(r[1:] * r[:-1]) / np.mean(r * r))
    return poly, sigma, float(np.clip(phi, 0.0, 0.999))


def build_models(cfg: L96StochasticConfig, fitted: dict[str, Any]) -> dict[str, Any]:
    """The three hybrid models of the recipe (one-scale Lorenz-96 + deterministic network, + polynomial and
    AR(1) noise, + stochastic network) from the closures fitted by :func:`train`, keyed by closure name."""
    coarse = Lorenz96(F=cfg.F)
    poly, sigma, phi = fitted["ar1"]
    return {"deterministic_nn": coarse + NeuralTendency(fitted["deterministic_nn"], "x"),
            "ar1": coarse + poly + AR1Noise(sigma, phi, field="x"),
            "stochastic_nn": coarse + fitted["stochastic_nn"]}


def train(cfg: L96StochasticConfig, x_train: np.ndarray, u_train: np.ndarray, key: jax.Array, *,
          progress: bool = False, ckpt_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the three closures; returns (fitted closures, training record)."""
    k_nn, k_off, k_on, k_noise, k_crps = jax.random.split(key, 5)
    coarse = Lorenz96(F=cfg.F)
    fitted: dict[str, Any] = {}
    record: dict[str, Any] = {}
    t0 = time.perf_counter()
    fitted["ar1"] = fit_ar1(x_train, u_train, cfg.polynomial_degree)
    record["ar1"] = {"coeffs": np.asarray(fitted["ar1"][0].coeffs).tolist(), "sigma": fitted["ar1"][1],
                     "phi_per_step": fitted["ar1"][2], "seconds": time.perf_counter() - t0}

    t0 = time.perf_counter()
    net = LocalStencilMLP(cfg.nn_halfwidth, cfg.nn_width, cfg.nn_depth, key=k_nn, in_mean=float(x_train.mean()),
                          in_std=float(x_train.std()), out_scale=float(u_train.std()))
    ck = (lambda name: str(ckpt_dir / name)) if ckpt_dir is not None else (lambda name: None)
    net, h_off = fit_offline(net, x_train, u_train, n_iters=cfg.offline_iters, batch_size=cfg.offline_batch,
                             learning_rate=cfg.offline_lr, key=k_off, progress=progress, checkpoint_dir=ck("off"))
    reference = Lorenz96State(x=jnp.asarray(x_train))
    det, h_on = fit_online(NeuralTendency(net, "x"), lambda c: coarse + c, RK4(), reference, dt=cfg.coarse_dt,
                           curriculum=cfg.online_curriculum, batch_size=cfg.online_batch,
                           learning_rate=cfg.online_lr, key=k_on, progress=progress, checkpoint_dir=ck("on"))
    fitted["deterministic_nn"] = det.net
    record["deterministic_nn"] = {"offline_final_loss": float(np.mean(h_off[-20:])),
                                  "online_final_loss": float(np.mean(h_on[-20:])) if h_on else None,
                                  "seconds": time.perf_counter() - t0}

    t0 = time.perf_counter()
    noisy = NoisyStencilMLP.from_deterministic(det.net, cfg.noise_channels, key=k_noise,
                                               noise_weight=cfg.noise_weight)
    grf = GaussianRandomField((cfg.K,), sigma=1.0, length=cfg.noise_length, tau=cfg.noise_tau,
                              channels=cfg.noise_channels)
    res = fit_ensemble(StochasticNeuralClosure(noisy, grf, "x"), lambda c: coarse + c, RK4(), reference,
                       dt=cfg.coarse_dt, key=k_crps, n_members=cfg.crps_members, score="crps",
                       curriculum=cfg.crps_curriculum, batch_size=cfg.crps_batch, learning_rate=cfg.crps_lr,
                       progress=progress, checkpoint_dir=ck("crps"))
    fitted["stochastic_nn"] = res.model
    g = res.model.noise
    record["stochastic_nn"] = {"crps_first": float(np.mean(res.history[:10])) if res.history else None,
                               "crps_final": float(np.mean(res.history[-20:])) if res.history else None,
                               "noise_sigma": np.asarray(g.sigma).tolist(),
                               "noise_length": np.asarray(g.length).tolist(),
                               "noise_tau": np.asarray(g.tau).tolist(),
                               "seconds": time.perf_counter() - t0}
    record["histories"] = {"offline": list(map(float, h_off)), "online": list(map(float, h_on)),
                           "crps": list(map(float, res.history))}
    return fitted, record


# ------------------------------------------------------------------------------------------------ evaluation
def ensemble_forecasts(model: Any, x0: np.ndarray, cfg: L96StochasticConfig, key: jax.Array,
                       n_steps: int, save_every: int, n_members: int | None = None, *, progress: bool = False,
                       label: str = "ensemble") -> tuple[np.ndarray, np.ndarray]:
    """``n_members`` members from each initial state in ``x0`` (N, K), perturbed by ``ic_perturbation``.

    Returns (members (N, M, L, K), blow-up flags (N, M)). One compiled, vectorised call over all N*M members per
    progress segment (:func:`~nemic.core.rollout.ensemble_simulate`; the same numbers as one ``ensemble_rollout``).
    """
    n, m = x0.shape[0], cfg.n_members if n_members is None else n_members
    k_pert, k_run = jax.random.split(key)
    pert = cfg.ic_perturbation * jax.random.normal(k_pert, (n, m, cfg.K))
    states0 = Lorenz96State(x=(jnp.asarray(x0)[:, None, :] + pert).reshape(n * m, cfg.K))
    keys = jax.random.split(k_run, n * m) if model.stochastic else None
    with progress_reporter(label, enabled=progress) as report:
        traj = ensemble_simulate(model, RK4(), states0, keys=keys, dt=cfg.coarse_dt, n_steps=n_steps,
                                 save_every=save_every, progress=report)
    x = np.asarray(traj.states.x).reshape(n, m, -1, cfg.K)
    return x, np.asarray(traj.blowup_step).reshape(n, m) >= 0


def evaluate(model: Any, cfg: L96StochasticConfig, x_test: np.ndarray, key: jax.Array, *, progress: bool = False,
             name: str = "") -> dict[str, Any]:
    """Scores against lead time over ``n_ics`` initial conditions, and the climate of a free ensemble run."""
    k_fc, k_clim = jax.random.split(key)
    spacing = cfg.steps(cfg.ic_spacing, cfg.coarse_dt)
    n_lead = cfg.steps(cfg.max_lead, cfg.coarse_dt)
    n_lead -= n_lead % cfg.lead_save_every
    starts = np.arange(cfg.n_ics) * spacing
    ens, blown = ensemble_forecasts(model, x_test[starts], cfg, k_fc, n_lead, cfg.lead_save_every,
                                    progress=progress, label=f"{name} forecasts".strip())
    idx = starts[:, None] + np.arange(0, n_lead + 1, cfg.lead_save_every)[None, :]
    truth = x_test[idx]  # (N, L, K)
    leads = np.arange(0, n_lead + 1, cfg.lead_save_every) * cfg.coarse_dt
    members = jnp.asarray(np.moveaxis(ens, 1, 0))  # (M, N, L, K)
    crps = np.asarray(jnp.mean(crps_ensemble(members, truth, fair=True), axis=(0, 2)))
    se = {k: np.asarray(v) for k, v in spread_error_by_lead(members, truth, lead_axis=1).items()}
    hists = {}
    for lead in REPORT_LEADS:
        i = int(np.argmin(np.abs(leads - lead)))
        if abs(leads[i] - lead) < 1e-9:
            hists[f"{lead:.1f}"] = np.asarray(rank_histogram(members[:, :, i], truth[:, i],
                                                             key=jax.random.key(i)))

    # climate: an n_members-member free run from independent states of the test period
    n_clim = cfg.steps(cfg.climate_time, cfg.coarse_dt)
    clim_starts = np.linspace(0, x_test.shape[0] - 1, cfg.n_members).astype(int)
    free, free_blown = ensemble_forecasts(model, x_test[clim_starts], cfg, k_clim, n_clim, 1, n_members=1,
                                          progress=progress, label=f"{name} free run".strip())
    free = free[:, 0]  # (n_members, T, K)
    spin = min(free.shape[1] - 1, cfg.steps(1.0, cfg.coarse_dt))  # drop the first time unit (memory of the start)
    return {"lead_times": leads, "crps": crps, "rmse": se["rmse"], "spread": se["spread"], "ratio": se["ratio"],
            "rank_histograms": hists, "blown_members": int(blown.sum()),
            "free_run": free[:, spin:], "free_blown": int(free_blown.sum()),
            "hellinger_x": hellinger_distance(free[:, spin:], x_test, bins=50),
            "example": ens[0]}


def _at(leads: np.ndarray, curve: np.ndarray) -> dict[str, float | None]:
    out = {}
    for lead in REPORT_LEADS:
        i = int(np.argmin(np.abs(leads - lead)))
        out[f"{lead:.1f}"] = float(curve[i]) if abs(leads[i] - lead) < 1e-9 else None
    return out


def summarise(results: dict[str, dict[str, Any]], cfg: L96StochasticConfig) -> dict[str, Any]:
    """The ``closures`` part of metrics.json, and the must-show checks of the issue."""
    closures = {}
    for name, r in results.items():
        closures[name] = {"crps": _at(r["lead_times"], r["crps"]), "rmse": _at(r["lead_times"], r["rmse"]),
                          "spread": _at(r["lead_times"], r["spread"]),
                          "spread_error": _at(r["lead_times"], r["ratio"]),
                          "hellinger_x": r["hellinger_x"], "blown_forecast_members": r["blown_members"],
                          "blown_free_members": r["free_blown"]}
    checks: dict[str, Any] = {}
    if {"stochastic_nn", "ar1", "deterministic_nn"} <= set(closures):
        s, a, d = (closures[n] for n in ("stochastic_nn", "ar1", "deterministic_nn"))
        checks["crps_gain_vs_ar1_at_lead_1"] = 1.0 - s["crps"]["1.0"] / a["crps"]["1.0"]
        checks["beats_ar1_crps_by_10pct_at_lead_1"] = checks["crps_gain_vs_ar1_at_lead_1"] >= 0.10
        checks["beats_ar1_hellinger"] = s["hellinger_x"] < a["hellinger_x"]
        ratio = results["stochastic_nn"]["ratio"]
        leads = results["stochastic_nn"]["lead_times"]
        sel = (leads >= 0.2 - 1e-9) & (leads <= 2.0 + 1e-9)
        checks["spread_error_range_0.2_to_2"] = [float(ratio[sel].min()), float(ratio[sel].max())] if sel.any() \
            else None
        checks["spread_error_within_0.8_1.25"] = bool(sel.any() and ratio[sel].min() >= 0.8
                                                      and ratio[sel].max() <= 1.25)
        rd = results["deterministic_nn"]["crps"]
        rs = results["stochastic_nn"]["crps"]
        checks["beats_deterministic_crps_every_lead_from_0.2"] = bool(np.all(rs[sel] < rd[sel]))
    return {"closures": closures, "checks": checks}


def run(cfg: L96StochasticConfig, out: Path, *, progress: bool = False, log=print) -> dict[str, Any]:
    """Run the recipe for one value of ``c``; write netCDF/PNG files into the existing directory ``out`` and
    return the metrics (without writing metrics.json; :func:`run_all` does)."""
    from nemic.experiments.l96_stochastic_plots import plot_all, write_datasets

    t_start = time.perf_counter()
    key = jax.random.PRNGKey(cfg.seed)
    k_train, k_test, k_fit, k_eval = jax.random.split(key, 4)
    truth = TwoScaleLorenz96(h=cfg.h, b=cfg.b, c=cfg.c, F=cfg.F)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"[c={cfg.c:g}] truth runs of the two-scale model")
    shim = _TruthShim(cfg)
    tr, u_train = truth_run(truth, shim, k_train, cfg.train_time, progress)
    te, _ = truth_run(truth, shim, k_test, cfg.test_time, progress)
    x_train, x_test = np.asarray(tr.states.x), np.asarray(te.states.x)
    timings["truth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"[c={cfg.c:g}] closures: polynomial + AR(1), deterministic NN (offline + online), stochastic NN (CRPS)")
    fitted, record = train(cfg, x_train, u_train, k_fit, progress=progress, ckpt_dir=out / "checkpoints")
    timings["training"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"[c={cfg.c:g}] {cfg.n_members}-member ensembles from {cfg.n_ics} initial conditions")
    models = build_models(cfg, fitted)
    results = {name: evaluate(models[name], cfg, x_test, jax.random.fold_in(k_eval, i), progress=progress,
                              name=name) for i, name in enumerate(CLOSURES)}
    timings["evaluation"] = time.perf_counter() - t0

    metrics = summarise(results, cfg)
    metrics["config"] = dataclasses.asdict(cfg)
    metrics["training"] = {k: v for k, v in record.items() if k != "histories"}
    write_datasets(out, cfg, results, x_test)
    plot_all(out, cfg, results, x_test, record["histories"])
    timings["total"] = time.perf_counter() - t_start
    metrics["timings_seconds"] = timings
    return metrics


class _TruthShim:
    """The settings :func:`nemic.experiments.l96_closure.truth_run` reads."""

    def __init__(self, cfg: L96StochasticConfig):
        self.K, self.J, self.truth_dt, self.coarse_dt = cfg.K, cfg.J, cfg.truth_dt, cfg.coarse_dt
        self.spinup_time, self.ratio = cfg.spinup_time, cfg.ratio

    def steps(self, duration: float, dt: float) -> int:
        return int(round(duration / dt))


def run_all(cfg: L96StochasticConfig, out: str | Path, c_values: tuple[float, ...] = (10.0, 4.0), *,
            progress: bool = False, log=print) -> dict[str, Any]:
    """Run the recipe for every ``c`` in ``c_values`` into ``out/c<c>/`` and write ``out/metrics.json``.

    ``metrics.json`` holds ``closures`` of the first ``c`` (10 by default, the issue's headline case) and
    ``by_c["<c>"]`` with every case's metrics. Written through one run transaction: a failed run leaves the
    earlier results of ``out`` as they were.
    """

    if not c_values:
        raise ConfigError("give at least one value of c")
    t0 = time.perf_counter()
    settings = {"config": dataclasses.asdict(cfg), "c_values": list(c_values)}
    with staged_run(out, "l96 stochastic", settings) as stage:
        by_c = {}
        for c in c_values:
            sub = stage / f"c{c:g}"
            sub.mkdir(exist_ok=True)
            by_c[f"{c:g}"] = run(dataclasses.replace(cfg, c=float(c)), sub, progress=progress, log=log)
            write_json(by_c[f"{c:g}"], sub / "metrics.json")
        first = by_c[f"{c_values[0]:g}"]
        metrics = {"c": float(c_values[0]), "closures": first["closures"], "checks": first["checks"],
                   "by_c": by_c, "wall_seconds": time.perf_counter() - t0}
        write_json(metrics, stage / "metrics.json")
    return metrics

"""Classic energy-balance-model experiments: equilibrium climate, CO2 doubling, snowball-Earth hysteresis in S0.

Each experiment is a function returning NumPy/xarray results; the ``nemic ebm`` commands call them and write
netCDF, JSON and PNG files. The hybrid EBM (a neural heat transport trained through the solver against a moist
EBM) lives in :mod:`nemic.experiments.ebm_hybrid`.

References:
    North, G. R. (1975), J. Atmos. Sci. 32, 2033-2043 (ice-cap solution, small-ice-cap instability).
    North, Cahalan & Coakley (1981), Rev. Geophys. 19, 91-121, doi:10.1029/RG019i001p00091 (EBM review).
    Budyko (1969), Tellus 21, 611-619; Sellers (1969), J. Appl. Meteor. 8, 392-400 (the snowball bifurcation).
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
import xarray as xr

from nemic.core.errors import BlowUpError, ConfigError
from nemic.core.rollout import Trajectory, rollout
from nemic.io.output import save_figure, to_xarray
from nemic.models.ebm import SECONDS_PER_YEAR, DiffusiveEBM, EBMState, global_mean, ice_edge_latitude, latitude_grid
from nemic.train.calibration import check_targets, ensemble_kalman_inversion, fit_gradient, identifiability, misfit

PARAM_NAMES = ("S0", "s2", "A", "B", "D", "a0", "a2", "ai", "Tf", "water_depth", "albedo_width", "co2_ratio")


#: largest number of latitude cells, of saved values, and of steps accepted before a run starts
MAX_NUM_LAT = 100_000
MAX_SAVED_VALUES = 2 * 10**9
MAX_STEPS = 10**8


def check_ebm_size(num_lat: int, years: float, *, per_year: float = 90, what: str = "years",
                   saved_per_year: float | None = None) -> None:
    """Refuse an EBM run whose grid or length cannot fit in memory or time with one line, before any work.

    ``per_year`` steps per year are taken and ``saved_per_year`` states are kept (every step by default).
    """
    if num_lat > MAX_NUM_LAT:
        raise ConfigError(f"num_lat must be at most {MAX_NUM_LAT}, got {num_lat}")
    steps = years * per_year
    if steps > MAX_STEPS:
        raise ConfigError(f"{what} = {years:g} would take {steps:.3g} steps; at most {MAX_STEPS:.0e} are allowed")
    saved = years * (per_year if saved_per_year is None else saved_per_year) * num_lat
    if saved > MAX_SAVED_VALUES:
        raise ConfigError(f"{what} = {years:g} with num_lat = {num_lat} would keep {saved:.3g} values "
                          f"(about {8 * saved / 2**30:.0f} GiB); reduce them")


def model_attrs(model: DiffusiveEBM) -> dict[str, Any]:
    """The model's parameters as plain floats/strings (for netCDF attributes and JSON); the model is rebuilt from
    them by ``DiffusiveEBM.from_attrs``."""
    return model.to_attrs()


@eqx.filter_jit
def _run_years(model: DiffusiveEBM, state: EBMState, n_steps: int, dt: float) -> tuple[EBMState, jax.Array]:
    traj = rollout(model, model.default_stepper(), state, dt=dt, n_steps=n_steps, save_every=n_steps)
    return traj.final, traj.blowup_step


def equilibrium(model: DiffusiveEBM, state: EBMState | None = None, *, tol: float = 1e-6, chunk_years: float = 10.0,
                max_years: float = 2000.0, dt: float | None = None) -> tuple[EBMState, float]:
    """Integrate in chunks of ``chunk_years`` until no temperature changes by more than ``tol`` K per year.

    Returns ``(state, years integrated)``; raises :class:`ConfigError` if not converged within ``max_years``.
    The result is a *stable* equilibrium (the time integration cannot converge to an unstable one).
    """
    state = model.initial_state() if state is None else state
    dt = model.default_timestep if dt is None else float(dt)
    n = max(1, int(round(chunk_years * SECONDS_PER_YEAR / dt)))
    years = 0.0
    while years < max_years:
        new, bad = _run_years(model, state, n, dt)
        if int(bad) >= 0:
            done = int(round(years * SECONDS_PER_YEAR / dt))
            err = BlowUpError(done + n, (done + n) * dt, "Ts", None)
            limit = 2.0 * float(model.heat_capacity) / max(float(model.B), 1e-30)
            err.args = (f"EBM blew up (Ts became NaN/inf) within steps {done + 1}-{done + n}: the explicit "
                        f"radiation needs dt well below 2 C / B = {limit:g} s, got dt = {dt:g} s",)
            raise err
        years += n * dt / SECONDS_PER_YEAR
        change = float(jnp.max(jnp.abs(new.Ts - state.Ts))) / (n * dt / SECONDS_PER_YEAR)
        state = new
        if change < tol:
            return state, years
    raise ConfigError(f"EBM did not reach equilibrium within {max_years} years (last change {change:.2e} K/yr)")


def equilibrium_dataset(model: DiffusiveEBM, state: EBMState) -> xr.Dataset:
    """A CF dataset of an equilibrium state with its diagnostics (lat, lat_edges coordinates)."""
    g = latitude_grid(model.num_lat, model.grid)
    d = {k: np.asarray(v) for k, v in model.diagnostics(state).items()}
    ds = xr.Dataset(
        {"Ts": ("lat", np.asarray(state.Ts), {"units": "degC", "standard_name": "surface_temperature",
                                              "long_name": "zonal-mean surface temperature"}),
         "ASR": ("lat", d["ASR"], {"units": "W m-2", "long_name": "absorbed shortwave radiation"}),
         "OLR": ("lat", d["OLR"], {"units": "W m-2", "long_name": "outgoing longwave radiation",
                                   "standard_name": "toa_outgoing_longwave_flux"}),
         "albedo": ("lat", d["albedo"], {"units": "1", "long_name": "planetary albedo"}),
         "insolation": ("lat", d["insolation"], {"units": "W m-2", "standard_name": "toa_incoming_shortwave_flux"}),
         "heat_transport": ("lat_edges", d["heat_transport"], {"units": "PW",
                                                               "long_name": "northward heat transport"})},
        coords={"lat": ("lat", g["lat"], {"units": "degrees_north", "standard_name": "latitude"}),
                "lat_edges": ("lat_edges", g["lat_edges"], {"units": "degrees_north"})},
    )
    ds.attrs.update(model_attrs(model))
    ds.attrs.update({"Conventions": "CF-1.10", "source": "nemic diffusive EBM",
                     "global_mean_Ts": float(d["global_mean_Ts"]), "ice_edge": float(d["ice_edge"])})
    return ds


def trajectory_dataset(model: DiffusiveEBM, traj: Trajectory) -> xr.Dataset:
    """A trajectory of the EBM as a CF dataset (time in seconds, lat in degrees)."""
    g = latitude_grid(model.num_lat, model.grid)
    return to_xarray(traj, attrs=model_attrs(model),
                     coords={"lat": ("lat", g["lat"], {"units": "degrees_north", "standard_name": "latitude"})})


def seasonal_climatology(model: DiffusiveEBM, state: EBMState | None = None, *, spinup_years: float = 30.0,
                         steps_per_year: int = 360) -> xr.Dataset:
    """Seasonal cycle of a daily-insolation EBM: spin up, then one year saved at every step, as 12 monthly means.

    Returns a CF dataset with ``Ts``, ``ASR``, ``OLR``, ``insolation`` and ``albedo`` on (month, lat), their annual
    means (``*_annual``), the seasonal amplitude of Ts (max - min over the year) and the annual-mean ice edge.
    """
    if model.insolation_type != "daily":
        raise ConfigError("seasonal_climatology needs insolation_type='daily'")
    if steps_per_year % 12:
        raise ConfigError(f"steps_per_year must be a multiple of 12, got {steps_per_year}")
    dt = SECONDS_PER_YEAR / steps_per_year
    state = model.initial_state() if state is None else state
    n_spin = int(round(spinup_years)) * steps_per_year

    @eqx.filter_jit
    def run(model, state):
        spun = rollout(model, model.default_stepper(), state, dt=dt, n_steps=n_spin, save_every=n_spin)
        year = rollout(model, model.default_stepper(), spun.final, dt=dt, n_steps=steps_per_year,
                       t0=n_spin * dt)
        Ts, t = year.states.Ts[1:], year.t[1:]
        asr, olr, alb, q = jax.vmap(lambda T, tt: model.explicit.fluxes(T, tt))(Ts, t)
        return Ts, asr, olr, alb, q

    fields = [np.asarray(a) for a in run(model, state)]
    monthly = [f.reshape(12, steps_per_year // 12, -1).mean(1) for f in fields]
    g = latitude_grid(model.num_lat, model.grid)
    names = ("Ts", "ASR", "OLR", "albedo", "insolation")
    units = ("degC", "W m-2", "W m-2", "1", "W m-2")
    data = {n: (("month", "lat"), v, {"units": u}) for n, v, u in zip(names, monthly, units)}
    data.update({f"{n}_annual": ("lat", f.mean(0), {"units": u}) for n, f, u in zip(names, fields, units)})
    data["Ts_amplitude"] = ("lat", fields[0].max(0) - fields[0].min(0), {"units": "K",
                                                                       "long_name": "seasonal range of Ts"})
    ds = xr.Dataset(data, coords={"month": np.arange(1, 13),
                                  "lat": ("lat", g["lat"], {"units": "degrees_north", "standard_name": "latitude"})})
    ds["Ts"].attrs["standard_name"] = "surface_temperature"
    ds.attrs.update(model_attrs(model))
    Tann = fields[0].mean(0)
    ds.attrs.update({"Conventions": "CF-1.10", "global_mean_Ts": float((Tann * g["weights"]).sum() / 2),
                     "ice_edge": float(ice_edge_latitude(jnp.asarray(Tann), g["lat"], model.Tf)),
                     "spinup_years": spinup_years})
    return ds


def co2_doubling(model: DiffusiveEBM, state: EBMState | None = None, *, ratio: float = 2.0,
                 tol: float = 1e-6) -> dict[str, Any]:
    """Equilibrium response to multiplying CO2 by ``ratio`` (forcing 5.35 ln(ratio) W m-2).

    Returns global-mean warming, the ice-edge shift, the no-feedback estimate F/B, and the two equilibria.
    The climate sensitivity exceeds F/B by the ice-albedo feedback.
    """
    base, _ = equilibrium(model, state, tol=tol)
    forced_model = model.with_params(co2_ratio=float(model.co2_ratio) * ratio)
    forced, _ = equilibrium(forced_model, base, tol=tol)
    w = model.weights
    d0, d1 = model.diagnostics(base), forced_model.diagnostics(forced)
    forcing = 5.35 * float(np.log(ratio))
    dT = float(global_mean(forced.Ts - base.Ts, w))
    return {"forcing_W_m2": forcing, "delta_global_mean_Ts": dT, "no_feedback_delta_T": forcing / float(model.B),
            "ice_edge_control": float(d0["ice_edge"]), "ice_edge_forced": float(d1["ice_edge"]),
            "feedback_parameter_W_m2_K": forcing / dT if dT else float("inf"),
            "control": base, "forced": forced, "forced_model": forced_model}


def hysteresis(model: DiffusiveEBM, S0_values, *, years_per_value: float = 40.0, dt: float | None = None,
               state: EBMState | None = None, start: str = "warm") -> xr.Dataset:
    """Snowball-Earth hysteresis: sweep S0 down and up, starting each value from the previous equilibrium.

    With ``start="warm"`` the down-sweep starts from a warm state (``30 - 45 x^2`` degC) and the up-sweep from the
    end of the down-sweep; with ``start="cold"`` the up-sweep starts from a snowball (-60 degC everywhere) and the
    down-sweep follows it. Each S0 value is integrated for ``years_per_value`` years; a sweep is one ``lax.scan``.

    Args:
        S0_values: 1-D sequence of solar constants [W m-2] (at least 2; sorted here).
        state: initial state overriding the default of ``start``.

    Returns:
        Dataset with dims ``branch`` ("down", "up") and ``S0``: global-mean Ts [degC], ice edge [deg], and the
        Ts profiles.
    """
    S0 = np.sort(np.asarray(S0_values, dtype=float).ravel())
    if S0.size < 2:
        raise ConfigError(f"the S0 sweep needs at least 2 values, got {S0.size}")
    if not np.all(np.isfinite(S0)) or np.any(S0 < 0):
        raise ConfigError("S0 values must be finite and >= 0")
    dt = model.default_timestep if dt is None else float(dt)
    n = max(1, int(round(years_per_value * SECONDS_PER_YEAR / dt)))
    if start not in ("warm", "cold"):
        raise ConfigError(f"start must be 'warm' or 'cold', got {start!r}")
    if state is None:
        warm = start == "warm"
        state = model.initial_state(Ts=30.0 - 45.0 * model.x**2 if warm else jnp.full(model.num_lat, -60.0))
    lat = latitude_grid(model.num_lat, model.grid)["lat"]

    @eqx.filter_jit
    def sweep(model, state, values):
        def body(s, S0v):
            s = rollout(model.with_params(S0=S0v), model.default_stepper(), s, dt=dt, n_steps=n,
                        save_every=n).final
            return s, s.Ts
        return jax.lax.scan(body, state, values)

    if start == "warm":
        last, T_down = sweep(model, state, jnp.asarray(S0[::-1]))
        _, T_up = sweep(model, last, jnp.asarray(S0))
    else:
        last, T_up = sweep(model, state, jnp.asarray(S0))
        _, T_down = sweep(model, last, jnp.asarray(S0[::-1]))
    T_down = np.asarray(T_down)[::-1]
    T = np.stack([T_down, np.asarray(T_up)])
    w = np.asarray(model.weights)
    gm = (T * w).sum(-1) / w.sum()
    edge = np.asarray(jax.vmap(jax.vmap(lambda t: ice_edge_latitude(t, lat, model.Tf)))(jnp.asarray(T)))
    ds = xr.Dataset(
        {"global_mean_Ts": (("branch", "S0"), gm, {"units": "degC", "long_name": "global-mean surface temperature"}),
         "ice_edge": (("branch", "S0"), edge, {"units": "degrees_north", "long_name": "ice-edge latitude"}),
         "Ts": (("branch", "S0", "lat"), T, {"units": "degC", "standard_name": "surface_temperature"})},
        coords={"branch": ["down", "up"], "S0": ("S0", S0, {"units": "W m-2", "long_name": "solar constant"}),
                "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"})},
    )
    ds.attrs.update(model_attrs(model))
    ds.attrs.update({"Conventions": "CF-1.10", "years_per_value": years_per_value, "start": start,
                     **hysteresis_transitions(ds)})
    return ds


def hysteresis_transitions(ds: xr.Dataset) -> dict[str, float]:
    """The S0 values where the down-sweep falls into the snowball and the up-sweep leaves it (NaN if not found):
    the first S0 (going down) with the equatorial cell frozen, and the first S0 (going up) with it ice-free."""
    S0 = ds["S0"].values
    down = ds["ice_edge"].sel(branch="down").values
    up = ds["ice_edge"].sel(branch="up").values
    frozen_down = np.where(down <= 0.0)[0]
    thawed_up = np.where(up > 0.0)[0]
    return {"snowball_S0": float(S0[frozen_down.max()]) if frozen_down.size else float("nan"),
            "deglaciation_S0": float(S0[thawed_up.min()]) if thawed_up.size else float("nan")}


# ----------------------------------------------------------------------------------------------------- plots
def plot_equilibrium(ds: xr.Dataset, path, ds_forced: xr.Dataset | None = None) -> Path:
    """Plot Ts, albedo, radiation and heat transport of an equilibrium (and a forced one) to a PNG file."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].plot(ds.lat, ds.Ts, label="control")
    if ds_forced is not None:
        ax[0].plot(ds_forced.lat, ds_forced.Ts, label="forced")
    ax[0].axhline(ds.attrs["Tf"], color="k", lw=0.5, ls="--")
    ax[0].set(xlabel="latitude", ylabel="Ts [degC]", title="surface temperature")
    ax[0].legend()
    ax[1].plot(ds.lat, ds.ASR, label="ASR")
    ax[1].plot(ds.lat, ds.OLR, label="OLR")
    ax[1].set(xlabel="latitude", ylabel="W m-2", title="radiation")
    ax[1].legend()
    ax[2].plot(ds.lat_edges, ds.heat_transport)
    ax[2].set(xlabel="latitude", ylabel="PW", title="northward heat transport")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_seasonal(ds: xr.Dataset, path) -> Path:
    """Plot the monthly Ts (latitude-month section) and the seasonal amplitude of a seasonal climatology."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    pc = ax[0].contourf(ds.month, ds.lat, ds.Ts.T, levels=21, cmap="RdBu_r")
    fig.colorbar(pc, ax=ax[0], label="Ts [degC]")
    ax[0].set(xlabel="month", ylabel="latitude", title="seasonal cycle of Ts")
    ax[1].plot(ds.lat, ds.Ts_amplitude)
    ax[1].set(xlabel="latitude", ylabel="K", title="seasonal range of Ts")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_hysteresis(ds: xr.Dataset, path) -> Path:
    """Plot the hysteresis loop (global-mean Ts and ice edge against S0, both branches) to a PNG file."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for b, style in (("down", "-o"), ("up", "-s")):
        ax[0].plot(ds.S0, ds.global_mean_Ts.sel(branch=b), style, ms=2.5, label=f"S0 {b}")
        ax[1].plot(ds.S0, ds.ice_edge.sel(branch=b), style, ms=2.5, label=f"S0 {b}")
    ax[0].set(xlabel="S0 [W m-2]", ylabel="global-mean Ts [degC]", title="snowball hysteresis")
    ax[1].set(xlabel="S0 [W m-2]", ylabel="ice edge [deg N]", title="ice edge")
    for a in ax:
        a.legend()
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------- calibration
TARGETS = ("Ts", "OLR", "Ts_seasonal")


def ebm_forward(model: DiffusiveEBM, names, *, targets=("Ts", "OLR"), years: float = 20.0,
                dt: float | None = None, state: EBMState | None = None):
    """The forward map of an EBM calibration: ``theta (p,) -> observations``, and the parameter scales.

    Parameters are ``value = scale * theta`` with ``scale`` the value in ``model`` (the first guess), so theta is
    non-dimensional and starts at 1. The model is integrated for ``years`` from ``state`` (default climlab's
    initial condition); observations are the final Ts [degC] and/or OLR [W m-2] profiles, or with
    ``"Ts_seasonal"`` (needs ``insolation_type="daily"``) Ts at 12 instants of the last year.
    """
    names = list(names)
    unknown = [n for n in names if n not in PARAM_NAMES]
    if not names or unknown:
        raise ConfigError(f"parameters to calibrate must be a non-empty subset of {PARAM_NAMES}, got {names}")
    bad = [t for t in targets if t not in TARGETS]
    if not targets or bad:
        raise ConfigError(f"targets must be a non-empty subset of {TARGETS}, got {list(targets)}")
    if "Ts_seasonal" in targets and model.insolation_type != "daily":
        raise ConfigError("the Ts_seasonal target needs insolation_type='daily'")
    scales = np.array([float(getattr(model, n)) for n in names])
    scales = np.where(scales == 0, 1.0, scales)
    state = model.initial_state() if state is None else state
    seasonal = "Ts_seasonal" in targets
    if dt is None:
        dt = SECONDS_PER_YEAR / (360 if seasonal else 90)
    n_steps = int(round(years * SECONDS_PER_YEAR / dt))
    per_month = int(round(SECONDS_PER_YEAR / 12 / dt))
    if seasonal:
        n_steps -= n_steps % per_month

    def forward(theta):
        m = model.with_params(**{n: theta[i] * scales[i] for i, n in enumerate(names)})
        if seasonal:
            traj = rollout(m, m.default_stepper(), state, dt=dt, n_steps=n_steps, save_every=per_month)
            T_last_year = traj.states.Ts[-12:]
        else:
            traj = rollout(m, m.default_stepper(), state, dt=dt, n_steps=n_steps, save_every=n_steps)
        T = traj.final.Ts
        out = []
        for tgt in targets:
            if tgt == "Ts":
                out.append(T)
            elif tgt == "OLR":
                out.append(m.explicit.fluxes(T, traj.t[-1])[1])
            else:
                out.append(T_last_year.ravel())
        return jnp.concatenate(out)

    return forward, scales


def calibrate_ebm(truth: DiffusiveEBM, names, *, first_guess: dict[str, float] | None = None,
                  targets=("Ts", "OLR"), noise: dict[str, float] | None = None, key=None, years: float = 20.0,
                  methods=("adam", "lbfgs", "eki"), adam_steps: int = 1000, lbfgs_steps: int = 50,
                  eki_members: int = 32, eki_iter: int = 10, prior_spread: float = 0.2) -> dict[str, Any]:
    """Recover known parameters from synthetic noisy targets with Adam, L-BFGS and ensemble Kalman inversion.

    Targets are produced by ``truth`` plus Gaussian noise of std ``noise[target]`` (default 0.3 K for Ts, 1 W m-2
    for OLR). The first guess (default: each parameter off by +15 %) defines theta = 1. Returns a JSON-ready
    report: for each method the estimate, relative error, forward runs and gradient evaluations; and the
    identifiability analysis (Fisher information at the truth) for the chosen targets and for Ts alone.
    """
    names = list(names)
    key = jax.random.PRNGKey(0) if key is None else key
    noise = {"Ts": 0.3, "OLR": 1.0, "Ts_seasonal": 0.3, **(noise or {})}
    first_guess = first_guess or {n: float(getattr(truth, n)) * 1.15 for n in names}
    guess_model = truth.with_params(**first_guess)
    forward, scales = ebm_forward(guess_model, names, targets=targets, years=years)
    truth_theta = np.array([float(getattr(truth, n)) for n in names]) / scales
    clean = np.asarray(forward(jnp.asarray(truth_theta)))
    sigma = np.concatenate([np.full(_target_size(truth, t), noise[t]) for t in targets])
    k_noise, k_prior, k_eki = jax.random.split(key, 3)
    y = clean + sigma * np.asarray(jax.random.normal(k_noise, clean.shape))
    y, sigma_j = check_targets(y, sigma)
    loss = misfit(forward, y, sigma_j)
    report: dict[str, Any] = {"parameters": names, "targets": list(targets), "truth": dict(zip(names,
                              (truth_theta * scales).tolist())), "first_guess": first_guess,
                              "noise": {t: noise[t] for t in targets}, "n_observations": int(y.size),
                              "methods": {}}

    def summarise(res):
        est = res.theta * scales
        rel = (est - truth_theta * scales) / (truth_theta * scales)
        return {"estimate": dict(zip(names, est.tolist())), "relative_error": dict(zip(names, rel.tolist())),
                "max_abs_relative_error": float(np.max(np.abs(rel))), "n_forward": res.n_forward,
                "n_gradient": res.n_gradient, "final_loss": float(loss(jnp.asarray(res.theta))),
                "history": res.history.tolist()}

    theta0 = np.ones(len(names))
    for method in methods:
        if method == "adam":
            lr = optax.exponential_decay(0.02, adam_steps, 0.01)  # 0.02 -> 2e-4 over the run
            res = fit_gradient(loss, theta0, method="adam", steps=adam_steps, learning_rate=lr)
        elif method == "lbfgs":
            res = fit_gradient(loss, theta0, method="lbfgs", steps=lbfgs_steps)
        elif method == "eki":
            ens0 = 1.0 + prior_spread * np.asarray(jax.random.normal(k_prior, (eki_members, len(names))))
            res = ensemble_kalman_inversion(forward, ens0, y, sigma_j, k_eki, n_iter=eki_iter)
        else:
            raise ConfigError(f"unknown calibration method {method!r}; choose from adam, lbfgs, eki")
        report["methods"][method] = summarise(res)
    noise_at_truth = float(loss(jnp.asarray(truth_theta)))
    report["loss_at_truth"] = noise_at_truth
    ident = identifiability(forward, truth_theta, sigma, names)
    report["identifiability"] = _ident_json(ident, scales)
    if list(targets) != ["Ts"]:
        fwd_ts, sc_ts = ebm_forward(guess_model, names, targets=("Ts",), years=years)
        ident_ts = identifiability(fwd_ts, truth_theta, noise["Ts"], names)
        report["identifiability_Ts_only"] = _ident_json(ident_ts, sc_ts)
    return report


def _target_size(model: DiffusiveEBM, target: str) -> int:
    return model.num_lat * (12 if target == "Ts_seasonal" else 1)


def _ident_json(ident: dict[str, Any], scales: np.ndarray) -> dict[str, Any]:
    names = list(ident["cramer_rao_std"])
    return {"singular_values": np.asarray(ident["singular_values"]).tolist(),
            "condition_number": ident["condition_number"], "weakest_direction": ident["weakest_direction"],
            "cramer_rao_std_relative": ident["cramer_rao_std"],
            "cramer_rao_std": {n: ident["cramer_rao_std"][n] * s for n, s in zip(names, scales)},
            "poorly_identified": ident["poorly_identified"],
            "inseparable_pairs": [list(p) for p in ident["inseparable_pairs"]],
            "correlation": np.asarray(ident["correlation"]).tolist()}


def plot_calibration(report: dict[str, Any], path) -> Path:
    """Plot the misfit history of each calibration method against forward runs to a PNG file."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in report["methods"].items():
        h = np.asarray(r["history"])
        runs = np.linspace(r["n_forward"] / len(h), r["n_forward"], len(h))
        ax.loglog(runs, h, label=f"{name} ({r['max_abs_relative_error']:.1%} max error)")
    ax.axhline(report["loss_at_truth"], color="k", ls="--", lw=0.8, label="misfit of the truth")
    ax.set(xlabel="forward model runs", ylabel="misfit 0.5 mean(r^2)", title="EBM calibration")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


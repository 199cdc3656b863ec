"""The one-dimensional diffusive energy balance model (North 1975; North, Cahalan & Coakley 1981).

    C dT/dt = Q(x, t) (1 - alpha(x, T)) - (A + B T) + F_CO2 + D d/dx[(1 - x^2) dT/dx],     x = sin(latitude)

with T the zonal-mean surface temperature [degC], C = water_depth * rho_w * c_w the heat capacity of a mixed
layer [J m-2 K-1], Q the insolation [W m-2] (P2 fit, exact annual mean or daily mean of a Kepler orbit), alpha a
smooth ice-albedo law (``ai`` where T << Tf, ``a0 + a2 P2(x)`` where T >> Tf, a tanh transition of half-width
``albedo_width`` [K] that becomes climlab's step function when the width is 0), A + B T the outgoing longwave
radiation (Budyko 1969), F_CO2 = 5.35 ln(C/C0) W m-2 the CO2 forcing (Myhre et al. 1998,
doi:10.1029/98GL01908) and D [W m-2 K-1] the diffusivity of the meridional heat transport on the unit sphere.
Parameter names and defaults are those of climlab's ``EBM`` (Rose 2018, doi:10.21105/joss.00659).

Numerics. The latitude axis is divided into ``num_lat`` cells whose edges are equally spaced in x (``grid="sin"``,
equal-area cells) or in latitude (``grid="lat"``, climlab's grid). The diffusion is written in flux form on the cell
edges (a finite-volume discretisation), with zero flux at the poles, so the area-weighted sum of the diffusive
tendency vanishes to round-off. It is treated implicitly (a tridiagonal solve, O(num_lat)) and the radiation
explicitly: :class:`~nemic.core.steppers.SemiImplicitEuler`, the scheme climlab uses as well.

Units: SI, except temperatures in degC (the A + B T law is defined in degC) and latitudes in degrees.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, check_int_at_least, is_concrete
from nemic.core.process import AbstractImplicitProcess, AbstractProcess, ImplicitExplicit
from nemic.core.rollout import Trajectory, rollout
from nemic.core.state import AbstractState
from nemic.core.steppers import SemiImplicitEuler
from nemic.models.ebm.insolation import (
    DAYS_PER_YEAR,
    PRESENT_ORBIT,
    annual_mean_insolation,
    daily_insolation,
    legendre_p2,
    p2_insolation,
)

#: physical constants (climlab's values)
RHO_WATER = 1000.0  # kg m-3
CP_WATER = 4181.3  # J kg-1 K-1
EARTH_RADIUS = 6.373e6  # m
SECONDS_PER_DAY = 86400.0
SECONDS_PER_YEAR = SECONDS_PER_DAY * DAYS_PER_YEAR
CO2_FORCING_COEFF = 5.35  # W m-2 per ln(C/C0), Myhre et al. (1998)

GRIDS = ("sin", "lat")
INSOLATIONS = ("p2", "annual", "daily")


class EBMState(AbstractState):
    """State of the diffusive EBM: zonal-mean surface temperature ``Ts`` [degC], shape (num_lat,)."""

    Ts: jax.Array

    cf: ClassVar[dict[str, dict]] = {
        "Ts": {"dims": ("lat",), "units": "degC", "long_name": "zonal-mean surface temperature",
               "standard_name": "surface_temperature"},
    }
    time_units: ClassVar[str] = "s"


@functools.lru_cache(maxsize=64)
def latitude_grid(num_lat: int, grid: str = "sin") -> dict[str, np.ndarray]:
    """Cell edges and centres of the latitude grid (NumPy, float64).

    Returns a dict with ``x_edges`` (num_lat+1,), ``x`` (num_lat,) = sin(latitude) of the cell centres,
    ``lat`` (num_lat,) [deg], ``lat_edges`` (num_lat+1,) [deg], and ``weights`` (num_lat,) = cell widths in x
    (the area of a cell divided by 2 pi a^2; they sum to 2).
    """
    check_int_at_least("num_lat", num_lat, 2)
    if grid == "sin":
        xe = np.linspace(-1.0, 1.0, num_lat + 1)
        x = 0.5 * (xe[1:] + xe[:-1])
        lat_e = np.rad2deg(np.arcsin(xe))
        lat = np.rad2deg(np.arcsin(x))
    elif grid == "lat":
        lat_e = np.linspace(-90.0, 90.0, num_lat + 1)
        lat = 0.5 * (lat_e[1:] + lat_e[:-1])
        xe = np.sin(np.deg2rad(lat_e))
        xe[0], xe[-1] = -1.0, 1.0
        x = np.sin(np.deg2rad(lat))
    else:
        raise ConfigError(f"grid must be one of {GRIDS}, got {grid!r}")
    return {"x_edges": xe, "x": x, "lat": lat, "lat_edges": lat_e, "weights": np.diff(xe)}


def _diffusion_coefficients(num_lat: int, grid: str) -> tuple[np.ndarray, np.ndarray]:
    """Sub- and super-diagonal coefficients of the unit-sphere operator d/dx[(1-x^2) d/dx] (flux form).

    ``L T_i = lower_i (T_{i-1} - T_i) + upper_i (T_{i+1} - T_i)``, with
    ``g_k = (1 - x_k^2)/(x_{c,k} - x_{c,k-1})`` on interior edges, zero on the polar edges.
    """
    g = latitude_grid(num_lat, grid)
    xe, x, w = g["x_edges"], g["x"], g["weights"]
    ge = np.zeros(num_lat + 1)
    ge[1:-1] = (1.0 - xe[1:-1] ** 2) / np.diff(x)
    return ge[:-1] / w, ge[1:] / w


class MeridionalDiffusion(AbstractImplicitProcess):
    """Diffusive meridional heat transport ``(D/C) d/dx[(1-x^2) dT/dx]`` [K s-1] in flux form.

    ``implicit_solve`` solves ``(I - eta L) T = rhs`` with ``jax.lax.linalg.tridiagonal_solve`` (O(num_lat)).
    The operator conserves the area integral of the heat content exactly (zero flux through the poles).
    Reference: North (1975), doi:10.1175/1520-0469(1975)032<2033:TOEBCM>2.0.CO;2.

    Attributes:
        D: diffusivity [W m-2 K-1]; heat_capacity: C [J m-2 K-1]; num_lat, grid: static grid description.
    """

    D: jax.Array
    heat_capacity: jax.Array
    num_lat: int = eqx.field(static=True)
    grid: str = eqx.field(static=True, default="sin")

    def _coeffs(self):
        lo, up = _diffusion_coefficients(self.num_lat, self.grid)
        k = self.D / self.heat_capacity
        return k * jnp.asarray(lo), k * jnp.asarray(up)

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        T = state.Ts
        lo, up = self._coeffs()
        dT = jnp.diff(T)
        left = jnp.concatenate([jnp.zeros(1, T.dtype), dT])  # T_i - T_{i-1}
        right = jnp.concatenate([dT, jnp.zeros(1, T.dtype)])  # T_{i+1} - T_i
        return EBMState(Ts=up * right - lo * left)

    def implicit_solve(self, rhs: EBMState, t: Any, eta: Any) -> EBMState:
        lo, up = self._coeffs()
        dl = (-eta * lo).at[0].set(0.0)
        du = (-eta * up).at[-1].set(0.0)
        d = 1.0 + eta * (lo + up)
        x = jax.lax.linalg.tridiagonal_solve(dl, d, du, rhs.Ts[:, None])[:, 0]
        return EBMState(Ts=x)


def ice_albedo(T, x, a0, a2, ai, Tf, width):
    """Planetary albedo: ``a0 + a2 P2(x)`` on ice-free cells, ``ai`` on ice, a tanh transition around ``Tf``.

    ``alpha = ai + (a0 + a2 P2(x) - ai) * (1 + tanh((T - Tf)/width))/2``; ``width = 0`` gives the step function
    of North (1975) and climlab (ice where T <= Tf). T, x: shape (num_lat,); temperatures in degC.
    """
    warm = a0 + a2 * legendre_p2(x)
    safe = jnp.where(width > 0, width, 1.0)
    smooth = ai + (warm - ai) * 0.5 * (1.0 + jnp.tanh((T - Tf) / safe))
    step = jnp.where(T > Tf, warm, ai)
    return jnp.where(width > 0, smooth, step)


class EBMRadiation(AbstractProcess):
    """Explicit radiative tendency ``[Q (1 - alpha) - (A + B T) + 5.35 ln(co2_ratio)] / C`` [K s-1].

    ``insolation`` holds a fixed (num_lat,) profile [W m-2] for the annual-mean modes; in the ``daily`` mode it is
    ``None`` and the daily-mean insolation of the Kepler orbit (Berger 1978) is computed at model time t [s]
    (day 0 = 1 January).
    """

    S0: jax.Array
    A: jax.Array
    B: jax.Array
    a0: jax.Array
    a2: jax.Array
    ai: jax.Array
    Tf: jax.Array
    albedo_width: jax.Array
    co2_ratio: jax.Array
    heat_capacity: jax.Array
    ecc: jax.Array
    obliquity: jax.Array
    long_peri: jax.Array
    insolation: jax.Array | None
    num_lat: int = eqx.field(static=True)
    grid: str = eqx.field(static=True, default="sin")

    def insolation_at(self, t):
        """Insolation [W m-2] at model time ``t`` [s], shape (num_lat,)."""
        if self.insolation is not None:
            return self.insolation
        lat = jnp.asarray(latitude_grid(self.num_lat, self.grid)["lat"])
        day = jnp.mod(t / SECONDS_PER_DAY, DAYS_PER_YEAR)
        return daily_insolation(lat, day, self.S0, self.ecc, self.obliquity, self.long_peri)

    def fluxes(self, T, t):
        """(ASR, OLR, albedo, insolation), each shape (num_lat,), W m-2 (albedo dimensionless)."""
        x = jnp.asarray(latitude_grid(self.num_lat, self.grid)["x"])
        Q = self.insolation_at(t)
        alpha = ice_albedo(T, x, self.a0, self.a2, self.ai, self.Tf, self.albedo_width)
        olr = self.A + self.B * T - CO2_FORCING_COEFF * jnp.log(self.co2_ratio)
        return Q * (1.0 - alpha), olr, alpha, Q

    def tendency(self, state: EBMState, t: Any, key: Any = None) -> EBMState:
        asr, olr, _, _ = self.fluxes(state.Ts, t)
        return EBMState(Ts=(asr - olr) / self.heat_capacity)


_FLOAT_PARAMS = ("S0", "s2", "A", "B", "D", "a0", "a2", "ai", "Tf", "water_depth", "albedo_width", "co2_ratio",
                 "ecc", "obliquity", "long_peri")


class DiffusiveEBM(eqx.Module):
    """North's diffusive energy balance model with climlab's parameter names and defaults.

    All physical parameters are scalar array fields (``jax.grad`` reaches them; ``vmap`` over them builds
    ensembles); ``num_lat``, ``grid`` and ``insolation_type`` are static.

    Args:
        num_lat: number of latitude cells (>= 2). grid: ``"sin"`` (equal-area) or ``"lat"`` (climlab's grid).
        insolation_type: ``"p2"`` (``S0/4 (1 + s2 P2)``, climlab's default), ``"annual"`` (exact annual mean of the
            orbit) or ``"daily"`` (seasonal cycle; daily mean of a Kepler orbit, Berger 1978).
        S0 [W m-2], s2, A [W m-2], B [W m-2 K-1], D [W m-2 K-1], a0, a2, ai, Tf [degC], water_depth [m]:
            as in climlab. albedo_width [K]: half-width of the ice-albedo transition (0 = step).
            co2_ratio: C/C0 (forcing 5.35 ln(C/C0) W m-2). ecc, obliquity [deg], long_peri [deg]: the orbit.
    """

    S0: jax.Array
    s2: jax.Array
    A: jax.Array
    B: jax.Array
    D: jax.Array
    a0: jax.Array
    a2: jax.Array
    ai: jax.Array
    Tf: jax.Array
    water_depth: jax.Array
    albedo_width: jax.Array
    co2_ratio: jax.Array
    ecc: jax.Array
    obliquity: jax.Array
    long_peri: jax.Array
    num_lat: int = eqx.field(static=True)
    grid: str = eqx.field(static=True)
    insolation_type: str = eqx.field(static=True)

    def __init__(self, num_lat: int = 90, *, grid: str = "sin", insolation_type: str = "p2", S0=1365.2,
                 s2=-0.48, A=210.0, B=2.0, D=0.555, a0=0.3, a2=0.078, ai=0.62, Tf=-10.0, water_depth=10.0,
                 albedo_width=0.0, co2_ratio=1.0, ecc=PRESENT_ORBIT["ecc"], obliquity=PRESENT_ORBIT["obliquity"],
                 long_peri=PRESENT_ORBIT["long_peri"]):
        check_int_at_least("num_lat", num_lat, 2)
        if grid not in GRIDS:
            raise ConfigError(f"grid must be one of {GRIDS}, got {grid!r}")
        if insolation_type not in INSOLATIONS:
            raise ConfigError(f"insolation_type must be one of {INSOLATIONS}, got {insolation_type!r}")
        self.num_lat, self.grid, self.insolation_type = int(num_lat), grid, insolation_type
        values = dict(S0=S0, s2=s2, A=A, B=B, D=D, a0=a0, a2=a2, ai=ai, Tf=Tf, water_depth=water_depth,
                      albedo_width=albedo_width, co2_ratio=co2_ratio, ecc=ecc, obliquity=obliquity,
                      long_peri=long_peri)
        for k, v in values.items():
            setattr(self, k, v if isinstance(v, jax.Array) and not is_concrete(v) else jnp.asarray(v, float))
        validate_parameters(self)

    # --- grid -----------------------------------------------------------------------------------------------
    @property
    def x(self) -> jax.Array:
        """sin(latitude) of the cell centres, shape (num_lat,)."""
        return jnp.asarray(latitude_grid(self.num_lat, self.grid)["x"])

    @property
    def lat(self) -> jax.Array:
        """Latitude of the cell centres [deg], shape (num_lat,)."""
        return jnp.asarray(latitude_grid(self.num_lat, self.grid)["lat"])

    @property
    def weights(self) -> jax.Array:
        """Area weights (cell widths in x, summing to 2), shape (num_lat,)."""
        return jnp.asarray(latitude_grid(self.num_lat, self.grid)["weights"])

    @property
    def heat_capacity(self) -> jax.Array:
        """Mixed-layer heat capacity ``water_depth * rho_w * c_w`` [J m-2 K-1]."""
        return self.water_depth * RHO_WATER * CP_WATER

    @property
    def default_timestep(self) -> float:
        """climlab's default timestep: one 90th of a year [s]."""
        return SECONDS_PER_YEAR / 90.0

    def with_params(self, **values) -> "DiffusiveEBM":
        """A copy with some physical parameters replaced (works under jit/vmap/grad; validated if concrete)."""
        unknown = set(values) - set(_FLOAT_PARAMS)
        if unknown:
            raise ConfigError(f"unknown EBM parameter(s) {sorted(unknown)}; known: {list(_FLOAT_PARAMS)}")
        names = list(values)
        new = eqx.tree_at(lambda m: [getattr(m, k) for k in names], self,
                          [jnp.asarray(values[k], float) for k in names])
        validate_parameters(new)
        return new

    # --- processes ------------------------------------------------------------------------------------------
    def insolation_profile(self) -> jax.Array | None:
        """Fixed insolation (num_lat,) [W m-2] for the annual-mean modes, ``None`` in the daily mode."""
        if self.insolation_type == "p2":
            return p2_insolation(self.x, self.S0, self.s2)
        if self.insolation_type == "annual":
            return annual_mean_insolation(self.lat, self.S0, self.ecc, self.obliquity, self.long_peri)
        return None

    def radiation(self) -> EBMRadiation:
        """The explicit radiative process."""
        return EBMRadiation(S0=self.S0, A=self.A, B=self.B, a0=self.a0, a2=self.a2, ai=self.ai, Tf=self.Tf,
                            albedo_width=self.albedo_width, co2_ratio=self.co2_ratio,
                            heat_capacity=self.heat_capacity, ecc=self.ecc, obliquity=self.obliquity,
                            long_peri=self.long_peri, insolation=self.insolation_profile(),
                            num_lat=self.num_lat, grid=self.grid)

    def diffusion(self) -> MeridionalDiffusion:
        """The implicit diffusive heat transport."""
        return MeridionalDiffusion(D=self.D, heat_capacity=self.heat_capacity, num_lat=self.num_lat,
                                   grid=self.grid)

    def process(self, extra: AbstractProcess | None = None) -> ImplicitExplicit:
        """The model as an IMEX process: radiation (+ ``extra``, e.g. a neural correction) explicit, diffusion
        implicit. Step it with :class:`~nemic.core.steppers.SemiImplicitEuler`."""
        explicit = self.radiation() if extra is None else self.radiation() + extra
        return ImplicitExplicit(explicit=explicit, implicit=self.diffusion())

    # --- states and runs ------------------------------------------------------------------------------------
    def initial_state(self, Ts=None) -> EBMState:
        """climlab's initial condition ``12 - 40 P2(x)`` [degC], or the given (num_lat,) profile."""
        if Ts is None:
            Ts = 12.0 - 40.0 * legendre_p2(self.x)
        Ts = jnp.asarray(Ts, float)
        if Ts.shape != (self.num_lat,):
            raise ConfigError(f"Ts must have shape ({self.num_lat},), got {Ts.shape}")
        return EBMState(Ts=Ts)

    def integrate(self, state: EBMState | None = None, *, years: float = 1.0, dt: float | None = None,
                  save_every: int | None = None, t0: float = 0.0, checkpoint: bool = False,
                  extra: AbstractProcess | None = None) -> Trajectory:
        """Integrate for ``years`` with timestep ``dt`` [s] (default a 90th of a year), semi-implicit Euler.

        Returns a :class:`~nemic.core.rollout.Trajectory` (times in s), saving every ``save_every`` steps
        (default: only the initial and final states). Pure: jit, vmap and grad through it.
        """
        state = self.initial_state() if state is None else state
        dt = self.default_timestep if dt is None else dt
        n_steps = int(round(years * SECONDS_PER_YEAR / dt))
        if n_steps < 1:
            raise ConfigError(f"years={years} is shorter than one timestep (dt={dt} s)")
        save_every = n_steps if save_every is None else save_every
        return rollout(self.process(extra), SemiImplicitEuler(), state, dt=dt, n_steps=n_steps, t0=t0,
                       save_every=save_every, checkpoint=checkpoint)

    def steady_state(self, state: EBMState | None = None, *, tol: float = 1e-10, max_iter: int = 50
                     ) -> tuple[EBMState, dict[str, Any]]:
        """Solve ``tendency(T) = 0`` by Newton's method with the exact Jacobian (``jax.jacfwd``, dense
        num_lat x num_lat), for the annual-mean insolation types.

        Unlike time integration this also finds *unstable* equilibria (e.g. North's large-ice-cap solution);
        ``info["max_growth_rate"]`` (the largest real part of the Jacobian's eigenvalues, s-1) tells them apart.
        Needs a smooth albedo (``albedo_width > 0``) for quadratic convergence. Returns ``(state, info)`` with
        ``info = {"iterations", "residual" (W m-2), "max_growth_rate" (s-1), "converged"}``.
        """
        if self.insolation_type == "daily":
            raise ConfigError("steady_state needs an annual-mean insolation type ('p2' or 'annual')")
        state = self.initial_state() if state is None else state
        proc = self.process()

        def F(T):
            return proc.tendency(EBMState(Ts=T), 0.0).Ts * self.heat_capacity  # W m-2

        @jax.jit
        def newton(T):
            r, J = F(T), jax.jacfwd(F)(T)
            return T - jnp.linalg.solve(J, r), jnp.max(jnp.abs(r))

        T, it, res = state.Ts, 0, float("inf")
        for it in range(1, max_iter + 1):
            T_new, r = newton(T)
            res = float(r)
            if not np.all(np.isfinite(np.asarray(T_new))):
                break
            T = T_new
            if res < tol:
                break
        res = float(jnp.max(jnp.abs(F(T))))
        growth = float(np.max(np.linalg.eigvals(np.asarray(jax.jacfwd(F)(T))).real)) / float(self.heat_capacity)
        return EBMState(Ts=T), {"iterations": it, "residual": res, "max_growth_rate": growth,
                                "converged": res < max(tol, 1e-8)}

    def diagnostics(self, state: EBMState, t: Any = 0.0) -> dict[str, jax.Array]:
        """Diagnostics of a state: ASR, OLR, albedo, insolation (num_lat,), heat transport on the cell edges
        (num_lat+1,) [PW], global-mean temperature [degC], ice-edge latitude [deg] (northern hemisphere)."""
        asr, olr, alpha, Q = self.radiation().fluxes(state.Ts, t)
        return {"ASR": asr, "OLR": olr, "albedo": alpha, "insolation": Q,
                "heat_transport": heat_transport(state.Ts, self.D, self.num_lat, self.grid),
                "global_mean_Ts": global_mean(state.Ts, self.weights),
                "ice_edge": ice_edge_latitude(state.Ts, latitude_grid(self.num_lat, self.grid)["lat"], self.Tf)}


def validate_parameters(m: DiffusiveEBM) -> None:
    """Raise :class:`ConfigError` for impossible parameter values (skipped for traced values)."""
    def val(name):
        v = getattr(m, name)
        return None if not is_concrete(v) else np.asarray(v, float)

    for name in _FLOAT_PARAMS:
        v = val(name)
        if v is not None and not np.all(np.isfinite(v)):
            raise ConfigError(f"EBM parameter {name} must be finite, got {v}")
    rules = [("water_depth", lambda v: v > 0, "> 0 (a positive heat capacity)"),
             ("D", lambda v: v >= 0, ">= 0 (a non-negative diffusivity)"),
             ("S0", lambda v: v >= 0, ">= 0"),
             ("albedo_width", lambda v: v >= 0, ">= 0"),
             ("co2_ratio", lambda v: v > 0, "> 0"),
             ("ecc", lambda v: (v >= 0) & (v < 1), "in [0, 1)")]
    for name in ("a0", "ai"):
        rules.append((name, lambda v: (v >= 0) & (v <= 1), "in [0, 1]"))
    for name, ok, what in rules:
        v = val(name)
        if v is not None and not np.all(ok(v)):
            raise ConfigError(f"EBM parameter {name} must be {what}, got {v}")
    v0, v2 = val("a0"), val("a2")
    if v0 is not None and v2 is not None:
        lo, hi = np.minimum(v0 - 0.5 * v2, v0 + v2), np.maximum(v0 - 0.5 * v2, v0 + v2)  # P2 in [-1/2, 1]
        if np.any(lo < 0) or np.any(hi > 1):
            raise ConfigError(f"warm albedo a0 + a2 P2(x) must stay in [0, 1]; a0={v0}, a2={v2} give "
                              f"[{np.min(lo):g}, {np.max(hi):g}]")


def global_mean(T, weights):
    """Area-weighted global mean over the last axis: ``sum(w T)/sum(w)``."""
    return jnp.sum(T * weights, axis=-1) / jnp.sum(weights)


def heat_transport(T, D, num_lat: int, grid: str = "sin"):
    """Northward heat transport on the cell edges [PW], shape (..., num_lat+1): ``-2 pi a^2 D (1-x^2) dT/dx``."""
    g = latitude_grid(num_lat, grid)
    xe, x = g["x_edges"], g["x"]
    grad = jnp.diff(T, axis=-1) / jnp.asarray(np.diff(x))
    inner = -2.0 * math.pi * EARTH_RADIUS**2 * D * jnp.asarray(1.0 - xe[1:-1] ** 2) * grad
    z = jnp.zeros(T.shape[:-1] + (1,), inner.dtype)
    return jnp.concatenate([z, inner, z], axis=-1) / 1e15


def ice_edge_latitude(T, lat, Tf):
    """Latitude [deg] where T first drops below Tf going poleward in the northern hemisphere (linear interpolation
    between cell centres); 90 if ice-free, 0 if the equatorial cell is frozen. T: shape (..., num_lat);
    lat: the (num_lat,) grid as a NumPy array (it decides the shapes)."""
    lat = np.asarray(lat)
    nh = lat >= 0
    Tn, ln = T[..., nh], jnp.asarray(lat[nh])
    d = Tn - Tf
    cold = d <= 0
    i = jnp.argmax(cold, axis=-1)  # first cold cell (0 if none)
    any_cold = jnp.any(cold, axis=-1)
    i_prev = jnp.maximum(i - 1, 0)
    d0 = jnp.take_along_axis(d, i_prev[..., None], axis=-1)[..., 0]
    d1 = jnp.take_along_axis(d, i[..., None], axis=-1)[..., 0]
    frac = jnp.where(d0 != d1, d0 / jnp.where(d0 != d1, d0 - d1, 1.0), 0.0)
    edge = ln[i_prev] + frac * (ln[i] - ln[i_prev])
    edge = jnp.where(i == 0, 0.0, edge)
    return jnp.where(any_cold, edge, 90.0)

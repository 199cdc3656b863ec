"""The one-dimensional diffusive energy balance model (North 1975; North, Cahalan & Coakley 1981).

    C dT/dt = Q(x, t) (1 - alpha(x, T)) - (A + B T) + F_CO2 + D d/dx[(1 - x^2) dT/dx],     x = sin(latitude)

with T the zonal-mean surface temperature [degC], C = water_depth * rho_w * c_w the heat capacity of a mixed
layer [J m-2 K-1], Q the insolation [W m-2] (P2 fit, exact annual mean or daily mean of a Kepler orbit), alpha a
smooth ice-albedo law (``ai`` where T << Tf, ``a0 + a2 P2(x)`` where T >> Tf, a tanh transition of half-width
``albedo_width`` [K] that becomes climlab's step function when the width is 0), A + B T the outgoing longwave
radiation (Budyko 1969), F_CO2 = 5.35 ln(C/C0) W m-2 the CO2 forcing (Myhre et al. 1998,
doi:10.1029/98GL01908) and D [W m-2 K-1] the diffusivity of the meridional heat transport on the unit sphere.
Parameter names and defaults are those of climlab's ``EBM`` (Rose 2018, doi:10.21105/joss.00659).

The model *is* its right-hand side: :class:`DiffusiveEBM` is an
:class:`~nemic.core.process.ImplicitExplicit` process whose explicit part is the radiation
(:class:`~nemic.models.ebm.physics.EBMRadiation`) and whose implicit part is the diffusion
(:class:`~nemic.models.ebm.physics.MeridionalDiffusion`). So ``ebm + nudging + correction`` composes with ``+``
into an implicit-explicit process (the added terms join the explicit part) that
:class:`~nemic.core.steppers.SemiImplicitEuler`, IMEX-SIL3 or ARS(2,2,2) step with no special code, and
:func:`nemic.core.rollout.simulate` runs it. Each parameter is held once, in one of the two parts.

Numerics. The latitude axis is divided into ``num_lat`` cells whose edges are equally spaced in x (``grid="sin"``,
equal-area cells) or in latitude (``grid="lat"``, climlab's grid). The diffusion is written in flux form on the cell
edges (a finite-volume discretisation), with zero flux at the poles, so the area-weighted sum of the diffusive
tendency vanishes to round-off. It is treated implicitly (a tridiagonal solve, O(num_lat)) and the radiation
explicitly: :class:`~nemic.core.steppers.SemiImplicitEuler` (the default stepper) is the scheme climlab uses.

Units: SI, except temperatures in degC (the A + B T law is defined in degC) and latitudes in degrees.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, is_concrete
from nemic.core.model import AbstractModel
from nemic.core.process import ImplicitExplicit
from nemic.core.steppers import SemiImplicitEuler
from nemic.models.ebm.insolation import PRESENT_ORBIT, legendre_p2
from nemic.models.ebm.physics import (  # noqa: F401  (re-exported: the model's pieces)
    CO2_FORCING_COEFF,
    CP_WATER,
    EARTH_RADIUS,
    GRIDS,
    INSOLATIONS,
    RADIATION_PARAMS,
    RHO_WATER,
    SECONDS_PER_DAY,
    SECONDS_PER_YEAR,
    EBMRadiation,
    EBMState,
    LatitudeGrid,
    MeridionalDiffusion,
    _diffusion_coefficients,
    ice_albedo,
    latitude_grid,
)

_FLOAT_PARAMS = ("S0", "s2", "A", "B", "D", "a0", "a2", "ai", "Tf", "water_depth", "albedo_width", "co2_ratio",
                 "ecc", "obliquity", "long_peri")


def _radiation_param(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.explicit, name), doc=f"{doc} (held by the radiation part).")


def _as_param(v: Any) -> jax.Array:
    return v if isinstance(v, jax.Array) and not is_concrete(v) else jnp.asarray(v, float)


class DiffusiveEBM(ImplicitExplicit, AbstractModel):
    """North's diffusive energy balance model with climlab's parameter names and defaults.

    An implicit-explicit process: ``explicit`` is the :class:`EBMRadiation`, ``implicit`` the
    :class:`MeridionalDiffusion`. All physical parameters are scalar array leaves (``jax.grad`` reaches them;
    ``vmap`` over them builds ensembles), each stored once: the radiation holds every parameter but D, the diffusion
    holds D / C; ``model.D`` and the other names are read-only views. ``num_lat``, ``grid`` and
    ``insolation_type`` are static. Change parameters with :meth:`with_params`.

    Args:
        num_lat: number of latitude cells (>= 2). grid: ``"sin"`` (equal-area) or ``"lat"`` (climlab's grid).
        insolation_type: ``"p2"`` (``S0/4 (1 + s2 P2)``, climlab's default), ``"annual"`` (exact annual mean of the
            orbit) or ``"daily"`` (seasonal cycle; daily mean of a Kepler orbit, Berger 1978).
        S0 [W m-2], s2, A [W m-2], B [W m-2 K-1], D [W m-2 K-1], a0, a2, ai, Tf [degC], water_depth [m]:
            as in climlab. albedo_width [K]: half-width of the ice-albedo transition (0 = step).
            co2_ratio: C/C0 (forcing 5.35 ln(C/C0) W m-2). ecc, obliquity [deg], long_peri [deg]: the orbit.
    """

    explicit: EBMRadiation
    implicit: MeridionalDiffusion

    def __init__(self, num_lat: int = 90, *, grid: str = "sin", insolation_type: str = "p2", S0=1365.2,
                 s2=-0.48, A=210.0, B=2.0, D=0.555, a0=0.3, a2=0.078, ai=0.62, Tf=-10.0, water_depth=10.0,
                 albedo_width=0.0, co2_ratio=1.0, ecc=PRESENT_ORBIT["ecc"], obliquity=PRESENT_ORBIT["obliquity"],
                 long_peri=PRESENT_ORBIT["long_peri"]):
        g = grid if isinstance(grid, LatitudeGrid) else LatitudeGrid(int(num_lat), grid)
        if g.num_lat != num_lat:
            raise ConfigError(f"num_lat={num_lat} does not match the grid's {g.num_lat} cells")
        if insolation_type not in INSOLATIONS:
            raise ConfigError(f"insolation_type must be one of {INSOLATIONS}, got {insolation_type!r}")
        values = dict(S0=S0, s2=s2, A=A, B=B, a0=a0, a2=a2, ai=ai, Tf=Tf, water_depth=water_depth,
                      albedo_width=albedo_width, co2_ratio=co2_ratio, ecc=ecc, obliquity=obliquity,
                      long_peri=long_peri)
        self.explicit = EBMRadiation(**{k: _as_param(v) for k, v in values.items()}, grid=g,
                                     insolation_type=insolation_type)
        self.implicit = MeridionalDiffusion.from_diffusivity(_as_param(D), self.explicit.heat_capacity, g)
        validate_parameters(self)

    # --- parameters (views of the leaves; each parameter is stored once) --------------------------------------
    S0 = _radiation_param("S0", "Solar constant [W m-2]")
    s2 = _radiation_param("s2", "P2 coefficient of the insolation fit")
    A = _radiation_param("A", "OLR at 0 degC [W m-2]")
    B = _radiation_param("B", "OLR slope [W m-2 K-1]")
    a0 = _radiation_param("a0", "Ice-free albedo, P0 term")
    a2 = _radiation_param("a2", "Ice-free albedo, P2 term")
    ai = _radiation_param("ai", "Ice albedo")
    Tf = _radiation_param("Tf", "Freezing temperature of the albedo law [degC]")
    water_depth = _radiation_param("water_depth", "Mixed-layer depth [m]")
    albedo_width = _radiation_param("albedo_width", "Half-width of the ice-albedo transition [K]")
    co2_ratio = _radiation_param("co2_ratio", "CO2 concentration relative to the reference C/C0")
    ecc = _radiation_param("ecc", "Orbital eccentricity")
    obliquity = _radiation_param("obliquity", "Obliquity [deg]")
    long_peri = _radiation_param("long_peri", "Longitude of perihelion [deg]")

    @property
    def D(self) -> jax.Array:
        """Diffusivity [W m-2 K-1]: ``D_over_C * C`` (the diffusion part holds D / C)."""
        return self.implicit.D_over_C * self.heat_capacity

    @property
    def heat_capacity(self) -> jax.Array:
        """Mixed-layer heat capacity ``water_depth * rho_w * c_w`` [J m-2 K-1]."""
        return self.explicit.heat_capacity

    # --- grid -----------------------------------------------------------------------------------------------
    @property
    def grid(self) -> LatitudeGrid:
        """The static :class:`LatitudeGrid` (``str(grid)`` is its kind, ``"sin"`` or ``"lat"``)."""
        return self.explicit.grid

    @property
    def num_lat(self) -> int:
        """Number of latitude cells (static)."""
        return self.explicit.grid.num_lat

    @property
    def insolation_type(self) -> str:
        """``"p2"``, ``"annual"`` or ``"daily"`` (static)."""
        return self.explicit.insolation_type

    @property
    def x(self) -> jax.Array:
        """sin(latitude) of the cell centres, shape (num_lat,)."""
        return jnp.asarray(self.grid.x)

    @property
    def lat(self) -> jax.Array:
        """Latitude of the cell centres [deg], shape (num_lat,)."""
        return jnp.asarray(self.grid.lat)

    @property
    def weights(self) -> jax.Array:
        """Area weights (cell widths in x, summing to 2), shape (num_lat,)."""
        return jnp.asarray(self.grid.weights)

    @property
    def default_timestep(self) -> float:
        """climlab's default timestep: one 90th of a year [s]."""
        return SECONDS_PER_YEAR / 90.0

    def with_params(self, **values) -> "DiffusiveEBM":
        """A copy with some physical parameters replaced (works under jit/vmap/grad; validated if concrete).

        D is kept when only ``water_depth`` changes (the diffusion's D / C is recomputed)."""
        unknown = set(values) - set(_FLOAT_PARAMS)
        if unknown:
            raise ConfigError(f"unknown EBM parameter(s) {sorted(unknown)}; known: {list(_FLOAT_PARAMS)}")
        new = self
        rad = [k for k in values if k in RADIATION_PARAMS]
        if rad:
            new = eqx.tree_at(lambda m: [getattr(m.explicit, k) for k in rad], new,
                              [jnp.asarray(values[k], float) for k in rad])
        if "D" in values or "water_depth" in values:
            D = jnp.asarray(values["D"], float) if "D" in values else self.D
            new = eqx.tree_at(lambda m: m.implicit.D_over_C, new, D / new.heat_capacity)
        validate_parameters(new)
        return new

    def params(self) -> dict[str, Any]:
        """Constructor arguments as plain numbers and strings (for dataset attributes; see ``to_attrs``)."""
        out: dict[str, Any] = {"num_lat": self.num_lat, "grid": self.grid.kind,
                               "insolation_type": self.insolation_type}
        out.update({k: float(np.asarray(getattr(self, k))) for k in _FLOAT_PARAMS})
        return out

    # --- the model API ----------------------------------------------------------------------------------------
    def radiation(self) -> EBMRadiation:
        """The explicit radiative part (the same object as ``self.explicit``)."""
        return self.explicit

    def diffusion(self) -> MeridionalDiffusion:
        """The implicit diffusive heat transport (the same object as ``self.implicit``)."""
        return self.implicit

    def default_stepper(self) -> SemiImplicitEuler:
        """Semi-implicit Euler (radiation forward, diffusion backward), as climlab."""
        return SemiImplicitEuler()

    def check_state(self, state: Any) -> None:
        """One-line :class:`~nemic.core.errors.DataError` unless ``state`` is an :class:`EBMState` on this grid."""
        self.grid.check_state(state)

    def initial_state(self, key: Any = None, *, Ts: Any = None) -> EBMState:
        """climlab's initial condition ``12 - 40 P2(x)`` [degC], or the given (num_lat,) profile ``Ts``.

        The EBM's initial state is deterministic: ``key`` is accepted (the model API) and ignored.
        """
        if key is not None and not _is_prng_key(key):
            raise ConfigError("DiffusiveEBM.initial_state(key=None, *, Ts=None): the first argument is a random "
                              "key; pass a temperature profile as Ts=...")
        if Ts is None:
            Ts = 12.0 - 40.0 * legendre_p2(self.x)
        Ts = jnp.asarray(Ts, float)
        if Ts.shape != (self.num_lat,):
            raise ConfigError(f"Ts must have shape ({self.num_lat},), got {Ts.shape}")
        return EBMState(Ts=Ts)

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

        def F(T):
            return self.tendency(EBMState(Ts=T), 0.0).Ts * self.heat_capacity  # W m-2

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
        asr, olr, alpha, Q = self.explicit.fluxes(state.Ts, t)
        return {"ASR": asr, "OLR": olr, "albedo": alpha, "insolation": Q,
                "heat_transport": heat_transport(state.Ts, self.D, self.num_lat, self.grid),
                "global_mean_Ts": global_mean(state.Ts, self.weights),
                "ice_edge": ice_edge_latitude(state.Ts, self.grid.lat, self.Tf)}


def _is_prng_key(key: Any) -> bool:
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == jnp.uint32 and np.shape(key)[-1:] == (2,)


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

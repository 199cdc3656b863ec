"""The two-layer quasi-geostrophic model on a doubly periodic domain (pseudo-spectral), with pyqg's equations.

Prognostic variable: the spectral potential-vorticity anomaly ``qh`` of the two layers, complex, shape
(2, ny, nk) on the rfft2 grid (``nk = nx // 2 + 1``; :mod:`nemic.models.qg.grid`), the coefficients of the PV ``q``
(2, ny, nx), s^-1 (``QGState.q`` gives it in physical space). With streamfunction ``psi`` (m^2 s^-1),
``F1 = rd**-2 / (1 + delta)``, ``F2 = delta F1``, ``delta = H1 / H2``:

    q1 = lap(psi1) + F1 (psi2 - psi1),        q2 = lap(psi2) + F2 (psi1 - psi2),

    dq_i/dt + J(psi_i, q_i) + U_i dq_i/dx + Qy_i dpsi_i/dx = -delta_{i2} rek lap(psi2),

with background PV gradients ``Qy1 = beta + F1 (U1 - U2)`` and ``Qy2 = beta - F2 (U1 - U2)``. Advection is computed
in flux form, ``J(psi, q) = d(uq)/dx + d(vq)/dy`` with ``u = -dpsi/dy``, ``v = dpsi/dx``, products in physical
space and derivatives in spectral space (no dealiasing, as in pyqg); the small scales are removed by pyqg's
exponential filter applied to the whole state after each step (:class:`QGSpectralFilter`), and time stepping is
pyqg's third-order Adams-Bashforth started with one Euler and one AB2 step. Because the state is spectral, that
scheme is the generic ``Filtered(AB3(startup="euler"), QGSpectralFilter(...))`` (:meth:`TwoLayerQG.default_stepper`):
a step costs 10 real 2-D FFTs of one layer (``irfft`` of q, u, v; ``rfft`` of the two fluxes) and the filter is a
product.

References:
    Flierl (1978), Dyn. Atmos. Oceans 2, 341, doi:10.1016/0377-0265(78)90002-7 (two-layer QG).
    Vallis (2017), Atmospheric and Oceanic Fluid Dynamics, 2nd ed., ch. 5 and 9 (layered QG, baroclinic
    instability).
    pyqg (Abernathey et al., https://pyqg.readthedocs.io; doi:10.5281/zenodo.6563667): names, defaults, numerics.
    Ross et al. (2023), JAMES 15, e2022MS003258, doi:10.1029/2022MS003258 (the subgrid benchmark built on it).
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from nemic.core.errors import ConfigError, DataError, check_finite, check_positive, is_concrete
from nemic.core.model import AbstractModel
from nemic.core.process import AbstractProcess, tree_add
from nemic.core.state import AbstractState
from nemic.core.steppers import AB3, AbstractStepFilter, Filtered
from nemic.models.qg import spectral as sp
from nemic.models.qg.grid import QGGrid

SECONDS_PER_YEAR = 360.0 * 86400.0  # pyqg's year (360 days)


class QGState(AbstractState):
    """State of :class:`TwoLayerQG`: the spectral PV anomaly ``qh`` (2, ny, nk), complex, layer 0 on top.

    ``qh`` holds the rfft2 coefficients of the PV ``q`` (2, ny, nx), s^-1; :attr:`q` returns ``q`` (leading axes,
    e.g. time or members, are kept), :meth:`from_q` builds a state from it. For files, run with
    ``observe=model.observe`` so trajectories hold ``q`` (CF-annotated, dims lev, y, x).
    """

    qh: Complex[Array, "2 ny nk"]

    time_units: ClassVar[str] = "s"

    @property
    def q(self) -> jax.Array:
        """The PV anomaly in physical space (..., 2, ny, nx), s^-1 (``nx = 2 (nk - 1)``: nx is even)."""
        ny, nk = self.qh.shape[-2:]
        return sp.irfft2(self.qh, 2 * (nk - 1), ny)

    @classmethod
    def from_q(cls, q) -> "QGState":
        """The state of physical PV ``q`` (..., 2, ny, nx), s^-1 (``nx`` even)."""
        return cls(qh=sp.rfft2(jnp.asarray(q)))


class QGFields(AbstractState):
    """Physical-space fields of a QG state for output: PV ``q`` (2, ny, nx), s^-1 (:meth:`TwoLayerQG.observe`)."""

    q: Float[Array, "2 ny nx"]

    cf: ClassVar[dict] = {
        "q": {"dims": ("lev", "y", "x"), "units": "s-1", "long_name": "potential vorticity anomaly",
              "standard_name": "ocean_potential_vorticity_anomaly"},
    }
    time_units: ClassVar[str] = "s"


def _arr(x):
    return jnp.asarray(x, dtype=float) if not isinstance(x, jax.Array) else x


class QGSpectralFilter(AbstractStepFilter):
    """pyqg's exponential filter applied to the new spectral state after each step.

    ``qh <- filtr * P(qh)`` with ``filtr`` of :func:`spectral.exponential_filter` and ``P`` the projection on
    coefficients of real fields (:meth:`QGGrid.realizable`; pyqg's state passes through physical space each step,
    which does the same). Holds the grid (static) and ``filterfac`` (an array leaf).
    """

    grid: QGGrid = eqx.field(static=True)
    filterfac: jax.Array

    def __call__(self, before: "QGState", after: "QGState") -> "QGState":
        qh = after.qh
        filtr = self.grid.exponential_filter(jnp.asarray(self.filterfac, jnp.real(qh).dtype))
        return type(after)(qh=filtr.astype(jnp.real(qh).dtype) * self.grid.realizable(qh))


class AbstractQGClosure(AbstractProcess):
    """A subgrid closure of :class:`TwoLayerQG` that may need the model's physics (inversion, layer depths).

    As pyqg's parameterizations receive the model, :meth:`closure_tendency` receives the :class:`TwoLayerQG` it
    is added to: ``model + closure`` is the model with the closure in its ``closures`` field, so the hybrid's
    pytree holds each physical parameter once (the model's) and the closure holds only its grid (static, to check
    resolutions) and its own parameters. A closure that needs nothing from the model also works as a plain process
    (its :meth:`tendency`); one that does raises a one-line error there.
    """

    grid: eqx.AbstractVar[QGGrid]

    @abc.abstractmethod
    def closure_tendency(self, model: "TwoLayerQG", state: QGState, t: Any, key: Any = None) -> QGState:
        """dqh/dt (2, ny, nk) of the closure, s^-2, for ``state`` of ``model``."""

    def tendency(self, state: QGState, t: Any, key: Any = None) -> QGState:
        raise ConfigError(f"{type(self).__name__} needs the model's stratification: add it to a TwoLayerQG first "
                          "(model + closure), then other terms")


class TwoLayerQG(AbstractModel):
    """Two-layer QG model (pyqg's ``QGModel``) as a nemic model: ``tendency(state, t)`` returns dqh/dt (s^-2).

    Parameter names, units and defaults are pyqg's:

    Args:
        nx, ny: grid points in x and y (even, >= 8; ``ny`` defaults to ``nx``). Static (the :attr:`grid`).
        L, W: domain size in x and y, m (``W`` defaults to ``L``). Static (the :attr:`grid`).
        rek: linear bottom drag coefficient, s^-1.
        beta: meridional gradient of the Coriolis parameter, m^-1 s^-1.
        rd: deformation radius, m.
        delta: layer thickness ratio H1 / H2.
        H1: upper-layer thickness, m.
        U1, U2: background zonal velocities of the layers, m s^-1.
        filterfac: amplitude of the exponential small-scale filter (used by :meth:`default_stepper`).
        dealias: if True, apply Orszag's 2/3 rule to the advective products (not pyqg's default). Static.

    Physical parameters are array fields, so ``jax.grad`` reaches them (build the stepper from the model inside
    the differentiated function, ``model.default_stepper()``, for gradients with respect to ``filterfac``). The
    time step ``dt`` (s) belongs to the run: ``simulate(model, None, model.initial_state(key), dt=3600.0, ...)``.
    Closures (:class:`AbstractQGClosure`) added with ``model + closure`` live in the ``closures`` field.
    """

    qg_grid: QGGrid = eqx.field(static=True)
    dealias: bool = eqx.field(static=True)
    rek: jax.Array
    beta: jax.Array
    rd: jax.Array
    delta: jax.Array
    H1: jax.Array
    U1: jax.Array
    U2: jax.Array
    filterfac: jax.Array
    closures: tuple = ()

    def __init__(self, nx: int = 64, ny: int | None = None, L: float = 1e6, W: float | None = None,
                 rek=5.787e-7, beta=1.5e-11, rd=15000.0, delta=0.25, H1=500.0, U1=0.025, U2=0.0,
                 filterfac=23.6, dealias: bool = False):
        self.qg_grid = QGGrid(nx, ny, L, W)
        for name, v, zero in (("rek", rek, True), ("rd", rd, False), ("delta", delta, False), ("H1", H1, False),
                              ("filterfac", filterfac, True)):
            check_positive(name, v, allow_zero=zero)
        self.dealias = bool(dealias)
        self.rek, self.beta, self.rd, self.delta = _arr(rek), _arr(beta), _arr(rd), _arr(delta)
        self.H1, self.U1, self.U2, self.filterfac = _arr(H1), _arr(U1), _arr(U2), _arr(filterfac)
        self.closures = ()

    # ---------------------------------------------------------------- grid and derived parameters
    @property
    def grid(self) -> QGGrid:
        """The model's static grid (:class:`QGGrid`): what closures, coarseners and nudging terms hold."""
        return self.qg_grid

    nx = property(lambda self: self.grid.nx, doc="grid points in x")
    ny = property(lambda self: self.grid.ny, doc="grid points in y")
    nk = property(lambda self: self.grid.nk, doc="zonal wavenumbers of the rfft2 grid")
    L = property(lambda self: self.grid.L, doc="domain length in x, m")
    W = property(lambda self: self.grid.W, doc="domain length in y, m")
    M = property(lambda self: self.grid.M, doc="number of grid points")
    dx = property(lambda self: self.grid.dx, doc="grid spacing in x, m")
    dy = property(lambda self: self.grid.dy, doc="grid spacing in y, m")
    x = property(lambda self: self.grid.x, doc="cell-centre x coordinates (nx,), m")
    y = property(lambda self: self.grid.y, doc="cell-centre y coordinates (ny,), m")

    @property
    def F1(self):
        """Upper-layer stretching coefficient ``rd**-2 / (1 + delta)``, m^-2."""
        return self.rd**-2 / (1 + self.delta)

    @property
    def F2(self):
        """Lower-layer stretching coefficient ``delta F1``, m^-2."""
        return self.delta * self.F1

    @property
    def H2(self):
        return self.H1 / self.delta

    @property
    def Hi(self):
        """Layer thicknesses (2,), m."""
        return jnp.stack([self.H1, self.H2])

    @property
    def H(self):
        return self.H1 + self.H2

    @property
    def Ubg(self):
        """Background velocities (2,), m/s."""
        return jnp.stack([self.U1, self.U2])

    @property
    def Qy(self):
        """Background meridional PV gradients (2,), m^-1 s^-1."""
        U = self.U1 - self.U2
        return jnp.stack([self.beta + self.F1 * U, self.beta - self.F2 * U])

    def wavenumbers(self, dtype=None) -> tuple[Any, Any, Any]:
        """``(k, l, wv2)`` on the rfft2 grid (ny, nk), rad/m (NumPy float64, or JAX arrays of ``dtype``)."""
        return self.grid.wavenumbers(dtype)

    @property
    def filtr(self):
        """pyqg's exponential filter on the rfft2 grid (ny, nk)."""
        return self.grid.exponential_filter(self.filterfac)

    # ---------------------------------------------------------------- spectral operations
    def fft(self, f):
        return self.grid.fft(f)

    def ifft(self, fh):
        return self.grid.ifft(fh)

    def invert(self, qh):
        """Streamfunction ``ph`` (2, ny, nk) from PV ``qh`` (2, ny, nk): solves the 2x2 system per wavenumber.

        ``[[-(wv2 + F1), F1], [F2, -(wv2 + F2)]] ph = qh``, with ``ph = 0`` at ``wv2 = 0`` (as pyqg).
        """
        dt = jnp.real(qh).dtype
        _, _, wv2 = self.wavenumbers(dt)
        F1, F2 = jnp.asarray(self.F1, dt), jnp.asarray(self.F2, dt)
        det = wv2 * (wv2 + F1 + F2)
        inv = jnp.where(det == 0, 0.0, 1.0 / jnp.where(det == 0, 1.0, det))
        p1 = -((wv2 + F2) * qh[..., 0, :, :] + F1 * qh[..., 1, :, :]) * inv
        p2 = -(F2 * qh[..., 0, :, :] + (wv2 + F1) * qh[..., 1, :, :]) * inv
        return jnp.stack([p1, p2], axis=-3)

    def velocities(self, ph):
        """Eddy velocities ``(u, v)``, each (2, ny, nx) m/s, from the streamfunction ``ph`` (2, ny, nk)."""
        k, l, _ = self.wavenumbers(jnp.real(ph).dtype)
        uv = self.ifft(jnp.concatenate([-1j * l * ph, 1j * k * ph]))
        return uv[:2], uv[2:]

    def flux_divergence_hat(self, q, u, v):
        """``rfft2(d(u q)/dx + d(v q)/dy)`` (2, ny, nk) for fields (2, ny, nx) (velocities without background)."""
        k, l, _ = self.wavenumbers(q.dtype)
        fl = self.fft(jnp.concatenate([u * q, v * q]))
        return 1j * k * fl[:2] + 1j * l * fl[2:]

    def streamfunction(self, q):
        """Streamfunction (2, ny, nx), m^2/s, of PV ``q`` (2, ny, nx)."""
        return self.ifft(self.invert(self.fft(q)))

    def _dealias(self, fh):
        return fh * jnp.asarray(sp.dealias_mask(self.nx, self.ny), jnp.real(fh).dtype) if self.dealias else fh

    # ---------------------------------------------------------------- the Process interface
    def dynamics_tendency(self, qh) -> jax.Array:
        """dqh/dt (2, ny, nk) of the dynamics (advection, background shear and beta, drag; before the filter).

        One inverse transform gives ``q``, ``u`` and ``v`` (six layer transforms), one forward transform the two
        fluxes (four), as pyqg does.
        """
        dt = jnp.real(qh).dtype
        k, l, wv2 = self.wavenumbers(dt)
        qh = self._dealias(qh)
        ph = self.invert(qh)
        quv = self.ifft(jnp.concatenate([qh, -1j * l * ph, 1j * k * ph]))
        q, u, v = quv[:2], quv[2:4], quv[4:]
        Ubg = jnp.asarray(self.Ubg, dt)[:, None, None]
        Qy = jnp.asarray(self.Qy, dt)[:, None, None]
        dqh = -self._dealias(self.flux_divergence_hat(q, u + Ubg, v)) - 1j * k * Qy * ph
        drag = jnp.asarray(self.rek, dt) * wv2 * ph[1]
        return dqh.at[1].add(drag)

    def tendency_hat(self, q) -> jax.Array:
        """dqh/dt (2, ny, nk) of the dynamics for physical PV ``q`` (2, ny, nx) (before the filter)."""
        return self.dynamics_tendency(self.fft(q))

    def tendency(self, state: QGState, t: Any, key: Any = None) -> QGState:
        """dqh/dt (2, ny, nk), s^-2: the dynamics plus the closures in ``closures`` (no filter)."""
        out = QGState(qh=self.dynamics_tendency(state.qh))
        if self.closures:
            out = tree_add(out, *(c.closure_tendency(self, state, t, None) for c in self.closures))
        return out

    def __add__(self, other: AbstractProcess) -> AbstractProcess:
        """``model + closure`` puts a :class:`AbstractQGClosure` into ``closures``; other processes form a Sum."""
        if isinstance(other, AbstractQGClosure):
            if other.grid is not None and other.grid != self.grid:
                raise ConfigError(f"the closure's grid ({other.grid.ny}x{other.grid.nx}, {other.grid.L:g} m) is not "
                                  f"the model's ({self.ny}x{self.nx}, {self.L:g} m)")
            return eqx.tree_at(lambda m: m.closures, self, self.closures + (other,),
                               is_leaf=lambda v: isinstance(v, tuple) and v == ())
        return super().__add__(other)

    @property
    def physics(self) -> "TwoLayerQG":
        """The model without its closures."""
        if not self.closures:
            return self
        return eqx.tree_at(lambda m: m.closures, self, (), is_leaf=lambda v: isinstance(v, tuple) and v == ())

    def spectral_filter(self, state: QGState) -> QGState:
        """Apply pyqg's exponential filter (:class:`QGSpectralFilter`) to a state."""
        return QGSpectralFilter(self.grid, self.filterfac)(state, state)

    def default_stepper(self) -> Filtered:
        """pyqg's time stepping: ``Filtered(AB3(startup="euler"), QGSpectralFilter(grid, filterfac))``.

        AB3 started by one Euler and one AB2 step, the exponential filter applied after every step, all on the
        spectral state (pyqg's ``Model._step_forward``).
        """
        return Filtered(AB3(startup="euler"), QGSpectralFilter(self.grid, self.filterfac))

    def observe(self, state: QGState, t: Any = None) -> QGFields:
        """The physical-space PV of ``state`` (a :class:`QGFields`): pass ``observe=model.observe`` to
        ``rollout``/``simulate`` to save ``q`` (2, ny, nx) with CF dims (lev, y, x)."""
        return QGFields(q=state.q)

    # ---------------------------------------------------------------- states and checks
    def params(self) -> dict[str, Any]:
        """The constructor arguments as plain numbers (for dataset attributes; see ``to_attrs``/``from_attrs``)."""
        out: dict[str, Any] = {"nx": self.nx, "ny": self.ny, "L": self.L, "W": self.W, "dealias": int(self.dealias)}
        for n in ("rek", "beta", "rd", "delta", "H1", "U1", "U2", "filterfac"):
            out[n] = float(getattr(self, n))
        return out

    def initial_state(self, key: Any = None, *, q=None, amplitude: float = 1e-6, dtype=None) -> QGState:
        """pyqg's random initial condition from ``key``, or the state of a given physical PV ``q`` (2, ny, nx).

        Random start: upper layer ``1e-7 U[0,1) + amplitude U[0,1)(x)`` (s^-1; the second part y-independent),
        lower layer zero, drawn from the ``jax.random`` key only. ``q`` is checked for shape and finite values.
        """
        if q is not None:
            q = jnp.asarray(q)
            if q.shape != (2, self.ny, self.nx):
                raise DataError(f"initial PV must have shape (2, {self.ny}, {self.nx}) = (lev, y, x), got {q.shape}")
            check_finite("initial PV q", q)
            return QGState.from_q(q)
        if key is None:
            raise ConfigError("TwoLayerQG.initial_state needs a jax.random key (pyqg's random start) or q=PV")
        dtype = dtype or jnp.result_type(float)
        ka, kb = jax.random.split(key)
        q1 = 1e-7 * jax.random.uniform(ka, (self.ny, self.nx), dtype) + amplitude * jax.random.uniform(
            kb, (1, self.nx), dtype)
        return QGState.from_q(jnp.stack([q1, jnp.zeros_like(q1)]))

    def check_state(self, state: Any) -> None:
        """One-line :class:`DataError` unless ``state`` is a :class:`QGState` with complex ``qh`` (2, ny, nk)."""
        if not isinstance(state, QGState):
            raise DataError(f"TwoLayerQG steps a QGState (spectral PV qh), got {type(state).__name__}; "
                            "build it with model.initial_state(key) or model.initial_state(q=pv)")
        shape = getattr(state.qh, "shape", None)
        if shape != self.grid.spectral_shape or not jnp.iscomplexobj(state.qh):
            raise DataError(f"QGState.qh must be complex with shape {self.grid.spectral_shape} = (lev, l, k) on the "
                            f"rfft2 grid, got {getattr(state.qh, 'dtype', '?')} {shape}; use QGState.from_q(q)")

    def cfl(self, state: QGState, dt: float) -> jax.Array:
        """Largest CFL number ``dt (|u + U| / dx + |v| / dy)`` over the grid (pyqg's definition), non-dimensional."""
        u, v = self.velocities(self.invert(state.qh))
        U = jnp.asarray(self.Ubg, u.dtype)[:, None, None]
        return jnp.max(dt * (jnp.abs(u + U) / self.dx + jnp.abs(v) / self.dy))

    def check_timestep(self, state: QGState, dt: float, limit: float = 0.5) -> float:
        """Warn (``RuntimeWarning`` naming the CFL number) when the timestep is too long for ``state``.

        Also bounds dt by the background flow alone (``max|U| dt / dx``) so a state at rest is checked too.
        Returns the CFL number. ``limit`` 0.5 is conservative for AB3 with pseudo-spectral advection.
        """
        if not is_concrete((state, dt)):
            return float("nan")
        c = max(float(self.cfl(state, dt)), float(jnp.max(jnp.abs(self.Ubg))) * float(dt) / self.dx)
        if not math.isfinite(c) or c > limit:
            warnings.warn(f"timestep dt={float(dt):g} s gives CFL number {c:.3g} > {limit:g} at nx={self.nx}; "
                          "the run may be unstable, reduce dt", RuntimeWarning, stacklevel=2)
        return c

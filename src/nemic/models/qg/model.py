"""The two-layer quasi-geostrophic model on a doubly periodic domain (pseudo-spectral), with pyqg's equations.

Prognostic variable: the potential-vorticity anomaly ``q`` of the two layers, shape (2, ny, nx), units s^-1, in
physical space. With streamfunction ``psi`` (m^2 s^-1), ``F1 = rd**-2 / (1 + delta)``, ``F2 = delta F1``,
``delta = H1 / H2``:

    q1 = lap(psi1) + F1 (psi2 - psi1),        q2 = lap(psi2) + F2 (psi1 - psi2),

    dq_i/dt + J(psi_i, q_i) + U_i dq_i/dx + Qy_i dpsi_i/dx = -delta_{i2} rek lap(psi2),

with background PV gradients ``Qy1 = beta + F1 (U1 - U2)`` and ``Qy2 = beta - F2 (U1 - U2)``. Advection is computed
in flux form, ``J(psi, q) = d(uq)/dx + d(vq)/dy`` with ``u = -dpsi/dy``, ``v = dpsi/dx``, products in physical
space and derivatives in spectral space (no dealiasing, as in pyqg); the small scales are removed by pyqg's
exponential filter applied to the whole state after each step (:meth:`TwoLayerQG.spectral_filter`), and time
stepping is pyqg's third-order Adams-Bashforth started with one Euler and one AB2 step.

References:
    Flierl (1978), Dyn. Atmos. Oceans 2, 341, doi:10.1016/0377-0265(78)90002-7 (two-layer QG).
    Vallis (2017), Atmospheric and Oceanic Fluid Dynamics, 2nd ed., ch. 5 and 9 (layered QG, baroclinic
    instability).
    pyqg (Abernathey et al., https://pyqg.readthedocs.io; doi:10.5281/zenodo.6563667): names, defaults, numerics.
    Ross et al. (2023), JAMES 15, e2022MS003258, doi:10.1029/2022MS003258 (the subgrid benchmark built on it).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from nemic.core.errors import ConfigError, DataError, check_finite, check_positive, is_concrete
from nemic.core.process import AbstractProcess
from nemic.core.state import AbstractState
from nemic.core.steppers import AbstractStepper
from nemic.models.qg import spectral as sp

SECONDS_PER_YEAR = 360.0 * 86400.0  # pyqg's year (360 days)


class QGState(AbstractState):
    """State of :class:`TwoLayerQG`: the potential-vorticity anomaly ``q`` (2, ny, nx), s^-1, layer 0 on top."""

    q: Float[Array, "2 ny nx"]

    cf: ClassVar[dict] = {
        "q": {"dims": ("lev", "y", "x"), "units": "s-1", "long_name": "potential vorticity anomaly",
              "standard_name": "ocean_potential_vorticity_anomaly"},
    }
    time_units: ClassVar[str] = "s"


def _arr(x):
    return jnp.asarray(x, dtype=float) if not isinstance(x, jax.Array) else x


class TwoLayerQG(AbstractProcess):
    """Two-layer QG model (pyqg's ``QGModel``) as a Process: ``tendency(state, t)`` returns dq/dt (s^-2).

    Parameter names, units and defaults are pyqg's:

    Args:
        nx, ny: grid points in x and y (even, >= 8; ``ny`` defaults to ``nx``). Static.
        L, W: domain size in x and y, m (``W`` defaults to ``L``). Static (they define the grid).
        rek: linear bottom drag coefficient, s^-1.
        beta: meridional gradient of the Coriolis parameter, m^-1 s^-1.
        rd: deformation radius, m.
        delta: layer thickness ratio H1 / H2.
        H1: upper-layer thickness, m.
        U1, U2: background zonal velocities of the layers, m s^-1.
        filterfac: amplitude of the exponential small-scale filter.
        dealias: if True, apply Orszag's 2/3 rule to the advective products (not pyqg's default). Static.

    Physical parameters are array fields, so ``jax.grad`` reaches them. The time step ``dt`` (s) belongs to the
    stepper: use :meth:`stepper` (pyqg's AB3 + filter) with :func:`nemic.core.rollout.rollout`.
    """

    nx: int = eqx.field(static=True)
    ny: int = eqx.field(static=True)
    L: float = eqx.field(static=True)
    W: float = eqx.field(static=True)
    dealias: bool = eqx.field(static=True)
    rek: jax.Array
    beta: jax.Array
    rd: jax.Array
    delta: jax.Array
    H1: jax.Array
    U1: jax.Array
    U2: jax.Array
    filterfac: jax.Array

    def __init__(self, nx: int = 64, ny: int | None = None, L: float = 1e6, W: float | None = None,
                 rek=5.787e-7, beta=1.5e-11, rd=15000.0, delta=0.25, H1=500.0, U1=0.025, U2=0.0,
                 filterfac=23.6, dealias: bool = False):
        ny = nx if ny is None else ny
        for name, n in (("nx", nx), ("ny", ny)):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 8 or n % 2:
                raise ConfigError(f"{name} must be an even integer >= 8, got {n!r}")
        W = L if W is None else W
        check_positive("L", L)
        check_positive("W", W)
        for name, v, zero in (("rek", rek, True), ("rd", rd, False), ("delta", delta, False), ("H1", H1, False),
                              ("filterfac", filterfac, True)):
            check_positive(name, v, allow_zero=zero)
        self.nx, self.ny, self.L, self.W = int(nx), int(ny), float(L), float(W)
        self.dealias = bool(dealias)
        self.rek, self.beta, self.rd, self.delta = _arr(rek), _arr(beta), _arr(rd), _arr(delta)
        self.H1, self.U1, self.U2, self.filterfac = _arr(H1), _arr(U1), _arr(U2), _arr(filterfac)

    # ---------------------------------------------------------------- derived quantities (pyqg names)
    @property
    def nk(self) -> int:
        return self.nx // 2 + 1

    @property
    def M(self) -> int:
        return self.nx * self.ny

    @property
    def dx(self) -> float:
        return self.L / self.nx

    @property
    def dy(self) -> float:
        return self.W / self.ny

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

    def grid(self, dtype=None) -> tuple[Any, Any, Any]:
        """``(k, l, wv2)`` on the rfft2 grid (ny, nk), rad/m (NumPy float64, or JAX arrays of ``dtype``)."""
        g = sp.wavenumber_grid(self.nx, self.ny, self.L, self.W)
        return g if dtype is None else tuple(jnp.asarray(a, dtype) for a in g)

    @property
    def x(self) -> np.ndarray:
        """Cell-centre x coordinates (nx,), m (pyqg's grid)."""
        return (np.arange(self.nx) + 0.5) * self.dx

    @property
    def y(self) -> np.ndarray:
        """Cell-centre y coordinates (ny,), m."""
        return (np.arange(self.ny) + 0.5) * self.dy

    @property
    def filtr(self):
        """pyqg's exponential filter on the rfft2 grid (ny, nk)."""
        return sp.exponential_filter(self.nx, self.ny, self.L, self.W, self.filterfac)

    # ---------------------------------------------------------------- spectral operations
    def fft(self, f):
        return sp.rfft2(f)

    def ifft(self, fh):
        return sp.irfft2(fh, self.nx, self.ny)

    def invert(self, qh):
        """Streamfunction ``ph`` (2, ny, nk) from PV ``qh`` (2, ny, nk): solves the 2x2 system per wavenumber.

        ``[[-(wv2 + F1), F1], [F2, -(wv2 + F2)]] ph = qh``, with ``ph = 0`` at ``wv2 = 0`` (as pyqg).
        """
        dt = jnp.real(qh).dtype
        _, _, wv2 = self.grid(dt)
        F1, F2 = jnp.asarray(self.F1, dt), jnp.asarray(self.F2, dt)
        det = wv2 * (wv2 + F1 + F2)
        inv = jnp.where(det == 0, 0.0, 1.0 / jnp.where(det == 0, 1.0, det))
        p1 = -((wv2 + F2) * qh[0] + F1 * qh[1]) * inv
        p2 = -(F2 * qh[0] + (wv2 + F1) * qh[1]) * inv
        return jnp.stack([p1, p2])

    def velocities(self, ph):
        """Eddy velocities ``(u, v)``, each (2, ny, nx) m/s, from the streamfunction ``ph`` (2, ny, nk)."""
        k, l, _ = self.grid(jnp.real(ph).dtype)
        uv = self.ifft(jnp.concatenate([-1j * l * ph, 1j * k * ph]))
        return uv[:2], uv[2:]

    def flux_divergence_hat(self, q, u, v):
        """``rfft2(d(u q)/dx + d(v q)/dy)`` (2, ny, nk) for fields (2, ny, nx) (velocities without background)."""
        k, l, _ = self.grid(q.dtype)
        fl = self.fft(jnp.concatenate([u * q, v * q]))
        return 1j * k * fl[:2] + 1j * l * fl[2:]

    def _dealias(self, fh):
        return fh * jnp.asarray(sp.dealias_mask(self.nx, self.ny), jnp.real(fh).dtype) if self.dealias else fh

    # ---------------------------------------------------------------- the Process interface
    def tendency_hat(self, q, qh=None) -> jax.Array:
        """dq/dt on the rfft2 grid (2, ny, nk) for PV ``q`` (2, ny, nx) (before the filter).

        ``qh``, if given, must be ``rfft2(q)`` (it saves one transform when the caller already has it).
        """
        dt = q.dtype
        k, _, wv2 = self.grid(dt)
        qh = self._dealias(self.fft(q) if qh is None else qh)
        ph = self.invert(qh)
        u, v = self.velocities(ph)
        if self.dealias:
            q = self.ifft(qh)
        Ubg = jnp.asarray(self.Ubg, dt)[:, None, None]
        Qy = jnp.asarray(self.Qy, dt)[:, None, None]
        dqh = -self._dealias(self.flux_divergence_hat(q, u + Ubg, v)) - 1j * k * Qy * ph
        drag = jnp.asarray(self.rek, dt) * wv2 * ph[1]
        return dqh.at[1].add(drag)

    def tendency(self, state: QGState, t: Any, key: Any = None) -> QGState:
        """dq/dt (2, ny, nx), s^-2: advection, background shear and beta, bottom drag (no filter)."""
        return QGState(q=self.ifft(self.tendency_hat(state.q)))

    def spectral_filter(self, state: QGState) -> QGState:
        """Apply pyqg's exponential filter (:func:`spectral.exponential_filter`) to the whole state."""
        q = state.q
        return QGState(q=self.ifft(jnp.asarray(self.filtr, q.dtype) * self.fft(q)))

    def stepper(self) -> AbstractStepper:
        """pyqg's time stepping: AB3 started by Euler and AB2, the filter applied after every step.

        Returns :class:`~nemic.models.qg.stepper.SpectralAB3`, which does this with the tendency history and the
        filter in spectral space (12 instead of 16 FFTs per step). ``Filtered(AB3(startup="euler"),
        model.spectral_filter)`` is the same scheme built from the generic steppers (equal to round-off).
        """
        from nemic.models.qg.stepper import SpectralAB3

        return SpectralAB3()

    # ---------------------------------------------------------------- states and checks
    def streamfunction(self, q):
        """Streamfunction (2, ny, nx), m^2/s, of PV ``q`` (2, ny, nx)."""
        return self.ifft(self.invert(self.fft(q)))

    def initial_state(self, q) -> QGState:
        """Wrap a PV field (2, ny, nx), s^-1, as a :class:`QGState` after checking its shape and values."""
        q = jnp.asarray(q)
        if q.shape != (2, self.ny, self.nx):
            raise DataError(f"initial PV must have shape (2, {self.ny}, {self.nx}) = (lev, y, x), got {q.shape}")
        check_finite("initial PV q", q)
        return QGState(q=q)

    def random_state(self, key, amplitude: float = 1e-6, dtype=None) -> QGState:
        """pyqg's random initial condition: upper layer ``1e-7 U[0,1) + 1e-6 U[0,1)(x)``, lower layer zero.

        ``amplitude`` scales the second (y-independent) part. Randomness from the ``jax.random`` key only.
        """
        dtype = dtype or jnp.result_type(float)
        ka, kb = jax.random.split(key)
        q1 = 1e-7 * jax.random.uniform(ka, (self.ny, self.nx), dtype) + amplitude * jax.random.uniform(
            kb, (1, self.nx), dtype)
        return QGState(q=jnp.stack([q1, jnp.zeros_like(q1)]))

    def cfl(self, state: QGState, dt: float) -> jax.Array:
        """Largest CFL number ``dt (|u + U| / dx + |v| / dy)`` over the grid (pyqg's definition), non-dimensional."""
        u, v = self.velocities(self.invert(self.fft(state.q)))
        U = jnp.asarray(self.Ubg, state.q.dtype)[:, None, None]
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

    def run(self, state: QGState, *, dt: float = 3600.0, n_steps: int, save_every: int = 1,
            progress: bool | str = False, extra=None):
        """Run ``n_steps`` of pyqg's scheme with :func:`nemic.core.rollout.simulate` (host driver, blow-up report).

        ``extra`` is an optional Process added to the dynamics (a parameterization). Returns the trajectory.
        """
        from nemic.core.rollout import simulate

        if not isinstance(state, QGState):
            state = self.initial_state(state)
        check_finite("initial PV q", state.q)
        self.check_timestep(state, dt)
        proc = self if extra is None else self + extra
        return simulate(proc, self.stepper(), state, dt=dt, n_steps=n_steps, save_every=save_every,
                        progress=progress)

    def params(self) -> dict[str, float]:
        """The model's parameters as plain numbers (for netCDF attributes)."""
        out = {"nx": self.nx, "ny": self.ny, "L": self.L, "W": self.W, "dealias": int(self.dealias)}
        for n in ("rek", "beta", "rd", "delta", "H1", "U1", "U2", "filterfac"):
            out[n] = float(getattr(self, n))
        return out

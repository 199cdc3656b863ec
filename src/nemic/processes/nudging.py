"""Nudging (Newtonian relaxation) toward a reference trajectory, grid-point or spectral.

The nudging tendency of a state field ``x`` toward a reference ``x_ref(t)`` is (Anthes 1974, J. Atmos. Sci. 31,
702-719; Hoke & Anthes 1976, MWR 104, 1551-1556)::

    N(x, t) = w * (x_ref(t) - x) / tau

with a relaxation time ``tau > 0`` per field (same time units as the model) and optional weights or a mask ``w``
(broadcastable to the field). The reference is linearly interpolated in time between its saved states.

*Spectral nudging* (von Storch, Langenberg & Feser 2000, MWR 128, 3664-3673,
doi:10.1175/1520-0493(2000)128<3664:ASNTFR>2.0.CO;2) relaxes only the large scales: the difference
``x_ref - x`` is Fourier transformed along the chosen periodic axes, every coefficient with integer wavenumber
``|k| > cutoff`` (along any of those axes) is set to zero, and the result is transformed back. The nudging
tendency then has no component above the cutoff, so those scales evolve freely.

The tendencies of a run nudged toward a better reference are an estimate of the model's error: in the steady
state of ``dx/dt = f(x) + e + N`` the nudging tendency balances the error (Watt-Meyer et al. 2021, GRL 48,
e2021GL092555, doi:10.1029/2021GL092555; Bretherton et al. 2022, JAMES 14, e2021MS002794,
doi:10.1029/2021MS002794). :func:`nudged_run` returns them as diagnostics, :func:`nemic.io.nudging.nudging_dataset` as a CF
dataset.

Times outside the reference's time range: inside a compiled run the reference is held constant at its first or
last state (no error can be raised from traced code), so runs must be checked on the host first:
:meth:`Nudging.check_covers` (also done by the constructor when ``t_span`` is given, and by :func:`nudged_run`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError, check_finite, is_concrete
from nemic.core.process import AbstractProcess, PyTree
from nemic.core.rollout import Trajectory, simulate


def _field_names(state: Any) -> list[str]:
    if dataclasses.is_dataclass(state):
        return [f.name for f in dataclasses.fields(state)]
    raise DataError(f"nudging needs a state dataclass (an AbstractState), got {type(state).__name__}")


def _per_field(name: str, value: Any, fields: Sequence[str]) -> dict[str, Any]:
    """Expand a scalar/array or a ``{field: value}`` mapping to one entry per field (None = not given)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{name} names unknown field(s) {unknown}; the state has fields {list(fields)}")
        return {f: value.get(f) for f in fields}
    return {f: value for f in fields}


def spectral_lowpass(x: jax.Array, cutoff: int, axes: Sequence[int] = (-1,)) -> jax.Array:
    """Keep only the Fourier components of ``x`` with integer wavenumber ``|k| <= cutoff`` along ``axes``.

    Along an axis of length n the wavenumbers are ``k = n * fftfreq(n)`` (0, 1, ..., -1). A coefficient is kept
    only if its wavenumber satisfies the bound along every listed axis (a box in wavenumber space). The input is
    real and so is the output (the mask is symmetric in k). Shapes: any ``x``; ``axes`` index ``x``.
    Reference: von Storch et al. (2000), MWR 128, 3664-3673.
    """
    axes = tuple(int(a) for a in axes)
    xh = jnp.fft.fftn(x, axes=axes)
    mask = jnp.ones((), dtype=bool)
    for a in axes:
        n = x.shape[a]
        k = np.abs(np.round(np.fft.fftfreq(n) * n)).astype(int)
        shape = [1] * x.ndim
        shape[a] = n
        mask = mask & jnp.asarray((k <= cutoff).reshape(shape))
    return jnp.real(jnp.fft.ifftn(jnp.where(mask, xh, 0), axes=axes)).astype(x.dtype)


def _reference_from_dataset(ds: Any, like: Any) -> tuple[np.ndarray, Any]:
    if like is None:
        raise ConfigError("a reference given as an xarray Dataset needs like= (a state of the model, to know "
                          "its class and fields)")
    if "time" not in ds.coords and "time" not in ds.variables:
        raise DataError("reference dataset has no 'time' coordinate")
    fields = _field_names(like)
    missing = [f for f in fields if getattr(like, f) is not None and f not in ds.data_vars]
    if missing:
        raise DataError(f"reference dataset lacks variable(s) {missing}; it has {sorted(ds.data_vars)}")
    values = {f: (jnp.asarray(ds[f].transpose("time", ...).values) if getattr(like, f) is not None else None)
              for f in fields}
    return np.asarray(ds["time"].values, dtype=float), type(like)(**values)


class Nudging(AbstractProcess):
    """Relaxation toward a reference: tendency ``w * (ref(t) - x) / tau`` per field (optionally spectral).

    Args:
        reference: a :class:`~nemic.core.rollout.Trajectory`; or a state whose fields carry a leading time axis
            of length T (give ``times``); or an :class:`xarray.Dataset` with a ``time`` coordinate and one variable
            per state field (give ``like``); or a single state without time axis with ``times=None`` (a constant
            reference, valid at all times).
        tau: relaxation time(s) > 0, in model time units: a number (all fields) or ``{field: tau}`` (fields not
            listed are not nudged).
        times: times of the reference states, shape (T,), strictly increasing (not needed for a Trajectory or a
            Dataset).
        weights: optional weights/mask, a single array broadcastable to every nudged field or ``{field: array}``
            (e.g. 0/1 for a mask, a profile in the vertical).
        spectral_cutoff: if given (an integer >= 0), spectral nudging: only wavenumbers ``|k| <= cutoff`` along
            ``spectral_axes`` are relaxed (von Storch et al. 2000).
        spectral_axes: the periodic axes of each field (negative indices count from the end), a tuple or
            ``{field: tuple}``; default the last axis.
        like: an example state of the model; its class, fields and shapes are checked against the reference.
        t_span: ``(t0, t1)`` of the intended run; checked to lie inside the reference's time range.

    Shapes: each field of the reference has shape (T, *field_shape). Units: tendency = field units / time units.
    """

    times: jax.Array
    reference: PyTree
    inv_tau: dict
    weights: dict
    spectral_cutoff: int | None = eqx.field(static=True)
    spectral_axes: tuple = eqx.field(static=True)
    constant: bool = eqx.field(static=True)

    def __init__(self, reference: Any, tau: Any, *, times: Any = None, weights: Any = None,
                 spectral_cutoff: int | None = None, spectral_axes: Any = (-1,), like: Any = None,
                 t_span: tuple[float, float] | None = None):
        constant = False
        if isinstance(reference, Trajectory):
            if times is not None:
                raise ConfigError("times= must not be given with a Trajectory reference (it has its own)")
            times, states = np.asarray(reference.t, dtype=float), reference.states
        elif type(reference).__name__ == "Dataset" and hasattr(reference, "data_vars"):
            times, states = _reference_from_dataset(reference, like)
        else:
            states = reference
            if times is None:
                constant = True
            else:
                times = np.asarray(times, dtype=float)
        fields = _field_names(states)
        # --- times
        if constant:
            states = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], states)
            times = np.zeros(1)
        if times.ndim != 1 or times.size < 1:
            raise DataError(f"reference times must be a 1-D array with at least one entry, got shape {times.shape}")
        if not np.all(np.isfinite(times)):
            raise DataError("reference times contain NaN/inf")
        if times.size > 1 and not np.all(np.diff(times) > 0):
            raise DataError("reference times must be strictly increasing")
        if times.size == 1 and not constant:
            raise DataError("a reference trajectory needs at least two times (or pass one state with times=None "
                            "for a constant reference)")
        for f in fields:
            v = getattr(states, f)
            if v is None:
                continue
            if jnp.ndim(v) < 1 or jnp.shape(v)[0] != times.size:
                raise DataError(f"reference field {f!r} has shape {tuple(jnp.shape(v))}; expected a leading time "
                                f"axis of length {times.size}")
        check_finite("reference", states)
        # --- tau, weights
        taus = _per_field("tau", tau, fields)
        if all(v is None for v in taus.values()):
            raise ConfigError("tau is given for no field; nothing would be nudged")
        inv_tau = {}
        for f, v in taus.items():
            if v is None:
                continue
            if is_concrete(v):
                arr = np.asarray(v, dtype=float)
                if np.any(np.isnan(arr)):
                    raise ConfigError(f"nudging time scale tau for {f!r} must be a number > 0, got {v!r}")
                if np.any(arr <= 0):
                    raise ConfigError(f"nudging time scale tau for {f!r} must be > 0, got {v!r}")
            inv_tau[f] = 1.0 / jnp.asarray(v, dtype=float)
        w = _per_field("weights", weights, fields)
        self.weights = {f: jnp.asarray(v, dtype=float) for f, v in w.items() if v is not None and f in inv_tau}
        for f, v in self.weights.items():
            shape = tuple(jnp.shape(getattr(states, f)))[1:]
            try:
                np.broadcast_shapes(v.shape, shape)
            except ValueError:
                raise DataError(f"weights for {f!r} have shape {v.shape}, not broadcastable to the field's "
                                f"shape {shape}") from None
        if spectral_cutoff is not None:
            if not isinstance(spectral_cutoff, (int, np.integer)) or spectral_cutoff < 0:
                raise ConfigError(f"spectral_cutoff must be an integer >= 0, got {spectral_cutoff!r}")
            ax = _per_field("spectral_axes", spectral_axes, fields)
            axes = {}
            for f in inv_tau:
                a = tuple(int(i) for i in (ax[f] if ax[f] is not None else ()))
                nd = jnp.ndim(getattr(states, f)) - 1
                if any(not -nd <= i < nd for i in a):
                    raise ConfigError(f"spectral_axes {a} out of range for field {f!r} with {nd} dimension(s)")
                axes[f] = tuple(i if i < 0 else i - nd for i in a)  # counted from the end
            self.spectral_axes = tuple(axes.items())
        else:
            self.spectral_axes = ()
        self.spectral_cutoff = None if spectral_cutoff is None else int(spectral_cutoff)
        self.inv_tau = inv_tau
        self.times = jnp.asarray(times)
        self.reference = states
        self.constant = constant
        if like is not None:
            self.check_state(like)
        if t_span is not None:
            self.check_covers(*t_span)

    # ------------------------------------------------------------------ host-side checks
    @property
    def time_range(self) -> tuple[float, float]:
        """``(first, last)`` reference time (``(-inf, inf)`` for a constant reference)."""
        if self.constant:
            return (-np.inf, np.inf)
        t = np.asarray(self.times)
        return float(t[0]), float(t[-1])

    def check_covers(self, t0: float, t1: float) -> None:
        """Raise :class:`DataError` unless ``[t0, t1]`` lies inside the reference's time range."""
        lo, hi = self.time_range
        a, b = min(float(t0), float(t1)), max(float(t0), float(t1))
        tol = 1e-9 * max(1.0, abs(lo) if np.isfinite(lo) else 1.0, abs(hi) if np.isfinite(hi) else 1.0)
        if a < lo - tol or b > hi + tol:
            raise DataError(f"the run covers t = [{a:g}, {b:g}] but the nudging reference only covers "
                            f"[{lo:g}, {hi:g}]")

    def check_state(self, state: Any) -> None:
        """Raise :class:`DataError` if ``state``'s class, fields or shapes do not match the reference."""
        ref = self.reference
        if type(state) is not type(ref):
            raise DataError(f"nudging reference holds {type(ref).__name__} but the model state is "
                            f"{type(state).__name__}")
        for f in _field_names(state):
            s, r = getattr(state, f), getattr(ref, f)
            if f in self.inv_tau and (s is None or r is None):
                raise DataError(f"field {f!r} is nudged but missing in the state or the reference")
            if f in self.inv_tau and tuple(jnp.shape(s)) != tuple(jnp.shape(r))[1:]:
                raise DataError(f"reference field {f!r} has shape {tuple(jnp.shape(r))[1:]} per time, the model "
                                f"state has {tuple(jnp.shape(s))}")

    # ------------------------------------------------------------------ the process
    def reference_at(self, t: Any) -> PyTree:
        """The reference linearly interpolated to time ``t`` (held constant outside its time range)."""
        if self.constant:
            return jax.tree_util.tree_map(lambda x: x[0], self.reference)
        times = self.times
        i = jnp.clip(jnp.searchsorted(times, t, side="right") - 1, 0, times.shape[0] - 2)
        t_a, t_b = times[i], times[i + 1]
        a = jnp.clip((t - t_a) / (t_b - t_a), 0.0, 1.0)
        return jax.tree_util.tree_map(lambda x: (1 - a) * x[i] + a * x[i + 1], self.reference)

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        self.check_state(state)  # static shapes: runs at trace time
        ref = self.reference_at(t)
        out = {}
        for f in _field_names(state):
            x = getattr(state, f)
            if x is None:
                out[f] = None
                continue
            if f not in self.inv_tau:
                out[f] = jnp.zeros_like(x)
                continue
            d = getattr(ref, f) - x
            axes = dict(self.spectral_axes).get(f)
            if self.spectral_cutoff is not None and axes:
                d = spectral_lowpass(d, self.spectral_cutoff, axes)
            if f in self.weights:
                d = self.weights[f] * d
            out[f] = (d * self.inv_tau[f]).astype(x.dtype)
        return type(state)(**out)


# ---------------------------------------------------------------------- nudged runs and their diagnostics
@dataclasses.dataclass
class NudgedRun:
    """A nudged simulation: the trajectory and the nudging tendency at each saved state (same structure)."""

    trajectory: Trajectory
    nudging_tendency: Trajectory


def nudged_run(model: AbstractProcess, nudging: Nudging, stepper: Any, state0: Any, *, dt: float, n_steps: int,
               t0: float = 0.0, save_every: int = 1, progress: Any = None) -> NudgedRun:
    """Run ``model + nudging`` with :func:`~nemic.core.rollout.simulate` and record the nudging tendencies.

    The reference's time range is checked on the host first. The recorded diagnostic is the instantaneous nudging
    tendency ``nudging.tendency(x(t_i), t_i)`` at every saved time ``t_i`` (for ``save_every = 1`` with a small
    dt this differs from the average over the step by O(dt)). ``progress`` is a ``report(done, total)``
    callback (:func:`nemic.io.terminal.progress`) or None.
    """
    nudging.check_state(state0)
    nudging.check_covers(t0, t0 + n_steps * dt)
    traj = simulate(model + nudging, stepper, state0, dt=dt, n_steps=n_steps, t0=t0, save_every=save_every,
                    progress=progress)
    tend = eqx.filter_jit(jax.vmap(lambda nu, s, t: nu.tendency(s, t), in_axes=(None, 0, 0)))(nudging, traj.states, traj.t)
    return NudgedRun(traj, Trajectory(t=traj.t, states=tend, blowup_step=traj.blowup_step))


__all__ = ["Nudging", "NudgedRun", "nudged_run", "spectral_lowpass"]

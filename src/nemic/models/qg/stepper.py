"""pyqg's time stepping for :class:`~nemic.models.qg.model.TwoLayerQG`, with its history in spectral space.

One step of pyqg's scheme (third-order Adams-Bashforth, started by one forward-Euler and one AB2 step, the
exponential filter applied to the new state) is, on the rfft2 grid,

    qh_{n+1} = filtr * (qh_n + dt (a0 f_n + a1 f_{n-1} + a2 f_{n-2})),     (a0, a1, a2) = (23, -16, 5) / 12,

with ``f = rfft2(dq/dt)``. The generic composition ``Filtered(AB3(startup="euler"), model.spectral_filter)``
computes the same thing but goes back and forth between physical and spectral space for the tendency and for the
filter: 16 real 2-D FFTs of one layer per step. :class:`SpectralAB3` keeps the two past tendencies in spectral
space and filters there, so a step needs 12 (``rfft`` of q; ``irfft`` of u and v; ``rfft`` of the two advective
fluxes; ``irfft`` of the new q; two layers each); the prognostic state stays the physical PV ``q`` (2, ny, nx).
This is how pyqg itself steps (Abernathey et al., https://pyqg.readthedocs.io, ``Model._step_forward``).

Terms added to the model (closures, nudging, corrections: ``model + closure``) are evaluated in physical space
as usual; their summed tendency costs one more forward transform per layer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractProcess, Sum, tree_add
from nemic.core.steppers import AbstractStepper


class SpectralAB3State(eqx.Module):
    """The two previous spectral tendencies (2, ny, nk), complex, and how many exist (0, 1 or 2)."""

    f_prev: jax.Array
    f_prev2: jax.Array
    level: jax.Array


def split_qg_process(process: AbstractProcess):
    """``(model, extra_terms)`` for a :class:`TwoLayerQG` or a ``Sum`` whose first term is one."""
    from nemic.models.qg.model import TwoLayerQG

    if isinstance(process, TwoLayerQG):
        return process, ()
    if isinstance(process, Sum) and isinstance(process.core, TwoLayerQG):
        return process.core, process.terms[1:]
    raise ConfigError(
        "SpectralAB3 steps a TwoLayerQG or a sum whose first term is one (model + closure), got "
        f"{type(process).__name__}; for other processes use Filtered(AB3(startup='euler'), filter_fn)")


class SpectralAB3(AbstractStepper):
    """pyqg's AB3 (Euler, AB2, then AB3) with the exponential filter, the history kept in spectral space.

    Use through :meth:`TwoLayerQG.stepper`. The process must be a :class:`TwoLayerQG` or ``model + terms``.
    Jittable, vmappable and differentiable like every nemic stepper (the history is a complex pytree).
    """

    order: ClassVar[int] = 3

    def init(self, process, state, t, dt):
        model, _ = split_qg_process(process)
        q = state.q
        z = jnp.zeros((*q.shape[:-2], model.ny, model.nk), jnp.result_type(q.dtype, jnp.complex64))
        return SpectralAB3State(f_prev=z, f_prev2=z, level=jnp.zeros((), jnp.int32))

    def step(self, process, state, t: Any, dt: Any, stepper_state: SpectralAB3State):
        model, extra = split_qg_process(process)
        q = state.q
        qh = model.fft(q)
        f = model.tendency_hat(q, qh)
        if extra:
            f = f + model.fft(tree_add(*(p.tendency(state, t) for p in extra)).q)
        lvl = stepper_state.level
        rdt = jnp.real(qh).dtype
        a0 = jnp.where(lvl == 0, 1.0, jnp.where(lvl == 1, 1.5, 23.0 / 12.0)).astype(rdt)
        a1 = jnp.where(lvl == 0, 0.0, jnp.where(lvl == 1, -0.5, -16.0 / 12.0)).astype(rdt)
        a2 = jnp.where(lvl < 2, 0.0, 5.0 / 12.0).astype(rdt)
        incr = a0 * f + a1 * stepper_state.f_prev + a2 * stepper_state.f_prev2
        qh_new = jnp.asarray(model.filtr, rdt) * (qh + jnp.asarray(dt, rdt) * incr)
        new = type(state)(q=model.ifft(qh_new).astype(q.dtype))
        hist = SpectralAB3State(f_prev=f, f_prev2=stepper_state.f_prev, level=jnp.minimum(lvl + 1, 2))
        return new, hist

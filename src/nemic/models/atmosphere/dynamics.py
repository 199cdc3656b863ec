"""dinosaur's primitive equations on sigma levels as the explicit and implicit parts of a nemic process.

dinosaur splits the primitive equations (Durran 2010, ch. 8; the semi-implicit scheme of Hoskins & Simmons 1975,
QJRMS 101, 637, doi:10.1002/qj.49710142918) into

* explicit terms: advection, Coriolis, the nonlinear part of the pressure gradient, vertical advection, the
  adiabatic temperature change and the humidity terms (``explicit_terms``);
* implicit terms: the linear gravity-wave terms about the isothermal reference temperature, coupling divergence,
  temperature and log surface pressure (``implicit_terms``), with the backward-Euler solve
  ``(1 - eta G)^-1`` (``implicit_inverse``) computed per total wavenumber with NumPy.

nemic's protocol differs from dinosaur's in two ways, both handled here: nemic times are in seconds (dinosaur's in
units of 1 / (2 Omega)), so tendencies are multiplied by ``grid.factor("s")`` and the implicit step size is
nondimensionalised; and nemic's state is an :class:`~nemic.models.atmosphere.state.AtmosphereState` (converted to
dinosaur's ``State`` with humidity as the ``specific_humidity`` tracer). The step size of the implicit solve must
be a concrete number (dinosaur inverts the implicit matrix in float64 NumPy at trace time), which holds for
:func:`nemic.core.rollout.rollout` and :func:`~nemic.core.rollout.simulate` with a Python ``dt``.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import numpy as np
from dinosaur import primitive_equations

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractImplicitProcess, AbstractProcess
from nemic.models.atmosphere.grid import AtmosphereGrid
from nemic.models.atmosphere.state import (
    HUMIDITY_KEY,
    AtmosphereState,
    check_atmosphere_state,
)


@functools.cache
def dinosaur_equation(grid: AtmosphereGrid, moist: bool = True) -> primitive_equations.PrimitiveEquationsSigma:
    """dinosaur's ``PrimitiveEquationsSigma`` on ``grid`` (flat orography, isothermal reference temperature);
    ``moist=True`` sets the humidity key (virtual-temperature effects of the specific-humidity tracer)."""
    coords = grid.coords
    t_ref = np.full((grid.layers,), grid.reference_temperature * grid.factor("K"))
    orography = np.zeros(coords.horizontal.modal_shape)
    return primitive_equations.PrimitiveEquationsSigma(
        t_ref, orography, coords, grid.specs, humidity_key=HUMIDITY_KEY if moist else None)


def _per_second(grid: AtmosphereGrid, tendency: Any, humidity_like: Any) -> AtmosphereState:
    s = grid.factor("s")
    out = AtmosphereState.from_dinosaur(tendency, humidity_like)
    return jax.tree_util.tree_map(lambda x: x * s, out)


class PrimitiveEquationsExplicit(AbstractProcess):
    """The explicit terms of dinosaur's primitive equations [state units per second]."""

    grid: AtmosphereGrid = eqx.field(static=True)
    moist: bool = eqx.field(static=True, default=True)

    def tendency(self, state: AtmosphereState, t: Any, key: Any = None) -> AtmosphereState:
        eq = dinosaur_equation(self.grid, self.moist)
        return _per_second(self.grid, eq.explicit_terms(state.to_dinosaur()), None)

    def check_state(self, state: Any) -> None:
        """One-line :class:`DataError` when ``state`` does not fit the grid (found by the rollout's checks in a
        model with added terms, whose core this is)."""
        check_atmosphere_state(self.grid, state)


class PrimitiveEquationsImplicit(AbstractImplicitProcess):
    """The implicit (linear gravity-wave) terms of dinosaur's primitive equations and their backward-Euler solve."""

    grid: AtmosphereGrid = eqx.field(static=True)
    moist: bool = eqx.field(static=True, default=True)

    def tendency(self, state: AtmosphereState, t: Any, key: Any = None) -> AtmosphereState:
        eq = dinosaur_equation(self.grid, self.moist)
        return _per_second(self.grid, eq.implicit_terms(state.to_dinosaur()), None)

    def implicit_solve(self, rhs: AtmosphereState, t: Any, eta: Any) -> AtmosphereState:
        """Solve ``x - eta L(x) = rhs`` with dinosaur's ``implicit_inverse``; ``eta`` [s] must be concrete."""
        try:
            eta_nd = float(eta) * self.grid.factor("s")
        except (TypeError, jax.errors.ConcretizationTypeError):
            raise ConfigError("the atmosphere's implicit solve needs a concrete time step (a Python number, not a "
                              "traced array): pass dt as a float to rollout/simulate") from None
        eq = dinosaur_equation(self.grid, self.moist)
        return AtmosphereState.from_dinosaur(eq.implicit_inverse(rhs.to_dinosaur(), eta_nd), None)

"""The global atmosphere: dinosaur's spectral primitive equations as a nemic model, Held-Suarez forcing, column
physics (classical or learned) applied to every column, spectral filters and a dry-mass fixer.

Quick start::

    from nemic.models.atmosphere import PrimitiveEquations, HeldSuarez
    from nemic.core import simulate
    model = PrimitiveEquations()                       # T21, 8 sigma levels
    state = model.initial_state(jax.random.key(0), perturbation=5e3)
    traj = simulate(model + HeldSuarez(model.grid), None, state, dt=model.dt, n_steps=720, save_every=72,
                    observe=model.observe)             # nodal SI fields on (level, lat, lon)
"""

from nemic.models.atmosphere.column import (
    INSOLATIONS,
    ColumnInputs,
    ColumnPhysics,
    ColumnTendencies,
    PackedColumnFunction,
    column_inputs,
    insolation_field,
)
from nemic.models.atmosphere.dynamics import (
    PrimitiveEquationsExplicit,
    PrimitiveEquationsImplicit,
    dinosaur_equation,
)
from nemic.models.atmosphere.filters import (
    DryMassFixer,
    SpectralFilter,
    column_water_fraction,
    global_mean_dry_surface_pressure,
    surface_pressure,
)
from nemic.models.atmosphere.grid import SUPPORTED_TRUNCATIONS, AtmosphereGrid
from nemic.models.atmosphere.held_suarez import HeldSuarez
from nemic.models.atmosphere.model import (
    PrimitiveEquations,
    fields_from_state,
    state_from_fields,
)
from nemic.models.atmosphere.state import AtmosphereFields, AtmosphereState

__all__ = [
    "INSOLATIONS", "SUPPORTED_TRUNCATIONS", "AtmosphereFields", "AtmosphereGrid", "AtmosphereState",
    "ColumnInputs", "ColumnPhysics", "ColumnTendencies", "DryMassFixer", "HeldSuarez", "PackedColumnFunction",
    "PrimitiveEquations", "PrimitiveEquationsExplicit", "PrimitiveEquationsImplicit", "SpectralFilter",
    "column_inputs", "column_water_fraction", "dinosaur_equation", "fields_from_state", "global_mean_dry_surface_pressure",
    "insolation_field", "state_from_fields", "surface_pressure",
]

"""Core abstractions: processes, steppers, rollouts, states, models and randomness.

``nemic.core`` imports only JAX, Equinox and NumPy; files, terminals and plots live in :mod:`nemic.io`.
"""

from nemic.core.errors import BlowUpError, ConfigError, DataError, NemicError
from nemic.core.model import AbstractModel
from nemic.core.process import (
    AbstractImplicitProcess,
    AbstractProcess,
    FunctionProcess,
    ImplicitExplicit,
    OncePerStep,
    Sum,
    apply_once_per_step,
    compose,
)
from nemic.core.random import AR1Noise, WhiteNoise
from nemic.core.rollout import (
    RolloutCarry,
    Trajectory,
    checkpointed_scan,
    ensemble_rollout,
    rollout,
    simulate,
)
from nemic.core.state import AbstractState
from nemic.core.steppers import (
    AB3,
    ARS222_TABLEAU,
    RK4,
    SIL3_TABLEAU,
    AbstractStepFilter,
    AbstractStepper,
    Filtered,
    ForwardEuler,
    IMEXARS222,
    IMEXRungeKutta,
    IMEXSIL3,
    IMEXTableau,
    SemiImplicitEuler,
    StateFilter,
    get_stepper,
)

__all__ = [
    "AB3", "ARS222_TABLEAU", "AR1Noise", "AbstractImplicitProcess", "AbstractModel", "AbstractProcess",
    "AbstractState", "AbstractStepFilter", "AbstractStepper", "BlowUpError", "ConfigError", "DataError",
    "Filtered", "ForwardEuler", "FunctionProcess", "IMEXARS222", "IMEXRungeKutta", "IMEXSIL3", "IMEXTableau",
    "ImplicitExplicit", "NemicError", "OncePerStep", "RK4", "RolloutCarry", "SIL3_TABLEAU", "SemiImplicitEuler",
    "StateFilter", "Sum", "Trajectory", "WhiteNoise", "apply_once_per_step", "checkpointed_scan", "compose",
    "ensemble_rollout", "get_stepper", "rollout", "simulate",
]

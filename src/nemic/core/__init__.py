"""Core abstractions: processes, steppers, rollouts, states and output."""

from nemic.core.errors import BlowUpError, ConfigError, DataError, NemicError
from nemic.core.output import to_xarray, write_json, write_netcdf
from nemic.core.process import (
    AbstractImplicitProcess,
    AbstractProcess,
    FunctionProcess,
    ImplicitExplicit,
    Sum,
)
from nemic.core.rollout import Trajectory, checkpointed_scan, rollout, simulate
from nemic.core.state import AbstractState
from nemic.core.steppers import (
    AB3,
    RK4,
    AbstractStepper,
    Filtered,
    ForwardEuler,
    SemiImplicitEuler,
    get_stepper,
)

__all__ = [
    "AB3", "RK4", "AbstractImplicitProcess", "AbstractProcess", "AbstractState", "AbstractStepper",
    "BlowUpError", "ConfigError", "DataError", "Filtered", "ForwardEuler", "FunctionProcess",
    "ImplicitExplicit", "NemicError", "SemiImplicitEuler", "Sum", "Trajectory", "checkpointed_scan",
    "get_stepper", "rollout", "simulate", "to_xarray", "write_json", "write_netcdf",
]

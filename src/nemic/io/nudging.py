"""Nudged runs as CF datasets: the nudged state beside its nudging tendencies."""

from __future__ import annotations

from typing import Any, Mapping

import xarray as xr

from nemic.core.state import AbstractState
from nemic.io.output import to_xarray
from nemic.processes.nudging import NudgedRun


def nudging_dataset(run: NudgedRun, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """A CF dataset with the nudged state and its nudging tendencies (``<field>_nudging_tendency``)."""
    ds = to_xarray(run.trajectory, attrs=attrs)
    tend = to_xarray(run.nudging_tendency)
    states = run.trajectory.states
    time_units = type(states).time_units if isinstance(states, AbstractState) else "1"
    for name in list(tend.data_vars):
        v = tend[name]
        units = ds[name].attrs.get("units", "1") if name in ds else "1"
        v.attrs = {"units": f"({units}) / ({time_units})" if units != "1" or time_units != "1" else "1",
                   "long_name": f"nudging tendency of {ds[name].attrs.get('long_name', name) if name in ds else name}"}
        ds[f"{name}_nudging_tendency"] = v
    return ds

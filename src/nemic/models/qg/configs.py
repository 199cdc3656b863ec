"""The two configurations of the ocean subgrid benchmark (Ross et al. 2023, JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258, section 2.1 and Table 1).

* ``eddy``: pyqg's defaults (rek = 5.787e-7 s^-1, delta = 0.25, beta = 1.5e-11 m^-1 s^-1), isotropic eddies.
* ``jet``: rek = 7e-8 s^-1, delta = 0.1, beta = 1e-11 m^-1 s^-1: weaker drag and stronger beta give zonal jets.

Both use L = 1000 km, rd = 15 km, H1 = 500 m, U1 = 0.025 m/s, U2 = 0, dt = 3600 s; high resolution nx = 256 and
low resolution nx = 64. The benchmark integrates 10 model years (360-day years) and samples after year 5.
"""

from __future__ import annotations

from nemic.core.errors import ConfigError
from nemic.models.qg.model import TwoLayerQG

DT = 3600.0  # s, the benchmark's timestep at both resolutions
HIGH_RES, LOW_RES = 256, 64

_COMMON = dict(L=1e6, rd=15000.0, H1=500.0, U1=0.025, U2=0.0, filterfac=23.6)
CONFIGS: dict[str, dict[str, float]] = {
    "eddy": dict(_COMMON, rek=5.787e-7, delta=0.25, beta=1.5e-11),
    "jet": dict(_COMMON, rek=7e-8, delta=0.1, beta=1e-11),
}


def get_config(name: str, nx: int = LOW_RES, **overrides) -> TwoLayerQG:
    """The benchmark model ``name`` ("eddy" or "jet") at resolution ``nx`` (``overrides`` replace parameters)."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown QG configuration {name!r}; choose one of {sorted(CONFIGS)}")
    return TwoLayerQG(nx=nx, **{**CONFIGS[name], **overrides})

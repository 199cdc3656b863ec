"""The diffusive energy balance model (North 1975; North, Cahalan & Coakley 1981) and its insolation.

See :mod:`nemic.models.ebm.model` for the equations and numerics, :mod:`nemic.models.ebm.insolation` for the
insolation (Legendre P2, exact annual mean, daily mean of a Kepler orbit after Berger 1978).
"""

from nemic.models.ebm.insolation import (
    PRESENT_ORBIT,
    annual_mean_insolation,
    daily_insolation,
    legendre_p2,
    p2_insolation,
    solar_longitude,
)
from nemic.models.ebm.moist import (
    MoistDiffusion,
    moist_ebm_process,
    moist_static_energy_temperature,
    saturation_specific_humidity,
)
from nemic.models.ebm.model import (
    SECONDS_PER_YEAR,
    DiffusiveEBM,
    EBMRadiation,
    EBMState,
    LatitudeGrid,
    MeridionalDiffusion,
    global_mean,
    heat_transport,
    ice_albedo,
    ice_edge_latitude,
    latitude_grid,
)

__all__ = [
    "PRESENT_ORBIT", "SECONDS_PER_YEAR", "DiffusiveEBM", "EBMRadiation", "EBMState", "LatitudeGrid", "MeridionalDiffusion",
    "annual_mean_insolation", "daily_insolation", "global_mean", "heat_transport", "ice_albedo",
    "ice_edge_latitude", "latitude_grid", "legendre_p2", "p2_insolation", "solar_longitude", "MoistDiffusion",
    "moist_ebm_process", "moist_static_energy_temperature", "saturation_specific_humidity",
]

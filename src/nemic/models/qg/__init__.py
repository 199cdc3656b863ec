"""Two-layer quasi-geostrophic model (pyqg's equations) and its diagnostics.

See :mod:`nemic.models.qg.model` for the equations and references, :mod:`nemic.models.qg.grid` for the grid, :mod:`nemic.models.qg.configs` for the
"eddy" and "jet" configurations of Ross et al. (2023), :mod:`nemic.models.qg.diagnostics` for energy, enstrophy,
spectra and the spectral energy budget.
"""

from nemic.models.qg.configs import CONFIGS, DT, get_config
from nemic.models.qg.grid import QGGrid
from nemic.models.qg.model import (
    SECONDS_PER_YEAR,
    AbstractQGClosure,
    QGFields,
    QGSpectralFilter,
    QGState,
    TwoLayerQG,
)

__all__ = ["CONFIGS", "DT", "AbstractQGClosure", "QGFields", "QGGrid", "QGSpectralFilter", "QGState",
           "SECONDS_PER_YEAR", "TwoLayerQG", "get_config"]

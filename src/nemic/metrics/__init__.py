"""Metrics: pure functions usable as losses and for evaluation; they import nothing above :mod:`nemic.core`.

Verification scores of precipitation fields and ensembles are importable from here, e.g.
``from nemic.metrics import fss``.
"""

from nemic.metrics.verification import (
    contingency_table,
    csi,
    ets,
    fss,
    isoperimetric_violation_rate,
    mae,
    minkowski_distance,
    rapsd,
    rapsd_error,
    wasserstein_wet,
)
from nemic.metrics.verification_ensemble import crps_ensemble, rank_histogram, spread_error
from nemic.metrics.verification_sal import sal, sal_objects

__all__ = ["contingency_table", "crps_ensemble", "csi", "ets", "fss", "isoperimetric_violation_rate", "mae",
           "minkowski_distance", "rank_histogram", "rapsd", "rapsd_error", "sal", "sal_objects", "spread_error",
           "wasserstein_wet"]

"""Minkowski measures (area, perimeter, Euler characteristic) of thresholded fields: exact, relaxed, learned.

* :mod:`~nemic.metrics.minkowski.exact`: exact counts (jittable, batched), the reference for everything else.
* :mod:`~nemic.metrics.minkowski.relaxed`: differentiable relaxation with a temperature (soft masks, t-norms).
* :mod:`~nemic.metrics.minkowski.surrogate`: the geometric constraints a learned surrogate must satisfy (the
  network is :mod:`nemic.nn.minkowski_surrogate`, its fitting :mod:`nemic.train.surrogate`).
* :mod:`~nemic.metrics.minkowski.loss`: :class:`MinkowskiLoss` combining them into a training loss.

Reference: Quarenghi, Cotsakis & Beucler (2026), "Emulating non-differentiable metrics via knowledge-guided
learning: introducing the Minkowski image loss", arXiv:2604.11422.
"""

from nemic.metrics.minkowski.exact import (
    MinkowskiMeasures,
    connected_components,
    euler_characteristic,
    excursion_masks,
    minkowski_functionals,
)
from nemic.metrics.minkowski.loss import MinkowskiLoss
from nemic.metrics.minkowski.surrogate import constraint_violations, polyomino_min_perimeter
from nemic.metrics.minkowski.relaxed import (
    annealing_schedule,
    relaxed_area,
    relaxed_euler_characteristic,
    relaxed_minkowski_functionals,
    relaxed_perimeter,
    soft_masks,
)

__all__ = [
    "MinkowskiLoss",
    "constraint_violations",
    "polyomino_min_perimeter",
    "annealing_schedule",
    "relaxed_area",
    "relaxed_euler_characteristic",
    "relaxed_minkowski_functionals",
    "relaxed_perimeter",
    "soft_masks",
    "MinkowskiMeasures",
    "connected_components",
    "euler_characteristic",
    "excursion_masks",
    "minkowski_functionals",
]

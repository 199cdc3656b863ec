"""nemic: neural Earth-system models of intermediate complexity.

Fast, differentiable models (Lorenz-96, energy balance, two-layer QG, ...) whose physical processes can be
replaced or corrected by neural networks and trained end to end through the solver.

Layers (imports only go downwards)::

    cli / experiments
    train            metrics
    processes        nn
    models           data
    core
"""

from nemic._version import __version__

__all__ = ["__version__"]

"""Model states: immutable pytrees whose fields are arrays with documented shape and units.

A state class lists, for each field, its dimension names and CF attributes in the class variable ``cf``;
:func:`nemic.io.output.to_xarray` uses them to write CF-annotated datasets.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx


class AbstractState(eqx.Module):
    """Base class of model states.

    Class variables:
        cf: ``{field: {"dims": (...), "units": ..., "long_name": ..., "standard_name": ...}}``; ``dims`` names the
            field's own axes (without time or ensemble axes).
        time_units: units of model time (``"1"`` for non-dimensional models, ``"s"`` for SI models).
    """

    cf: ClassVar[dict[str, dict]] = {}
    time_units: ClassVar[str] = "1"

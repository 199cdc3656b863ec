"""``NeuralTendency``: a neural network as a Process, the way learned physics reaches a model.

The network sees some fields of the state and returns tendencies for some fields; all other fields get a zero
tendency. The hybrid model is then simply ``physics + NeuralTendency(net, ...)``, trained end to end through the
solver as in NeuralGCM (Kochkov et al. 2024, Nature 632, 1060-1066, doi:10.1038/s41586-024-07744-y).

If the network's output is exactly zero (e.g. a zero-initialised last layer) the hybrid tendency equals the
physics tendency bit for bit, because adding an exact zero to a floating-point number changes nothing. Whole runs
are then identical wherever XLA compiles the physics arithmetic the same way in both programs (tested for RK4).
XLA's CPU backend may, however, fuse the physics into the stepper's update differently once a correction term is
present and contract a different set of multiply-adds into FMA instructions (it removes optimisation barriers,
so this cannot be forced); the runs then differ in the last bit (1e-15), which a chaotic model amplifies over
hundreds of steps. Disabling FMA (``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``) restores bit equality at a speed cost.
"""

from __future__ import annotations

from typing import Any

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError
from nemic.core.process import AbstractProcess, PyTree


class NeuralTendency(AbstractProcess):
    """Tendency ``net(*[state.f for f in inputs])`` written into the ``outputs`` fields of the state.

    Args:
        net: a callable Equinox module; it receives the input fields (unbatched, as stored in the state) and
            returns one array per output field (an array if there is one output, else a tuple).
        inputs: names of the state fields the network sees.
        outputs: names of the state fields it returns tendencies for (same shapes as those fields).
        scale: a multiplier of the network output (e.g. to taper a correction).
    """

    net: Any
    inputs: tuple[str, ...] = eqx.field(static=True)
    outputs: tuple[str, ...] = eqx.field(static=True)
    scale: jax.Array | float = 1.0

    def __init__(self, net: Any, inputs: tuple[str, ...] | str = ("x",),
                 outputs: tuple[str, ...] | str | None = None, scale: float | jax.Array = 1.0):
        self.net = net
        self.inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        outputs = self.inputs if outputs is None else outputs
        self.outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        self.scale = scale

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        names = {f.name for f in dataclasses.fields(state)}
        for n in self.inputs + self.outputs:
            if n not in names:
                raise ConfigError(f"NeuralTendency field {n!r} is not a field of {type(state).__name__} "
                                  f"(fields: {sorted(names)})")
        out = self.net(*(getattr(state, n) for n in self.inputs))
        out = (out,) if len(self.outputs) == 1 else tuple(out)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, state)
        for name, value in zip(self.outputs, out):
            ref = getattr(state, name)
            if value.shape != ref.shape:
                raise ConfigError(f"network output for {name!r} has shape {value.shape}, "
                                  f"the state field has {ref.shape}")
            zeros = eqx.tree_at(lambda s, n=name: getattr(s, n), zeros, self.scale * value)
        return zeros

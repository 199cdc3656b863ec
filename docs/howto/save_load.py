# %% [markdown]
# # How to save and load models
#
# nemic has one weights format (`nemic.train.checkpoint.save_module` / `load_module`): one `.eqx` file holding a
# JSON header line (the module's registered kind, the hyperparameters that rebuild it, leaf shapes and dtypes, a
# checksum, free metadata) followed by `equinox.tree_serialise_leaves`. No pickle: a file outlives JAX upgrades, and a file of another kind, a truncated file or mismatched
# shapes are refused with one line naming the file.

# %%
import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from nemic.nn.mlp import LocalStencilMLP
from nemic.nn.registry import registered_kinds
from nemic.processes.neural import NeuralTendency
from nemic.train.checkpoint import load_module, read_header, save_module

print("module kinds that can be saved:", ", ".join(sorted(registered_kinds())))

# %%
net = LocalStencilMLP(halfwidth=2, width=16, depth=2, key=jax.random.key(0), in_mean=2.0, in_std=5.0)
folder = Path(tempfile.mkdtemp())
path = save_module(folder / "closure", net, extra={"trained_on": "two-scale Lorenz-96, c = 10"})
print("written:", sorted(p.name for p in folder.iterdir()))
header = read_header(path)
print(json.dumps({k: v for k, v in header.items() if k != "leaves"}, indent=2))
print("leaves:", [name for name, shape, dtype in header["leaves"]])

loaded = load_module(path, kind="LocalStencilMLP")
x = jax.random.normal(jax.random.key(1), (8,))
assert jnp.array_equal(loaded(x), net(x))            # bit for bit
hybrid_term = NeuralTendency(loaded, "x")             # ready to add to a model

# %% [markdown]
# A class of your own becomes saveable by registering it where it is defined, with a `config()` method that
# returns the JSON hyperparameters its constructor takes (see `nemic.nn.registry`):
#
# ```python
# from nemic.nn.registry import register_module
#
# @register_module("MyNet")
# class MyNet(eqx.Module):
#     def __init__(self, width: int, *, key): ...
#     def config(self) -> dict: return {"width": self.width}
# ```
#
# Training checkpoints (model, optimiser state, EMA, history and key in one file, for resuming) are written by
# the training loop itself (`fit(..., checkpoint=path)`), and a run's results directory records its command and
# settings in `run.json`.

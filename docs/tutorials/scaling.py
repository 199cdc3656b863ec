# %% [markdown]
# # Scaling out: meshes, sharded ensembles, zarr stores and streamed training
#
# Everything so far ran on one device and kept its data in memory. This page shows the four tools of
# [scaling out](../scaling.md), in small, on the machine that built this site:
#
# 1. a **device mesh** with the named axes `ensemble`, `batch` and `space`, on one device, and what changes with 8;
# 2. an **ensemble rollout sharded** over the mesh's `ensemble` axis, equal to the plain one;
# 3. a **chunked zarr ensemble**, written chunk by chunk as it is generated (a killed run resumes) and read lazily;
# 4. **streamed training**: `fit` drawing windows from the store, so the data never has to fit in memory.
#
# The model is one-scale Lorenz-96 with \(K = 40\) variables,
# \(\dot X_k = (X_{k+1} - X_{k-2}) X_{k-1} - X_k + F\), small enough that every step takes seconds.

# %%
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, ensemble_rollout, rollout
from nemic.data.streaming import StreamingWindowSampler
from nemic.data.zarr_store import done_chunks, generate_ensemble, open_zarr
from nemic.errors import ConfigError
from nemic.models.lorenz96 import Lorenz96, Lorenz96State
from nemic.parallel import gather, make_mesh, sharded_ensemble_rollout
from nemic.train.loop import fit

# %% [markdown]
# ## 1. A mesh
#
# `make_mesh()` puts all devices on the `ensemble` axis; the other two axes have size 1. An axis of size 1 costs
# nothing, so code written for a mesh runs unchanged on one device, which is what this page has:

# %%
print("devices:", jax.devices())
mesh = make_mesh()
print("mesh axes and sizes:", dict(mesh.shape))
try:
    make_mesh(ensemble=2, batch=2)
except ConfigError as e:
    print("ConfigError:", e)

# %% [markdown]
# With 8 devices the same call gives an 8-way `ensemble` axis, and `make_mesh(ensemble=4, space=2)` splits the
# members over 4 devices and one grid dimension over 2. To see it without 8 accelerators, XLA can pretend that
# the CPU is 8 devices (`--xla_force_host_platform_device_count=8`, set before JAX starts), so the next cell runs
# a short script in a fresh process: the members of a 16-member ensemble are split 2 per device, and the result
# equals the unsharded rollout.

# %%
script = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import json, jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    from nemic.core import RK4, ensemble_rollout
    from nemic.models.lorenz96 import Lorenz96, Lorenz96State
    from nemic.parallel import make_mesh, sharded_ensemble_rollout, gather
    model = Lorenz96(F=8.0, K=40)
    x0 = Lorenz96State(x=8.0 + jax.random.normal(jax.random.key(0), (16, 40)))
    mesh = make_mesh()
    ens = sharded_ensemble_rollout(model, RK4(), x0, mesh=mesh, dt=0.01, n_steps=200, save_every=50)
    ref = ensemble_rollout(model, RK4(), x0, dt=0.01, n_steps=200, save_every=50)
    shards = ens.states.x.addressable_shards
    print(json.dumps({"devices": len(jax.devices()), "mesh": dict(mesh.shape),
                      "spec": str(ens.states.x.sharding.spec), "shard_shape": list(shards[0].data.shape),
                      "n_shards": len(shards),
                      "max_diff": float(np.abs(gather(ens).states.x - np.asarray(ref.states.x)).max())}))
    mesh2 = make_mesh(ensemble=4, space=2)
    print(json.dumps({"mesh": dict(mesh2.shape)}))
""")
env = dict(os.environ, JAX_PLATFORMS="cpu")
out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True).stdout
for line in out.splitlines():
    print(json.loads(line))
eight = json.loads(out.splitlines()[0])
assert eight["devices"] == 8 and eight["shard_shape"][0] == 2 and eight["max_diff"] < 1e-12

# %% [markdown]
# Each of the 8 shards holds 2 members (all saves, all 40 variables): the members are independent, so XLA runs
# each device's members with no communication, and the result is the plain `ensemble_rollout`'s to rounding.
#
# ## 2. A sharded ensemble rollout
#
# Here the same call on this page's single device. `sharded_ensemble_rollout` is `nemic.core.ensemble_rollout`
# under `jit` with the initial states split over the `ensemble` axis; `gather` brings the result back as NumPy
# arrays (in every process, when there are several).

# %%
model = Lorenz96(F=8.0, K=40)
n_members = 32
x0 = Lorenz96State(x=8.0 + 0.01 * jax.random.normal(jax.random.key(1), (n_members, 40)))
ens = sharded_ensemble_rollout(model, RK4(), x0, mesh=mesh, dt=0.01, n_steps=500, save_every=10)
print("sharding:", ens.states.x.sharding)
host = gather(ens)
ref = ensemble_rollout(model, RK4(), x0, dt=0.01, n_steps=500, save_every=10)
diff = np.abs(host.states.x - np.asarray(ref.states.x)).max()
print("states:", host.states.x.shape, "(member, save, k);  largest difference from ensemble_rollout:", diff)
assert diff < 1e-12

spread = host.states.x.std(axis=0).mean(axis=-1)
fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(np.asarray(host.t), spread)
ax.set(xlabel="time (model time units)", ylabel="ensemble spread of X", title="32 members from perturbed starts")
ax.grid(alpha=0.3)

# %% [markdown]
# Perturbations of \(10^{-2}\) grow exponentially (the straight part of the curve; its slope is the leading
# Lyapunov exponent) until the spread saturates at the climate's variability.
#
# ## 3. A chunked zarr ensemble
#
# `generate_ensemble` runs `chunk_members` members at a time (one compiled call reused for every chunk) and
# writes each chunk into its region of a zarr store as soon as it is done; a record of the finished chunks
# makes a rerun resume. The store has dimensions `(member, time, k)`, chunks `(chunk_members, time_chunk, 40)`
# and the CF attributes of `nemic.io.to_xarray`.

# %%
work = Path(tempfile.mkdtemp(prefix="nemic-scaling-"))
x0 = Lorenz96State(x=8.0 + jax.random.normal(jax.random.key(2), (64, 40)))
store = generate_ensemble(work / "l96.zarr", model, RK4(), x0, dt=0.01, n_steps=2000, save_every=5,
                          chunk_members=16, time_chunk=100, attrs=model.to_attrs())
print("finished chunks:", done_chunks(store))
ds = open_zarr(store)          # lazy: Dask arrays, one Dask chunk per zarr chunk
print(ds)
print("Dask chunks of x:", ds.x.data.chunksize, "; bytes on disk if loaded:", ds.x.nbytes)

# %% [markdown]
# Opening reads only the metadata. A computation reads the chunks it needs: the climatological mean and
# variance of \(X\) below are reduced chunk by chunk by Dask. A second call with the same settings finds every
# chunk recorded and computes nothing; a call with other settings (here another forcing) is refused, not mixed.

# %%
clim = ds.x.isel(time=slice(100, None))           # drop the first 500 steps (spin-up)
mean, var = float(clim.mean().compute()), float(clim.var().compute())
print(f"climate of Lorenz-96 at F = 8: mean {mean:.2f}, variance {var:.1f}")
generate_ensemble(store, model, RK4(), x0, dt=0.01, n_steps=2000, save_every=5, chunk_members=16,
                  time_chunk=100, attrs=model.to_attrs())
try:
    generate_ensemble(store, Lorenz96(F=10.0, K=40), RK4(), x0, dt=0.01, n_steps=2000, save_every=5,
                      chunk_members=16, time_chunk=100)
except Exception as e:
    print(type(e).__name__ + ":", e)

# %% [markdown]
# (Lorenz 1996 and Lorenz & Emanuel 1998 give a mean of about 2.3 and a variance of about 13 for \(F = 8\).)
#
# ## 4. Streamed training
#
# `StreamingWindowSampler` draws each batch of windows (a random member, a random start, `n_saves + 1` saves)
# from the store through Dask, in a background thread that reads ahead while the device computes. It is a host
# sampler (`on_host = True`), so the one training loop, `fit`, calls it outside `jit`. Here it learns the
# forcing \(F\) of a Lorenz-96 model started at \(F = 6\) from windows of the store (made with \(F = 8\)): the
# loss is the error of 2 saves (10 RK4 steps) from each window's start.

# %%
N_SAVES, SAVE_EVERY, DT = 2, 5, 0.01


def loss(m, batch, key):
    def one(x_start, target):
        traj = rollout(m, RK4(), Lorenz96State(x=x_start), dt=DT, n_steps=N_SAVES * SAVE_EVERY,
                       save_every=SAVE_EVERY)
        return jnp.mean((traj.states.x[1:] - target) ** 2)
    return jnp.mean(jax.vmap(one)(batch["start"]["x"], batch["target"]["x"]))


with StreamingWindowSampler(store, N_SAVES, batch_size=16, seed=0, prefetch=2) as sampler:
    res = fit(Lorenz96(F=6.0, K=40), loss, sampler, optimizer=optax.adam(0.1), n_iters=60,
              key=jax.random.key(3), progress=False)
print(f"learned F = {float(res.model.F):.4f} (truth 8); loss {res.history[0]:.3g} -> {res.history[-1]:.3g}")
assert abs(float(res.model.F) - 8.0) < 0.1

fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(res.history)
ax.set(xlabel="iteration", ylabel="loss (MSE of 2 saves)", title="fit on windows streamed from zarr")
ax.grid(alpha=0.3)

# %% [markdown]
# The same script runs on a cluster: `nemic.parallel.initialize()` (before any computation) joins the processes
# of a Slurm or MPI job, `make_mesh()` then spans every device of every process, `generate_ensemble(...,
# mesh=mesh)` shards each chunk over them with process 0 writing, and `fit(..., mesh=make_mesh(ensemble=1,
# batch=-1))` splits each batch over the devices. See [scaling out](../scaling.md) and
# [running on a cluster](../howto/cluster.md).

# %% [markdown]
# # How to bring your own data
#
# nemic's numerical code works on state pytrees (arrays); files are read and written with xarray in CF
# conventions. Your data enters at three places: as a **reference** a model is nudged toward or trained to
# follow, as **input/target pairs** for offline training, and as **fields** to score (radar or model rain).
# Data are checked at the door: a NaN, a wrong shape or a missing variable is a one-line `DataError` naming
# what is wrong, never a failure deep inside a compiled rollout.

# %%
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, DataError, simulate
from nemic.io import to_xarray, write_netcdf
from nemic.models.lorenz96 import Lorenz96, Lorenz96State
from nemic.processes.nudging import Nudging, nudged_run

# %% [markdown]
# ## A time series as a reference
#
# Say your observations of the eight Lorenz-96 variables sit in a netCDF file with dimensions (time, k). Read
# them with xarray, wrap the array in the model's state class (its leading axis is time), and pass the times
# along: here the reference nudges a run.

# %%
folder = Path(tempfile.mkdtemp())
obs = simulate(Lorenz96(F=8.0), RK4(), Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0))), dt=0.01, n_steps=500,
               save_every=5)
write_netcdf(to_xarray(obs), folder / "observations.nc")     # stands in for your file

ds = xr.open_dataset(folder / "observations.nc")
print(ds)
reference = Lorenz96State(x=jnp.asarray(ds["x"].values))      # (time, k)
nudging = Nudging(reference, tau=0.1, times=jnp.asarray(ds["time"].values))
run = nudged_run(Lorenz96(F=8.5), nudging, RK4(), Lorenz96State(x=reference.x[0]), dt=0.01, n_steps=500,
                 save_every=5)
print(f"nudged run: RMSE to the observations {float(jnp.sqrt(jnp.mean((run.trajectory.states.x - reference.x) ** 2))):.3f}")

# %% [markdown]
# The same state pytree is what `nemic.train.online.fit_online(reference=...)` and
# `nemic.train.windows.WindowSampler` take; offline training (`nemic.train.offline.fit_offline`) takes plain input
# and target arrays. The CF attributes of each model's fields (`State.cf`) say which dimensions and units nemic
# expects.

# %%
print(Lorenz96State.cf)

# %% [markdown]
# ## Bad data is refused at the door

# %%
bad = np.asarray(ds["x"].values).copy()
bad[10, 3] = np.nan
try:
    Nudging(Lorenz96State(x=jnp.asarray(bad)), tau=0.1, times=jnp.asarray(ds["time"].values))
except DataError as e:
    print("DataError:", e)

# %% [markdown]
# ## Radar rain
#
# `nemic.data.opera.open_opera(path)` reads OPERA ODIM-HDF5 composites and netCDF files holding `rain_rate`
# (time, y, x) in mm/h; `extract_patches` cuts NaN-free patches with a wet-pixel criterion and
# `wet_quantile_thresholds` gives thresholds for the Minkowski measures. A small sample ships with nemic
# (`load_sample()`); see [Metrics as losses](../tutorials/metrics_losses.md).

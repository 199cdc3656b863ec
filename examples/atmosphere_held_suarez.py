"""A short Held-Suarez run of the global atmosphere (T21, 8 sigma levels) and its zonal-mean climate.

    .venv/bin/python examples/atmosphere_held_suarez.py --days 200 --out /tmp/hs

Spins up dinosaur's primitive equations under Held & Suarez (1994) forcing from an isothermal atmosphere at rest
with a small surface-pressure bump, saves daily nodal SI fields, writes a CF netCDF file and a PNG of the
zonal-mean zonal wind and temperature averaged over the second half of the run (the spun-up part). After about
200 days the jets (~30 m/s near sigma = 0.2-0.3 at about 45 deg) and the meridional temperature gradient of the
Held-Suarez climate are visible; the paper's statistics use 1000-day averages.
"""

import argparse
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from nemic.core import simulate
from nemic.io.output import save_figure, to_xarray, write_netcdf
from nemic.io.terminal import progress
from nemic.models.atmosphere import HeldSuarez, PrimitiveEquations


def main():
    ap = argparse.ArgumentParser(description="Held-Suarez run of the nemic atmosphere")
    ap.add_argument("--days", type=int, default=200)
    ap.add_argument("--out", default="held_suarez_out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = PrimitiveEquations()  # T21 L8, dt = 20 min, IMEX-SIL3 + filters
    state = model.initial_state(jax.random.key(0), perturbation=5e3)
    per_day = round(86400 / model.dt)
    t0 = time.perf_counter()
    with progress("Held-Suarez") as bar:
        traj = simulate(model + HeldSuarez(model.grid), None, state, dt=model.dt, n_steps=args.days * per_day,
                        save_every=per_day, observe=model.observe, progress=bar)
    print(f"{args.days} days in {time.perf_counter() - t0:.0f} s")
    ds = to_xarray(traj, coords=model.coords(), attrs=model.to_attrs())
    write_netcdf(ds, out / "held_suarez.nc")

    spun = ds.isel(time=slice(len(ds.time) // 2, None)).mean(["time", "lon"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, name, cmap in ((axes[0], "eastward_wind", "RdBu_r"), (axes[1], "air_temperature", "inferno")):
        da = spun[name]
        if name == "eastward_wind":
            lim = float(np.abs(da).max())
            cs = ax.contourf(ds.lat, ds.level, da, levels=np.linspace(-lim, lim, 17), cmap=cmap)
        else:
            cs = ax.contourf(ds.lat, ds.level, da, levels=16, cmap=cmap)
        fig.colorbar(cs, ax=ax, label=f"{name} [{ds[name].attrs['units']}]")
        ax.set_xlabel("latitude [deg]")
        ax.set_title(f"zonal mean {name.replace('_', ' ')}")
    axes[0].set_ylabel("sigma")
    axes[0].invert_yaxis()
    save_figure(fig, out / "held_suarez_zonal_mean.png")
    u = spun["eastward_wind"]
    print(f"max zonal-mean zonal wind {float(u.max()):.1f} m/s; wrote {out}/held_suarez.nc and the PNG")


if __name__ == "__main__":
    main()

"""A reference climate from SPEEDY's physics on dinosaur's core (jcm), the truth of the global hybrid atmosphere.

jcm (SPEEDY physics in JAX on dinosaur's spectral primitive equations; Molteni 2003, Clim. Dyn. 20, 175-191,
doi:10.1007/s00382-002-0268-2; Kucharski et al. 2013, Adv. Atmos. Sci. 30, 1541) is run as an **aquaplanet**
built entirely in memory, so nothing is read from the network or from data files at run time:

* ``jcm.model.Model(coords=get_speedy_coords(...))``: the default SPEEDY physics package (convection,
  large-scale condensation, clouds, short- and long-wave radiation, surface fluxes, vertical diffusion), flat
  all-ocean terrain (``TerrainData.aquaplanet``), the dinosaur backend and SPEEDY's 8 sigma levels;
* ``jcm.forcing.default_forcing(grid)``: the zonally symmetric "control" sea-surface temperatures of the
  aquaplanet experiment protocol (Neale & Hoskins 2000, Atmos. Sci. Lett. 1, 101-107,
  doi:10.1006/asle.2000.0022: 27 cos^2(3 lat / 2) degC + 273.15 K equatorward of 60 degrees, 273.15 K poleward),
  analytic ozone (no ozone file), present-day CO2, and a seasonal cycle of insolation from the model date.

(jcm's *command line* default composes a forcing with ``ozone_file: auto`` and its ``speedy-t31`` recipe reads
``hf://`` bundles; neither path is used here.)

The run starts from jcm's isothermal rest state, is spun up (discarded), and then saved every ``save_hours``. For
every saved state the **physics tendencies alone** (dT/dt, dq/dt, du/dt, dv/dt of the whole SPEEDY package,
without the dynamics) and the physics diagnostics (precipitation, evaporation, top-of-atmosphere insolation) are
computed by jcm's ``PrescribedStateModel`` (the physics' ``compute_tendencies`` on each saved state, vmapped over
times). Fields are returned in nemic's layout ``(time, level, lat, lon)``, latitude ascending, SI units.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import numpy as np

from nemic.core.errors import ConfigError

__all__ = ["TruthChunk", "jcm_truth", "JCM_P0"]

#: jcm's reference pressure [Pa]: ``normalized_surface_pressure`` is p_s / JCM_P0
JCM_P0 = 1.0e5
#: g m-2 s-1 -> kg m-2 s-1 (SPEEDY's precipitation and evaporation are in g m-2 s-1)
G_TO_KG = 1.0e-3


@dataclasses.dataclass
class TruthChunk:
    """One stretch of saved truth, numpy arrays in nemic's layout.

    Attributes:
        time_days: (time,) days since the start of the run (2000-01-01, jcm's default start).
        fields: name -> array; (time, level, lat, lon) for T, u, v, q and their physics tendencies, (time, lat,
            lon) for ps, precipitation, evaporation, insolation.
        seconds_per_step: wall seconds per model step of this chunk (compile excluded after the first chunk).
    """

    time_days: np.ndarray
    fields: dict[str, np.ndarray]
    seconds_per_step: float


def _to_nemic(x: Any) -> np.ndarray:
    """jcm (..., lon, lat) -> nemic (..., lat, lon), float32."""
    return np.swapaxes(np.asarray(x), -1, -2).astype(np.float32)


def _build(truncation: int, layers: int, vertical: str = "speedy", sst_offset: float = 0.0):
    from jcm.forcing import default_forcing
    from jcm.model import Model
    from jcm.physics.speedy.speedy_coords import get_speedy_coords
    from jcm.prescribed_state_model import PrescribedStateModel
    from jcm.utils import get_coords

    if vertical == "speedy":
        coords = get_speedy_coords(layers=layers, spectral_truncation=truncation)
    elif vertical == "equidistant":
        coords = get_coords(np.linspace(0.0, 1.0, layers + 1), spectral_truncation=truncation)
    else:
        raise ConfigError(f"vertical must be 'speedy' or 'equidistant', got {vertical!r}")
    model = Model(coords=coords)
    forcing = default_forcing(coords.horizontal)
    if sst_offset:
        forcing = forcing.copy(sea_surface_temperature=forcing.sea_surface_temperature + sst_offset)
    dt = float(model.dt_seconds) if hasattr(model, "dt_seconds") else 1800.0
    diag = PrescribedStateModel(model.physics, coords, terrain=model.terrain if hasattr(model, "terrain") else None,
                                dt_seconds=dt)
    return coords, model, forcing, _physics_fn(diag, forcing), dt


def _physics_fn(diag, forcing):
    """A jitted ``(states, days, seconds) -> (tendencies, diagnostics)``: the physics of ``diag``
    (a jcm ``PrescribedStateModel``) on every state, exactly as its ``run`` evaluates them, compiled once."""
    import jax
    import jax.numpy as jnp
    import jax_datetime as jdt
    from jcm.date import SECONDS_PER_DAY, DateData
    from jcm.physics_interface import verify_state

    physics, terrain, start, dt = diag.physics, diag.terrain, diag.start_time, diag.dt_seconds

    def step(state, day, second):
        date = DateData.set_date(model_time=start + jdt.Timedelta(days=day, seconds=second),
                                 model_step=jnp.int32((day.astype(jnp.float32) * SECONDS_PER_DAY + second) / dt),
                                 dt_seconds=dt)
        return physics.compute_tendencies(verify_state(state), forcing.select(date), terrain)

    return jax.jit(jax.vmap(step))


def _diagnose(fn, states, times_days) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    sec = np.rint(np.asarray(times_days, dtype=np.float64) * 86400.0).astype(np.int64)
    days, secs = np.divmod(sec, 86400)
    tend, data = fn(states, jnp.asarray(days, dtype=jnp.int32), jnp.asarray(secs, dtype=jnp.int32))
    precip = (np.asarray(data["_convection"].precnv) + np.asarray(data["_condensation"].precls)) * G_TO_KG
    return {
        "dTdt_phys": _to_nemic(tend.temperature),
        "dqdt_phys": _to_nemic(tend.specific_humidity),
        "dudt_phys": _to_nemic(tend.u_wind),
        "dvdt_phys": _to_nemic(tend.v_wind),
        "precipitation": _to_nemic(precip),
        "evaporation": _to_nemic(np.asarray(data["_surface_flux"].evap) * G_TO_KG),
        "insolation": _to_nemic(data["_shortwave_rad"].fsol),
    }


def jcm_truth(truncation: int = 21, layers: int = 8, *, vertical: str = "speedy", spinup_days: float = 30.0, days: float = 60.0,
              save_hours: float = 6.0, chunk_days: float = 5.0, sst_offset: float = 0.0,
              progress: Callable[[float, float], None] | None = None) -> tuple[dict[str, Any], Iterator[TruthChunk]]:
    """Run the jcm SPEEDY aquaplanet and yield the kept period in chunks.

    Args:
        truncation, layers: jcm's resolution (T<truncation>, ``layers`` sigma levels).
        vertical: ``"speedy"`` (SPEEDY's own level table for 7 or 8 layers, on which its physics is tuned) or
            ``"equidistant"`` (dinosaur's equidistant sigma levels, the hybrid's default grid; SPEEDY is not tuned
            for them: jcm reports a TOA flux about 15 W m-2 lower at T31L8).
        spinup_days: days integrated and discarded first. days: days kept after the spin-up.
        save_hours: interval between saved states [h]; must divide 24 h into whole model steps.
        chunk_days: days integrated per compiled call (every chunk reuses one compiled function).
        sst_offset: added to the control SSTs everywhere [K] (e.g. 4.0: the aquaplanet "+4 K" climate of the
            CFMIP protocol, a climate the hybrid was not trained on).
        progress: ``progress(done_days, total_days)`` after the spin-up and each chunk.

    Returns:
        ``(info, chunks)``: ``info`` holds the grid (``sigma``, ``sigma_boundaries``, ``lat``, ``lon``), ``dt``
        [s] and the setup; ``chunks`` is a generator of :class:`TruthChunk` (the integration runs as it is
        consumed).
    """
    if not np.isfinite(sst_offset):
        raise ConfigError(f"sst_offset must be a finite number of kelvin, got {sst_offset!r}")
    if spinup_days < 0 or days <= 0 or save_hours <= 0 or chunk_days <= 0:
        raise ConfigError(f"need spinup_days >= 0, days > 0, save_hours > 0, chunk_days > 0; got {spinup_days}, "
                          f"{days}, {save_hours}, {chunk_days}")
    save_days = save_hours / 24.0
    n_chunks = int(round(days / chunk_days))
    if abs(n_chunks * chunk_days - days) > 1e-9:
        raise ConfigError(f"days ({days}) must be a whole number of chunk_days ({chunk_days})")
    per_chunk = chunk_days / save_days
    if abs(per_chunk - round(per_chunk)) > 1e-9:
        raise ConfigError(f"chunk_days ({chunk_days}) must be a whole number of save intervals ({save_hours} h)")
    coords, model, forcing, diag, dt = _build(truncation, layers, vertical, sst_offset)
    steps_per_save = save_hours * 3600.0 / dt
    if abs(steps_per_save - round(steps_per_save)) > 1e-9:
        raise ConfigError(f"save_hours ({save_hours}) must be a whole number of model steps ({dt:g} s)")
    vertical = coords.vertical
    lon, sin_lat = coords.horizontal.nodal_axes
    info = {
        "sigma": np.asarray(vertical.centers, dtype=float),
        "sigma_boundaries": np.asarray(vertical.boundaries, dtype=float),
        "lat": np.rad2deg(np.arcsin(np.asarray(sin_lat, dtype=float))),
        "lon": np.rad2deg(np.asarray(lon, dtype=float)),
        "dt": dt, "truncation": truncation, "layers": layers, "model": repr(model), "sst_offset": float(sst_offset),
        "sst": _to_nemic(forcing.sea_surface_temperature),
    }

    def chunks() -> Iterator[TruthChunk]:
        import jax

        total = spinup_days + days
        if spinup_days > 0:
            model.run(forcing=forcing, save_interval=spinup_days, total_time=spinup_days)
        else:
            model.bootstrap_state()
        if progress:
            progress(spinup_days, total)
        t_now = spinup_days
        for i in range(n_chunks):
            t0 = time.perf_counter()
            pred = model.resume(forcing=forcing, save_interval=save_days, total_time=chunk_days)
            d = jax.block_until_ready(pred.dynamics)
            n_steps = chunk_days * 86400.0 / dt
            wall = (time.perf_counter() - t0) / n_steps
            times = t_now + save_days * np.arange(1, int(round(per_chunk)) + 1)
            fields = {
                "T": _to_nemic(d.temperature), "u": _to_nemic(d.u_wind), "v": _to_nemic(d.v_wind),
                "q": _to_nemic(d.specific_humidity),
                "ps": _to_nemic(np.asarray(d.normalized_surface_pressure) * JCM_P0),
            }
            fields.update(_diagnose(diag, d, times))
            t_now += chunk_days
            if progress:
                progress(t_now, total)
            yield TruthChunk(times, fields, wall)

    return info, chunks()

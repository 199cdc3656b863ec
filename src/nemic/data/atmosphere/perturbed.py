"""SPEEDY's physics on perturbed truth states: training columns off the truth's attractor.

A column network fitted only to the states SPEEDY visits learns what its physics does *on* that attractor, but not
how it pulls a column back when the column leaves it: radiation cools a warmed column, surface fluxes warm a
boundary layer colder than the sea, convection removes an unstable lapse rate, surface drag slows a too-fast wind.
In a free run of the hybrid nothing else restores the column, so small biases of the learned heating accumulate
into a drift of the vertical structure (the long-run section of ``docs/atmosphere.md`` shows one).

This module makes the missing training data with the truth's own physics: every saved state of a truth store gets
``copies`` perturbed versions, each column independently (SPEEDY's physics acts column by column), and jcm's SPEEDY
package (the same ``compute_tendencies`` the truth used) gives the physics tendencies, precipitation and
evaporation of each perturbed state. The perturbation of one column, with an amplitude fraction ``s ~ U(0, 1)``
drawn per column so that the set spans states from the attractor to far from it:

* temperature: ``dT_k = s A_T (sum_{m=0}^{2} c_m cos(m pi sigma_k) / sqrt(3) + 0.3 e_k)``, ``c_m, e_k ~ N(0, 1)``
  (a smooth profile: warm/cold columns, changed lapse rates, plus level noise);
* humidity: ``q_k <- q_k exp(s A_q p_k)`` with ``p_k`` another smooth profile of the same form (relative change);
* winds: ``u_k <- u_k + s A_u p_k``, ``v_k`` likewise (independent profiles);
* surface pressure, date and insolation unchanged.

The geopotential SPEEDY's physics reads is recomputed hydrostatically from the perturbed temperature and humidity
with dinosaur's ``get_geopotential_on_sigma`` (SI constants; on unperturbed states it matches jcm's own to 5e-7
relative in float32, see the tests).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError
from nemic.data.atmosphere.dataset import days_since_2000
from nemic.data.atmosphere.truth import JCM_P0, _build, _diagnose

__all__ = ["PerturbationConfig", "perturb_columns", "physics_on_states", "perturbed_physics"]

#: SI constants of the hydrostatic geopotential (SPEEDY's values)
GRAVITY, R_DRY, R_VAPOR = 9.81, 287.04, 461.5


@dataclasses.dataclass(frozen=True)
class PerturbationConfig:
    """Amplitudes of the column perturbations (at amplitude fraction ``s = 1``) and their number.

    Attributes:
        copies: perturbed versions of every saved state.
        t_amplitude: K. q_amplitude: of log(q) (0.2: a factor e^0.2 = 1.22 at one standard deviation).
        wind_amplitude: m/s. seed: of the numpy generator.
    """

    copies: int = 1
    t_amplitude: float = 4.0
    q_amplitude: float = 0.2
    wind_amplitude: float = 4.0
    seed: int = 0

    def __post_init__(self):
        if self.copies < 1:
            raise ConfigError(f"copies must be >= 1, got {self.copies}")
        for k in ("t_amplitude", "q_amplitude", "wind_amplitude"):
            v = getattr(self, k)
            if not (np.isfinite(v) and v >= 0):
                raise ConfigError(f"{k} must be a finite number >= 0, got {v!r}")


def _profiles(rng: np.random.Generator, shape: tuple[int, ...], sigma: np.ndarray, white: float) -> np.ndarray:
    """Random smooth vertical profiles (shape + (L,)): three cosine modes in sigma plus ``white`` level noise."""
    modes = np.cos(np.pi * np.arange(3)[:, None] * np.asarray(sigma)[None, :])  # (3, L)
    c = rng.standard_normal(shape + (3,)) / np.sqrt(3.0)
    return c @ modes + white * rng.standard_normal(shape + (len(sigma),))


def perturb_columns(fields: dict[str, np.ndarray], sigma: np.ndarray, cfg: PerturbationConfig,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Perturbed copies of T, q, u, v (time, level, lat, lon), each column independently (module docs).

    Returns a dict with the perturbed ``T``, ``q``, ``u``, ``v`` (float32) and the amplitude fraction ``s``
    (time, lat, lon) of each column.
    """
    T = np.asarray(fields["T"])
    nt, L, nlat, nlon = T.shape
    shape = (nt, nlat, nlon)
    s = rng.uniform(0.0, 1.0, shape)

    def prof(amp, white):  # (time, lat, lon, L) -> (time, L, lat, lon)
        return np.moveaxis(amp * s[..., None] * _profiles(rng, shape, sigma, white), -1, 1)

    out = {
        "T": T + prof(cfg.t_amplitude, 0.3),
        "q": np.asarray(fields["q"]) * np.exp(prof(cfg.q_amplitude, 0.3)),
        "u": np.asarray(fields["u"]) + prof(cfg.wind_amplitude, 0.3),
        "v": np.asarray(fields["v"]) + prof(cfg.wind_amplitude, 0.3),
    }
    out = {k: v.astype(np.float32) for k, v in out.items()}
    out["s"] = s.astype(np.float32)
    return out


def physics_on_states(vertical: str = "equidistant", truncation: int = 21, layers: int = 8,
                      sst_offset: float = 0.0) -> Callable[..., dict[str, np.ndarray]]:
    """A function ``(T, q, u, v, ps, time_days) -> fields`` that evaluates jcm's SPEEDY physics on given states.

    States in nemic's layout (time, level, lat, lon) / (time, lat, lon), SI units; returns the physics tendencies
    and diagnostics named as in a truth store (``dTdt_phys`` ... ``precipitation``, ``evaporation``,
    ``insolation``). The geopotential is computed hydrostatically (module docs).
    """
    # dinosaur and jcm are optional extras (the atmosphere's): imported where they are needed, as in .truth
    from dinosaur.primitive_equations import get_geopotential_on_sigma
    from jcm.physics_interface import PhysicsState

    coords, _model, _forcing, diag, _dt = _build(truncation, layers, vertical, sst_offset)

    @jax.jit
    def states(T, q, u, v, ps):
        def one(t, qq):
            return get_geopotential_on_sigma(temperature=t, specific_humidity=qq,
                                             nodal_orography=jnp.zeros(t.shape[1:], t.dtype), sigma=coords.vertical,
                                             gravity_acceleration=GRAVITY, ideal_gas_constant=R_DRY,
                                             water_vapor_gas_constant=R_VAPOR)

        phi = jax.vmap(one)(T, q)
        return PhysicsState(u, v, T, q, phi, ps / JCM_P0, {})

    def to_jcm(a):
        return jnp.asarray(np.swapaxes(np.asarray(a, np.float32), -1, -2))

    def fn(T, q, u, v, ps, time_days) -> dict[str, np.ndarray]:
        st = states(*(to_jcm(a) for a in (T, q, u, v, ps)))
        return _diagnose(diag, st, days_since_2000(time_days))

    return fn


def perturbed_physics(train, cfg: PerturbationConfig, *, vertical: str = "equidistant", sst_offset: float = 0.0,
                      chunk: int = 40, physics: Callable[..., dict[str, np.ndarray]] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Yield ``(time_days, fields)`` chunks of perturbed states of the truth dataset ``train`` with SPEEDY's physics.

    ``fields`` has every variable of a truth store (``T, q, u, v, ps`` perturbed as in the module docs; tendencies,
    precipitation, evaporation, insolation from jcm on those states) plus ``amplitude`` (the fraction ``s``).
    ``physics`` defaults to :func:`physics_on_states` on the grid of ``train``.
    """
    sigma = np.asarray(train["level"].values, dtype=float)
    truncation = int(train.attrs.get("truncation", 21))
    if physics is None:
        physics = physics_on_states(vertical, truncation, train.sizes["level"], sst_offset)
    rng = np.random.default_rng(cfg.seed)
    times = days_since_2000(train["time"].values)
    total = cfg.copies * times.size
    done = 0
    for copy in range(cfg.copies):
        for i in range(0, times.size, chunk):
            sl = slice(i, i + chunk)
            base = {k: np.asarray(train[k].values[sl]) for k in ("T", "q", "u", "v", "ps")}
            pert = perturb_columns(base, sigma, cfg, rng)
            fields = {k: pert[k] for k in ("T", "q", "u", "v")}
            fields["ps"] = base["ps"].astype(np.float32)
            fields.update(physics(fields["T"], fields["q"], fields["u"], fields["v"], fields["ps"], times[sl]))
            fields["amplitude"] = pert["s"]
            done += times[sl].size
            if progress:
                progress(done, total)
            yield times[sl] + 1e-6 * copy, fields

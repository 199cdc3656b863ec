"""The SPPT pattern on the sphere: its area-mean variance is sigma^2 (Monte Carlo against the stationary law), the
same at every latitude (isotropy), its lag-1 correlation per step is exp(-dt / tau), a longer correlation length
moves the variance to lower total wavenumbers, clipping bounds it, and bad settings are one-line errors."""

import jax
import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.models.atmosphere.grid import AtmosphereGrid
from nemic.models.atmosphere.random_field import SphericalAR1Field

G = AtmosphereGrid(21, 8)


def _samples(f, n=300, seed=0):
    psi = jax.vmap(f.init)(jax.random.split(jax.random.key(seed), n))
    return psi, np.asarray(jax.vmap(f.nodal)(psi), dtype=float)


def test_variance_isotropy_and_ar1_memory():
    f = SphericalAR1Field(G, sigma=0.5, length_km=1000.0, tau_hours=6.0, dt_seconds=1800.0, clip=None)
    psi, e = _samples(f)
    var = np.einsum("kij,ij->", e ** 2, G.area_weights) / e.shape[0]
    assert abs(var - 0.25) < 0.02, var  # 300 fields of ~50 independent modes each: sd of the estimate ~1 %
    by_lat = (e ** 2).mean((0, 2))
    assert np.all(np.abs(by_lat - 0.25) < 0.06), by_lat
    assert abs(np.einsum("kij,ij->k", e, G.area_weights).mean()) < 0.01  # no global-mean mode
    psi1 = jax.vmap(f.advance)(psi, jax.random.split(jax.random.key(1), psi.shape[0]))
    e1 = np.asarray(jax.vmap(f.nodal)(psi1), dtype=float)
    rho = np.corrcoef(e.ravel(), e1.ravel())[0, 1]
    assert abs(rho - np.exp(-1800.0 / 21600.0)) < 0.01, rho
    var1 = np.einsum("kij,ij->", e1 ** 2, G.area_weights) / e1.shape[0]
    assert abs(var1 - 0.25) < 0.02, var1  # stationary


def test_correlation_length_and_clipping():
    near = np.deg2rad(G.lon[1] - G.lon[0])  # neighbouring longitudes on the equator-most row

    def neighbour_corr(length):
        _, e = _samples(SphericalAR1Field(G, sigma=1.0, length_km=length, clip=None), n=100)
        row = e[:, G.lat.size // 2]
        return np.corrcoef(row.ravel(), np.roll(row, 1, axis=-1).ravel())[0, 1]

    assert near > 0 and neighbour_corr(2000.0) > neighbour_corr(300.0) + 0.1
    _, e = _samples(SphericalAR1Field(G, sigma=2.0, length_km=500.0, clip=1.0), n=20)
    assert e.min() >= -1.0 and e.max() <= 1.0 and (np.abs(e) == 1.0).mean() > 0.1


@pytest.mark.parametrize("kw", [{"sigma": -0.1}, {"length_km": 0.0}, {"tau_hours": float("nan")}, {"clip": 0.0}])
def test_bad_settings_are_one_line_errors(kw):
    with pytest.raises(ConfigError) as e:
        SphericalAR1Field(G, **kw)
    assert "\n" not in str(e.value)

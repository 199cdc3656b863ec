"""Top-of-atmosphere insolation for energy balance models: Legendre-P2, exact annual mean, and daily mean.

All functions are pure ``jnp`` (jit/vmap/grad-able). Latitudes are in degrees, angles of the orbit in degrees,
insolation in W m-2, time in calendar days (day 0 = 1 January; the vernal equinox is fixed at day 80, as in
climlab and most EBM studies).

References:
    North, G. R. (1975), Theory of energy-balance climate models, J. Atmos. Sci. 32, 2033-2043,
        doi:10.1175/1520-0469(1975)032<2033:TOEBCM>2.0.CO;2 (the P2 fit ``S0/4 (1 + s2 P2(x))``, s2 = -0.48).
    Berger, A. L. (1978), Long-term variations of daily insolation and Quaternary climatic changes,
        J. Atmos. Sci. 35, 2362-2367, doi:10.1175/1520-0469(1978)035<2362:LTVODI>2.0.CO;2 (daily insolation
        from eccentricity, obliquity and the longitude of perihelion).
"""

from __future__ import annotations

import jax.numpy as jnp

#: length of the (tropical) year in days, as in climlab
DAYS_PER_YEAR = 365.2422
#: calendar day of the vernal equinox (21 March)
VERNAL_EQUINOX_DAY = 80.0
#: present-day orbit (climlab's defaults, Berger 1978 for 1950): eccentricity, obliquity (deg), long_peri (deg)
PRESENT_ORBIT = {"ecc": 0.017236, "obliquity": 23.446, "long_peri": 281.37}


def legendre_p2(x):
    """Second Legendre polynomial ``P2(x) = (3x^2 - 1)/2``; ``x = sin(latitude)``, any shape."""
    return 0.5 * (3.0 * x**2 - 1.0)


def p2_insolation(x, S0=1365.2, s2=-0.48):
    """Annual-mean insolation fitted by two Legendre terms (North 1975): ``S0/4 (1 + s2 P2(x))`` [W m-2].

    Args:
        x: sin(latitude), any shape.
        S0: solar constant [W m-2]. s2: P2 coefficient (-0.48 fits the present orbit, North 1975).
    """
    return 0.25 * S0 * (1.0 + s2 * legendre_p2(x))


def _kepler_eccentric_anomaly(M, ecc, iterations: int = 8):
    """Solve Kepler's equation ``E - e sin E = M`` by Newton's method (quadratic convergence; 8 steps for e < 0.1)."""
    E = M + ecc * jnp.sin(M)
    for _ in range(iterations):
        E = E - (E - ecc * jnp.sin(E) - M) / (1.0 - ecc * jnp.cos(E))
    return E


def solar_longitude(day, ecc=PRESENT_ORBIT["ecc"], long_peri=PRESENT_ORBIT["long_peri"],
                    days_per_year=DAYS_PER_YEAR):
    """Geocentric longitude of the Sun (radians, 0 at the vernal equinox) and true anomaly on calendar ``day``.

    The orbit is a Kepler ellipse; ``long_peri`` is the longitude of perihelion in Berger's (1978) convention
    (the Sun's longitude at perihelion, 281.37 deg in 1950). The mean anomaly grows linearly in time from its value
    at the vernal equinox (day 80); Kepler's equation is solved by Newton iteration.

    Returns:
        ``(lambda, v)``: solar longitude and true anomaly [rad], shape of ``day``.
    """
    w = jnp.deg2rad(long_peri)
    v_ve = -w  # true anomaly at the vernal equinox (lambda = 0)
    E_ve = 2.0 * jnp.arctan2(jnp.sqrt(1.0 - ecc) * jnp.sin(v_ve / 2), jnp.sqrt(1.0 + ecc) * jnp.cos(v_ve / 2))
    M_ve = E_ve - ecc * jnp.sin(E_ve)
    M = M_ve + 2.0 * jnp.pi * (day - VERNAL_EQUINOX_DAY) / days_per_year
    E = _kepler_eccentric_anomaly(M, ecc)
    v = 2.0 * jnp.arctan2(jnp.sqrt(1.0 + ecc) * jnp.sin(E / 2), jnp.sqrt(1.0 - ecc) * jnp.cos(E / 2))
    return jnp.mod(v + w, 2.0 * jnp.pi), v


def daily_insolation(lat, day, S0=1365.2, ecc=PRESENT_ORBIT["ecc"], obliquity=PRESENT_ORBIT["obliquity"],
                     long_peri=PRESENT_ORBIT["long_peri"], days_per_year=DAYS_PER_YEAR):
    """Daily-mean insolation at the top of the atmosphere [W m-2] (Berger 1978).

    ``Q = S0/pi (a/r)^2 (h0 sin(phi) sin(delta) + cos(phi) cos(delta) sin(h0))`` with the declination
    ``sin(delta) = sin(obliquity) sin(lambda)``, the sunset hour angle ``cos(h0) = -tan(phi) tan(delta)`` (0 in
    polar night, pi in polar day) and ``a/r = (1 + e cos v)/(1 - e^2)``.

    Args:
        lat: latitude [deg]; day: calendar day (0 = 1 January); broadcast against each other.
        S0: solar constant [W m-2]; ecc; obliquity [deg]; long_peri [deg] (Berger's convention).
    """
    lam, v = solar_longitude(day, ecc, long_peri, days_per_year)
    phi = jnp.deg2rad(lat)
    delta = jnp.arcsin(jnp.sin(jnp.deg2rad(obliquity)) * jnp.sin(lam))
    arg = -jnp.tan(phi) * jnp.tan(delta)
    inside = jnp.abs(arg) < 1.0
    h0 = jnp.where(inside, jnp.arccos(jnp.where(inside, arg, 0.0)), jnp.where(arg >= 1.0, 0.0, jnp.pi))
    dist2 = ((1.0 + ecc * jnp.cos(v)) / (1.0 - ecc**2)) ** 2
    q = S0 / jnp.pi * dist2 * (h0 * jnp.sin(phi) * jnp.sin(delta) + jnp.cos(phi) * jnp.cos(delta) * jnp.sin(h0))
    return jnp.maximum(q, 0.0)


def annual_mean_insolation(lat, S0=1365.2, ecc=PRESENT_ORBIT["ecc"], obliquity=PRESENT_ORBIT["obliquity"],
                           long_peri=PRESENT_ORBIT["long_peri"], n_samples: int = 720):
    """Exact annual-mean insolation [W m-2]: the time average of :func:`daily_insolation` over one orbit.

    The average is taken with the midpoint rule on ``n_samples`` equally spaced instants of the year (an average in
    time, so the varying orbital speed is accounted for). Shape: that of ``lat``.
    """
    days = (jnp.arange(n_samples) + 0.5) * (DAYS_PER_YEAR / n_samples)
    q = daily_insolation(jnp.asarray(lat)[..., None], days, S0, ecc, obliquity, long_peri)
    return jnp.mean(q, axis=-1)

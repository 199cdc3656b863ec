r"""Verification scores of precipitation fields: FSS, RAPSD, contingency scores, MAE, Wasserstein, Minkowski.

Pure ``jnp`` functions of fields shaped (..., H, W) (any leading batch axes), jittable; a score comes back with
the leading shape (one value per field) unless stated. They import nothing above :mod:`nemic.core`, so they serve
both as evaluation scores and (where differentiable) as losses. Structure-amplitude-location (:func:`sal`) needs
object labelling and runs on the host (:mod:`nemic.metrics.verification_sal`); ensemble scores (CRPS,
spread/error, rank histogram) are in :mod:`nemic.metrics.verification_ensemble`; both are re-exported here.

Each score was checked against ``pysteps`` (Pulkkinen et al. 2019, doi:10.5194/gmd-12-4185-2019) on the same
fields in ``tests/metrics/test_verification.py``: :func:`fss` against ``pysteps.verification.spatialscores.fss``,
:func:`rapsd` against ``pysteps.utils.spectral.rapsd``, :func:`csi`/:func:`ets` against
``pysteps.verification.detcatscores.det_cat_fct``, :func:`wasserstein_wet` against
``scipy.stats.wasserstein_distance``.

Input checks (NaN, shapes, windows) run on concrete values and raise one-line
:class:`~nemic.core.errors.DataError` / :class:`~nemic.core.errors.ConfigError`; inside ``jit`` nothing is
checked.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import DataError, check_finite, is_concrete
from nemic.metrics.minkowski.exact import minkowski_functionals
from nemic.metrics.minkowski.surrogate import polyomino_min_perimeter
from nemic.metrics.verification_ensemble import crps_ensemble, rank_histogram, spread_error
from nemic.metrics.verification_sal import SALScore, sal

__all__ = [
    "ContingencyTable",
    "MinkowskiDistance",
    "SALScore",
    "contingency_table",
    "crps_ensemble",
    "csi",
    "ets",
    "fss",
    "isoperimetric_violation_rate",
    "mae",
    "minkowski_distance",
    "rank_histogram",
    "rapsd",
    "rapsd_error",
    "sal",
    "spread_error",
    "wasserstein_wet",
]


def _field(name: str, x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise DataError(f"{name} must be a field (..., H, W), got shape {x.shape}")
    if is_concrete(x):
        check_finite(name, x)
    return x


def _pair(forecast: Any, observation: Any) -> tuple[jax.Array, jax.Array]:
    f = _field("forecast", forecast)
    o = _field("observation", observation)
    if f.shape != o.shape:
        raise DataError(f"forecast {f.shape} and observation {o.shape} must have the same shape")
    dtype = jnp.result_type(f.dtype, o.dtype, jnp.float32)
    return f.astype(dtype), o.astype(dtype)


def _box_mean(x: jax.Array, window: int) -> jax.Array:
    """Mean over ``window x window`` boxes with zeros outside the field, same size as ``x`` (..., H, W).

    The box of pixel ``i`` covers ``i - window // 2 .. i - window // 2 + window - 1`` in each direction: the
    footprint of ``scipy.ndimage.uniform_filter(size=window, mode="constant", cval=0)`` (for even windows one
    more pixel before than after). Computed from cumulative sums, so the cost does not grow with the window.
    """
    before, after = window // 2, window - 1 - window // 2
    for axis in (-2, -1):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (before + 1, after)
        c = jnp.cumsum(jnp.pad(x, pad), axis=axis)
        hi = jax.lax.slice_in_dim(c, window, window + n, axis=axis % x.ndim)
        lo = jax.lax.slice_in_dim(c, 0, n, axis=axis % x.ndim)
        x = hi - lo
    return x / (window * window)


def fss(forecast: Any, observation: Any, threshold: float, window: int, *, pooled: bool = False) -> jax.Array:
    r"""Fractions skill score (Roberts & Lean 2008, Mon. Wea. Rev. 136, 78-97, doi:10.1175/2007MWR2123.1).

    Events are ``field >= threshold``; :math:`F` and :math:`O` are the fractions of event pixels in the
    ``window x window`` box around each pixel, and

    .. math:: \mathrm{FSS} = 1 - \frac{\sum (F - O)^2}{\sum F^2 + \sum O^2}.

    Boundary treatment (as pysteps): outside the field counts as no event (zero padding) and a box always
    holds ``window**2`` pixels, centred for odd windows (for even ones, ``window // 2`` pixels before and
    ``window // 2 - 1`` after, as ``scipy.ndimage.uniform_filter``). So ``window = 1`` gives the pixelwise form
    (:math:`F, O` are the event indicators), and a window of at least ``2 max(H, W) - 1`` covers the whole field
    from every pixel, which gives the domain-fraction form :math:`1 - (f - o)^2 / (f^2 + o^2)` with :math:`f, o`
    the event fractions of the fields. Larger windows change nothing and are refused.

    Args:
        forecast, observation: fields (..., H, W) of the same shape (e.g. mm/h), NaN refused.
        threshold: event threshold in the units of the fields.
        window: box side in pixels, an integer in ``[1, 2 max(H, W) - 1]`` (static under ``jit``).
        pooled: sum the numerator and denominator over all leading axes before the ratio (pysteps' ``fss_accum``
            over several fields) and return one number.

    Returns:
        FSS in [0, 1] per field, shape (...) (a scalar with ``pooled``); NaN where neither field has an event
        (0/0, as pysteps). Equals ``pysteps.verification.spatialscores.fss`` to rounding.
    """
    f, o = _pair(forecast, observation)
    h, w = f.shape[-2:]
    limit = 2 * max(h, w) - 1
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or not 1 <= window <= limit:
        raise DataError(f"FSS window must be an integer in [1, {limit}] for a {h} x {w} field "
                        f"({limit} already covers the whole field from every pixel), got {window!r}")
    sf = _box_mean((f >= threshold).astype(f.dtype), int(window))
    so = _box_mean((o >= threshold).astype(f.dtype), int(window))
    axes = tuple(range(f.ndim)) if pooled else (-2, -1)
    num = jnp.sum((sf - so) ** 2, axis=axes)
    den = jnp.sum(sf**2, axis=axes) + jnp.sum(so**2, axis=axes)
    return 1.0 - num / den


def _radial_bins(h: int, w: int) -> tuple[np.ndarray, int]:
    """Integer radius of each (fftshifted) wavenumber, rounded as pysteps, and the number of radii kept."""
    def centred(n: int) -> np.ndarray:
        return np.arange(-(n // 2), n // 2 + 1) if n % 2 else np.arange(-(n // 2), n // 2)

    r = np.sqrt(centred(h)[:, None] ** 2 + centred(w)[None, :] ** 2).round().astype(np.int64)
    n = max(h, w)
    return r, (n // 2 + 1 if n % 2 else n // 2)


def rapsd(field: Any, *, d: float = 1.0, normalize: bool = False,
          return_freq: bool = False) -> jax.Array | tuple[jax.Array, np.ndarray]:
    r"""Radially averaged power spectral density (Ruzanski, Chandrasekar & Wang 2011, doi:10.1175/2011JTECHA1574.1).

    The power :math:`|\hat x_k|^2 / (H W)` of the unnormalised 2-D DFT, averaged over the wavenumbers whose
    distance from the zero wavenumber (in index units, rounded to the nearest integer) is :math:`r`, for
    :math:`r = 0 \dots L/2 - 1` (even :math:`L = \max(H, W)`) or :math:`0 \dots (L-1)/2` (odd); corners beyond are
    dropped. This is ``pysteps.utils.spectral.rapsd(field, fft_method=numpy.fft)`` exactly, including its
    ``normalize`` (divide by the sum over radii) and frequencies ``numpy.fft.fftfreq(L, d)[:n]``.

    Args:
        field: (..., H, W), NaN refused.
        d: grid spacing (only for the frequencies).
        normalize: divide each spectrum by its sum.
        return_freq: also return the frequencies (numpy, cycles per unit of ``d``).

    Returns:
        spectra (..., n_radii), and the frequencies (n_radii,) with ``return_freq``.
    """
    x = _field("field", field)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    h, w = x.shape[-2:]
    r, n = _radial_bins(h, w)
    psd = jnp.abs(jnp.fft.fftshift(jnp.fft.fft2(x), axes=(-2, -1))) ** 2 / (h * w)
    onehot = (r.reshape(-1)[:, None] == np.arange(n)[None, :]).astype(np.float64)
    counts = onehot.sum(axis=0)
    sums = jnp.matmul(psd.reshape(psd.shape[:-2] + (h * w,)), jnp.asarray(onehot, psd.dtype),
                      precision=jax.lax.Precision.HIGHEST)
    out = sums / jnp.asarray(counts, psd.dtype)
    if normalize:
        out = out / jnp.sum(out, axis=-1, keepdims=True)
    if return_freq:
        return out, np.fft.fftfreq(max(h, w), d=d)[:n]
    return out


def rapsd_error(forecast: Any, observation: Any, *, floor: float = 1e-10, include_mean: bool = False) -> jax.Array:
    r"""Mean absolute difference of the log10 radially averaged power spectra of two fields.

    .. math:: E = \frac{1}{n} \sum_{r} \left| \log_{10} \max(S_f(r), \epsilon) - \log_{10} \max(S_o(r), \epsilon) \right|

    over the radii of :func:`rapsd` from 1 (the domain mean, ``r = 0``, is left out unless ``include_mean``),
    with the floor :math:`\epsilon` = ``floor`` so that dry fields stay finite. 0 for identical spectra; 1 means
    the spectra differ by a factor of 10 on average (in either direction). Shape (...).
    """
    f, o = _pair(forecast, observation)
    sf, so = rapsd(f), rapsd(o)
    start = 0 if include_mean else 1
    diff = jnp.abs(jnp.log10(jnp.maximum(sf[..., start:], floor)) - jnp.log10(jnp.maximum(so[..., start:], floor)))
    return jnp.mean(diff, axis=-1)


class ContingencyTable(NamedTuple):
    """Counts of a dichotomous forecast per field, each of shape (...): hits, misses, false alarms, correct
    negatives."""

    hits: jax.Array
    misses: jax.Array
    false_alarms: jax.Array
    correct_negatives: jax.Array


def contingency_table(forecast: Any, observation: Any, threshold: float, *, pooled: bool = False) -> ContingencyTable:
    """Contingency table of the events ``field > threshold`` (strictly above, as pysteps' ``det_cat_fct``).

    Counts over the last two axes, shape (...), or over everything with ``pooled``.
    """
    f, o = _pair(forecast, observation)
    fe, oe = f > threshold, o > threshold
    axes = tuple(range(f.ndim)) if pooled else (-2, -1)

    def count(m):
        return jnp.sum(m, axis=axes).astype(f.dtype)

    return ContingencyTable(count(fe & oe), count(~fe & oe), count(fe & ~oe), count(~fe & ~oe))


def csi(forecast: Any, observation: Any, threshold: float, *, pooled: bool = False) -> jax.Array:
    r"""Critical success index (threat score) :math:`H / (H + M + F)` of the events ``field > threshold``.

    Donaldson, Dyer & Kraus (1975), 9th Conf. Severe Local Storms; Jolliffe & Stephenson (2012), *Forecast
    Verification*, doi:10.1002/9781119960003. Matches ``pysteps.verification.det_cat_fct(..., "CSI")``.
    NaN when neither field has an event. Shape (...), a scalar with ``pooled``.
    """
    t = contingency_table(forecast, observation, threshold, pooled=pooled)
    return t.hits / (t.hits + t.misses + t.false_alarms)


def ets(forecast: Any, observation: Any, threshold: float, *, pooled: bool = False) -> jax.Array:
    r"""Equitable threat score (Gilbert skill score) of the events ``field > threshold``.

    :math:`(H - H_r) / (H + M + F - H_r)` with the hits expected by chance :math:`H_r = (H + M)(H + F) / N`
    (Gilbert 1884; Schaefer 1990, Wea. Forecasting 5, 570, doi:10.1175/1520-0434(1990)005<0570:TCSIAA>2.0.CO;2).
    Equal to pysteps' ``det_cat_fct(..., "ETS")`` (written there as a function of POD and false-alarm rate).
    """
    t = contingency_table(forecast, observation, threshold, pooled=pooled)
    n = t.hits + t.misses + t.false_alarms + t.correct_negatives
    hr = (t.hits + t.misses) * (t.hits + t.false_alarms) / n
    return (t.hits - hr) / (t.hits + t.misses + t.false_alarms - hr)


def mae(forecast: Any, observation: Any) -> jax.Array:
    """Mean absolute error over the last two axes, shape (...), in the units of the fields."""
    f, o = _pair(forecast, observation)
    return jnp.mean(jnp.abs(f - o), axis=(-2, -1))


def _wasserstein_1d(u: jax.Array, v: jax.Array, wet_u: jax.Array, wet_v: jax.Array) -> jax.Array:
    """W1 between the empirical distributions of u[wet_u] and v[wet_v] (1-D arrays); NaN if either is empty."""
    us = jnp.sort(jnp.where(wet_u, u, jnp.inf))
    vs = jnp.sort(jnp.where(wet_v, v, jnp.inf))
    allv = jnp.sort(jnp.concatenate([us, vs]))
    left, right = allv[:-1], allv[1:]
    width = jnp.where(jnp.isfinite(right), right - left, 0.0)
    nu, nv = jnp.sum(wet_u), jnp.sum(wet_v)
    cu = jnp.searchsorted(us, left, side="right") / jnp.maximum(nu, 1)
    cv = jnp.searchsorted(vs, left, side="right") / jnp.maximum(nv, 1)
    dist = jnp.sum(jnp.abs(cu - cv) * width)
    return jnp.where((nu > 0) & (nv > 0), dist, jnp.nan)


def wasserstein_wet(forecast: Any, observation: Any, wet_threshold: float = 0.1) -> jax.Array:
    r"""1-D Wasserstein (earth mover's) distance between the wet-pixel intensities of two fields.

    :math:`W_1 = \int |F_f(x) - F_o(x)|\,dx` between the empirical distributions of the values
    ``>= wet_threshold`` of each field (Villani 2009, *Optimal Transport*, doi:10.1007/978-3-540-71050-9), i.e.
    ``scipy.stats.wasserstein_distance(f[f >= t], o[o >= t])``. The dry fraction itself is not compared (see
    :func:`csi` for that). Units of the fields; shape (...); NaN when a field has no wet pixel.
    """
    f, o = _pair(forecast, observation)
    lead = f.shape[:-2]
    f2, o2 = f.reshape((-1, f.shape[-2] * f.shape[-1])), o.reshape((-1, o.shape[-2] * o.shape[-1]))
    out = jax.vmap(_wasserstein_1d)(f2, o2, f2 >= wet_threshold, o2 >= wet_threshold)
    return out.reshape(lead)


class MinkowskiDistance(NamedTuple):
    """Relative L1 distances between Minkowski curves, one per functional, each of shape (...); ``mean`` of the
    three."""

    area: jax.Array
    perimeter: jax.Array
    euler: jax.Array
    mean: jax.Array


def minkowski_distance(forecast: Any, observation: Any, thresholds: Any, connectivity: int = 8) -> MinkowskiDistance:
    r"""Distance between the Minkowski curves (area, perimeter, Euler characteristic against threshold) of two fields.

    For each functional :math:`m` (exact measures of :func:`nemic.metrics.minkowski.minkowski_functionals`, in
    pixels and pixel edges) and thresholds :math:`u_1 \dots u_T`,

    .. math:: d_m = \frac{\sum_k |m_f(u_k) - m_o(u_k)|}{\max\left(\sum_k |m_o(u_k)|, 1\right)},

    the L1 difference of the curves relative to the L1 size of the observed curve (the floor of one pixel, edge
    or component keeps a dry observation finite). 0 for equal curves; 1 means an error as large as the observed
    curve itself. ``mean`` is :math:`(d_A + d_P + d_\chi)/3`. Scale-free, so patches of different sizes and
    wetness can be averaged. Not differentiable (use the relaxed measures for a loss).

    Args:
        forecast, observation: fields (..., H, W), NaN refused.
        thresholds: strictly increasing (T,), e.g. :func:`nemic.data.opera.wet_quantile_thresholds`.
        connectivity: 8 or 4 (for the Euler characteristic).
    """
    f, o = _pair(forecast, observation)
    mf = minkowski_functionals(f, thresholds, connectivity)
    mo = minkowski_functionals(o, thresholds, connectivity)

    def rel(a, b):
        a, b = jnp.asarray(a, f.dtype), jnp.asarray(b, f.dtype)
        return jnp.sum(jnp.abs(a - b), -1) / jnp.maximum(jnp.sum(jnp.abs(b), -1), 1.0)

    da, dp, de = rel(mf.area, mo.area), rel(mf.perimeter, mo.perimeter), rel(mf.euler, mo.euler)
    return MinkowskiDistance(da, dp, de, (da + dp + de) / 3.0)


def isoperimetric_violation_rate(area: Any, perimeter: Any, atol: float = 1e-6) -> jax.Array:
    r"""Share of non-empty excursion sets whose (estimated) perimeter breaks the discrete isoperimetric bound.

    On the pixel grid a set of :math:`A > 0` pixels has perimeter :math:`P \ge 2\lceil 2\sqrt{A}\rceil` edges
    (Harary & Harborth 1976, J. Combin. Inform. System Sci. 1, 1-8). Exact measures never break it, so the
    rate is a check of *estimated* measures: those of a relaxed or learned (surrogate) Minkowski model applied to
    forecasts, as in the constraint analysis of Quarenghi, Cotsakis & Beucler (2026, arXiv:2604.11422).

    Args:
        area, perimeter: arrays of the same shape (e.g. (N, T) per sample and threshold), in pixels and edges.
        atol: tolerance in edges.

    Returns:
        scalar in [0, 1]: violations / (entries with area > 0); 0 when no entry has area > 0.
    """
    a, p = jnp.asarray(area), jnp.asarray(perimeter)
    if a.shape != p.shape:
        raise DataError(f"area {a.shape} and perimeter {p.shape} must have the same shape")
    if is_concrete((a, p)):
        check_finite("area", a)
        check_finite("perimeter", p)
    nonempty = a > 0
    bad = nonempty & (p < polyomino_min_perimeter(a) - atol)
    return jnp.sum(bad) / jnp.maximum(jnp.sum(nonempty), 1)


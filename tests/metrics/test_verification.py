"""Verification scores against pysteps, scipy and scoringrules on the same fields (real OPERA patches and synthetic
fields), plus their limits (perfect forecasts, window limits), jit/vmap, and one-line errors."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.metrics import verification as V

pysteps = pytest.importorskip("pysteps", reason="pysteps is the reference implementation (test extra)")
from pysteps.utils.spectral import rapsd as ps_rapsd  # noqa: E402
from pysteps.verification import salscores  # noqa: E402
from pysteps.verification.detcatscores import det_cat_fct  # noqa: E402
from pysteps.verification.spatialscores import fss as ps_fss  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opera" / "opera_rain_2023-08-01_0000-1600.nc"
RTOL = 1e-6


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


@pytest.fixture(scope="module")
def opera_pairs():
    """Pairs of real 128 x 128 OPERA patches (mm/h): the shared day when present, else the shipped sample."""
    from nemic.data.opera import load_sample, open_netcdf
    from nemic.data.patches import downscaling_patches

    if SHARED.is_file():
        rain = open_netcdf(SHARED).rain_rate.isel(time=[20, 40])
        p = downscaling_patches(rain, 128, max_patches_per_frame=3).values
    else:  # pragma: no cover - CI without the shared folder
        p = downscaling_patches(load_sample().rain_rate, 128, min_wet_fraction=0.02).values
    assert p.shape[0] >= 4
    # a forecast/observation pair from different frames, and one from neighbouring patches of one frame
    return [(p[0], p[-1]), (p[1], p[0]), (p[-1], p[-2])]


def synthetic(key, shape=(96, 80), n_blobs=4):
    """Non-negative fields made of Gaussian rain cells (unimodal, well separated) plus light noise."""
    rng = np.random.default_rng(key)
    y, x = np.indices(shape)
    out = np.zeros(shape)
    centres = [(20, 20), (70, 25), (30, 60), (75, 65)][:n_blobs]
    for cy, cx in centres:
        cy, cx = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)
        out += rng.uniform(2, 20) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(4, 7) ** 2))
    return out


# ---------------------------------------------------------------- FSS
@pytest.mark.parametrize("threshold", [1.0, 5.0, 10.0])
@pytest.mark.parametrize("window", [1, 2, 3, 9, 27])
def test_fss_matches_pysteps_on_opera(opera_pairs, threshold, window):
    for f, o in opera_pairs:
        ref = ps_fss(f, o, threshold, window)
        got = float(V.fss(f, o, threshold, window))
        if np.isnan(ref):
            assert np.isnan(got)
        else:
            assert got == pytest.approx(ref, rel=RTOL, abs=1e-12)


def test_fss_batched_and_pooled_match_pysteps(opera_pairs):
    from pysteps.verification.spatialscores import fss_accum, fss_compute, fss_init

    f = np.stack([p[0] for p in opera_pairs])
    o = np.stack([p[1] for p in opera_pairs])
    got = np.asarray(jax.jit(V.fss, static_argnums=(3,))(f, o, 1.0, 9))
    assert rel(got, [ps_fss(a, b, 1.0, 9) for a, b in zip(f, o)]) < RTOL
    acc = fss_init(1.0, 9)
    for a, b in zip(f, o):
        fss_accum(acc, a, b)
    assert float(V.fss(f, o, 1.0, 9, pooled=True)) == pytest.approx(fss_compute(acc), rel=RTOL)


def test_fss_perfect_forecast_and_window_limits():
    o = synthetic(1)
    f = synthetic(2)
    for w in (1, 3, 9, 27, 191):
        assert float(V.fss(o, o, 1.0, w)) == 1.0
    # window 1: the pixelwise form with event indicators
    i_f, i_o = (f >= 1.0).astype(float), (o >= 1.0).astype(float)
    pix = 1 - np.sum((i_f - i_o) ** 2) / (np.sum(i_f**2) + np.sum(i_o**2))
    assert float(V.fss(f, o, 1.0, 1)) == pytest.approx(pix, rel=1e-12)
    # a window of 2 max(H, W) - 1 covers the field from every pixel: the domain-fraction form
    ff, fo = i_f.mean(), i_o.mean()
    dom = 1 - (ff - fo) ** 2 / (ff**2 + fo**2)
    assert float(V.fss(f, o, 1.0, 2 * 96 - 1)) == pytest.approx(dom, rel=1e-12)
    assert ps_fss(f, o, 1.0, 2 * 96 - 1) == pytest.approx(dom, rel=1e-12)
    # FSS grows towards the domain-fraction limit with the window here (displaced cells)
    vals = [float(V.fss(f, o, 1.0, w)) for w in (1, 9, 27, 81)]
    assert vals == sorted(vals)


def test_fss_errors():
    o = synthetic(1)
    with pytest.raises(DataError, match="window must be an integer in"):
        V.fss(o, o, 1.0, 0)
    with pytest.raises(DataError, match="window must be an integer in"):
        V.fss(o, o, 1.0, 2 * 96)
    with pytest.raises(DataError, match="same shape"):
        V.fss(o, o[:, :-1], 1.0, 3)
    bad = o.copy()
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        V.fss(bad, o, 1.0, 3)


# ---------------------------------------------------------------- RAPSD
@pytest.mark.parametrize("crop", [(128, 128), (128, 101), (97, 128), (64, 64)])
@pytest.mark.parametrize("normalize", [False, True])
def test_rapsd_matches_pysteps(opera_pairs, crop, normalize):
    f = opera_pairs[0][0][: crop[0], : crop[1]]
    ref, freq = ps_rapsd(f, fft_method=np.fft, normalize=normalize, return_freq=True, d=2.0)
    got, gfreq = V.rapsd(f, normalize=normalize, return_freq=True, d=2.0)
    assert got.shape == ref.shape
    assert rel(got, ref) < RTOL
    np.testing.assert_array_equal(gfreq, freq)


def test_rapsd_batched_jit_and_error():
    fields = np.stack([synthetic(k) for k in range(3)])
    got = jax.jit(V.rapsd)(fields)
    assert rel(got, [ps_rapsd(x, fft_method=np.fft) for x in fields]) < RTOL
    assert float(V.rapsd_error(fields[0], fields[0])) == 0.0
    # a field 10x larger has 100x the power: log10 difference of exactly 2 at every radius
    assert float(V.rapsd_error(10 * fields[0], fields[0])) == pytest.approx(2.0, rel=1e-12)
    e = np.asarray(V.rapsd_error(fields, fields[::-1]))
    sf, so = ps_rapsd(fields[0], fft_method=np.fft), ps_rapsd(fields[2], fft_method=np.fft)
    assert e[0] == pytest.approx(np.mean(np.abs(np.log10(sf[1:]) - np.log10(so[1:]))), rel=RTOL)


# ---------------------------------------------------------------- contingency scores, MAE, Wasserstein
@pytest.mark.parametrize("threshold", [0.1, 1.0, 5.0])
def test_csi_ets_match_pysteps(opera_pairs, threshold):
    for f, o in opera_pairs:
        ref = det_cat_fct(f, o, threshold, ["CSI", "ETS"])
        assert float(V.csi(f, o, threshold)) == pytest.approx(ref["CSI"], rel=RTOL)
        assert float(V.ets(f, o, threshold)) == pytest.approx(ref["ETS"], rel=RTOL)
    f = np.stack([p[0] for p in opera_pairs])
    o = np.stack([p[1] for p in opera_pairs])
    ref = det_cat_fct(f, o, threshold, ["CSI"], axis=None)
    assert float(V.csi(f, o, threshold, pooled=True)) == pytest.approx(ref["CSI"], rel=RTOL)
    assert rel(V.csi(f, o, threshold), [det_cat_fct(a, b, threshold, ["CSI"])["CSI"] for a, b in zip(f, o)]) < RTOL


def test_mae_and_wasserstein_against_numpy_and_scipy(opera_pairs):
    from scipy.stats import wasserstein_distance

    for f, o in opera_pairs:
        assert float(V.mae(f, o)) == pytest.approx(np.mean(np.abs(f - o)), rel=1e-12)
        ref = wasserstein_distance(f[f >= 0.1], o[o >= 0.1])
        assert float(V.wasserstein_wet(f, o)) == pytest.approx(ref, rel=RTOL)
    f = np.stack([p[0] for p in opera_pairs])
    o = np.stack([p[1] for p in opera_pairs])
    got = jax.jit(V.wasserstein_wet)(f, o)
    assert rel(got, [wasserstein_distance(a[a >= 1.0], b[b >= 1.0]) for a, b in zip(f, o)]) > 0  # other threshold
    got1 = jax.jit(lambda a, b: V.wasserstein_wet(a, b, 1.0))(f, o)
    assert rel(got1, [wasserstein_distance(a[a >= 1.0], b[b >= 1.0]) for a, b in zip(f, o)]) < RTOL
    assert np.isnan(float(V.wasserstein_wet(np.zeros((8, 8)), o[0, :8, :8])))
    # MAE is differentiable: usable as a loss
    g = jax.grad(lambda x: V.mae(x, jnp.asarray(o[0])))(jnp.asarray(f[0]))
    assert g.shape == f[0].shape and np.all(np.isfinite(g))


# ---------------------------------------------------------------- SAL
def test_sal_matches_pysteps_on_single_maximum_objects():
    for k in range(3):
        f, o = synthetic(2 * k), synthetic(2 * k + 1)
        ref = salscores.sal(f, o)
        got = V.sal(f, o)
        assert rel(got, ref) < RTOL, (got, ref)


def test_sal_matches_pysteps_on_opera(opera_pairs):
    """On real patches: A and L1 against pysteps directly; S and L2 against pysteps' own volume and distance code
    given our objects (pysteps' object detection also splits multi-maximum regions, see the module docs); and the
    whole SAL where both identifications agree (checked on these patches)."""
    import pandas as pd
    from skimage.measure import regionprops_table

    from nemic.metrics.verification_sal import sal_objects

    n_full = 0
    for f, o in opera_pairs:
        got = V.sal(f, o)
        assert float(got.amplitude) == pytest.approx(salscores.sal_amplitude(f, o), rel=RTOL)
        vols, dists = [], []
        for x in (f, o):
            labels, _ = sal_objects(x)
            objs = pd.DataFrame(regionprops_table(labels, intensity_image=x, properties=salscores.REGIONPROPS))
            vols.append(salscores._sal_scaled_volume(objs))
            dists.append(np.sum([np.sum(im) * np.hypot(cx - _com(x)[1], cy - _com(x)[0]) for im, cy, cx in
                                 zip(objs.intensity_image, objs["weighted_centroid-0"], objs["weighted_centroid-1"])])
                         / np.sum([np.sum(im) for im in objs.intensity_image]))
        s_ref = (vols[0] - vols[1]) / (0.5 * (vols[0] + vols[1]))
        dmax = np.hypot(*o.shape)
        l_ref = salscores._sal_l1_param(f, o) + 2 * abs(dists[1] - dists[0]) / dmax
        assert float(got.structure) == pytest.approx(s_ref, rel=RTOL)
        assert float(got.location) == pytest.approx(l_ref, rel=RTOL)
        ref = salscores.sal(f, o)
        if rel(got, ref) < RTOL:
            n_full += 1
    assert n_full == len(opera_pairs) if SHARED.is_file() else n_full >= 1  # all three on the shared day


def _com(x):
    from scipy.ndimage import center_of_mass

    return center_of_mass(x)


def test_sal_perfect_batched_and_errors():
    f = np.stack([synthetic(k) for k in range(2)])
    s = V.sal(f, f)
    assert s.structure.shape == (2,)
    np.testing.assert_array_equal(np.stack(s), 0.0)
    with pytest.raises(DataError, match="one shape"):
        V.sal(f, f[0])
    bad = f.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        V.sal(bad, f)


# ---------------------------------------------------------------- Minkowski distance, isoperimetric violations
def test_minkowski_distance(opera_pairs):
    from nemic.metrics.minkowski import minkowski_functionals

    f, o = opera_pairs[0]
    thr = np.array([0.5, 1.0, 2.0, 5.0])
    d = V.minkowski_distance(f, o, thr)
    mf, mo = minkowski_functionals(f, thr), minkowski_functionals(o, thr)
    for name in ("area", "perimeter", "euler"):
        a, b = np.asarray(getattr(mf, name), float), np.asarray(getattr(mo, name), float)
        assert float(getattr(d, name)) == pytest.approx(np.abs(a - b).sum() / max(np.abs(b).sum(), 1), rel=1e-12)
    assert float(d.mean) == pytest.approx((float(d.area) + float(d.perimeter) + float(d.euler)) / 3)
    z = V.minkowski_distance(o, o, thr)
    assert all(float(v) == 0 for v in z)
    batched = V.minkowski_distance(np.stack([f, o]), np.stack([o, o]), thr)
    assert batched.area.shape == (2,) and float(batched.area[0]) == pytest.approx(float(d.area))


def test_isoperimetric_violation_rate():
    area = np.array([[0.0, 1.0, 4.0, 9.0], [10.0, 16.0, 2.0, 0.0]])
    perim = np.array([[0.0, 4.0, 7.9, 12.0], [13.0, 16.0, 6.0, 3.0]])
    # bounds 2 ceil(2 sqrt A): 4, 8, 12 | 14, 16, 6 -> violations: A=4 (7.9 < 8), A=10 (13 < 14)
    assert float(V.isoperimetric_violation_rate(area, perim)) == pytest.approx(2 / 6)
    from nemic.metrics.minkowski import minkowski_functionals

    m = minkowski_functionals(synthetic(3), np.array([0.5, 1.0, 3.0]))
    assert float(V.isoperimetric_violation_rate(m.area, m.perimeter)) == 0.0
    with pytest.raises(DataError, match="same shape"):
        V.isoperimetric_violation_rate(area, perim[:, :2])


# ---------------------------------------------------------------- ensembles
def crps_brute(ens, y):
    m = ens.shape[0]
    t1 = np.mean(np.abs(ens - y), axis=0)
    t2 = np.sum(np.abs(ens[:, None] - ens[None, :]), axis=(0, 1))
    return t1 - t2 / (2 * m * m), t1 - t2 / (2 * m * (m - 1))


def test_crps_against_brute_force_and_scoringrules():
    rng = np.random.default_rng(0)
    ens = np.maximum(rng.normal(1.0, 2.0, (7, 5, 6)), 0)
    y = np.maximum(rng.normal(1.0, 2.0, (5, 6)), 0)
    nrg, fair = crps_brute(ens, y)
    assert rel(V.crps_ensemble(ens, y), nrg) < 1e-12
    assert rel(V.crps_ensemble(ens, y, fair=True), fair) < 1e-12
    assert rel(jax.jit(V.crps_ensemble, static_argnums=2)(np.moveaxis(ens, 0, -1), y, -1), nrg) < 1e-12
    sr = pytest.importorskip("scoringrules")
    assert rel(V.crps_ensemble(ens, y), sr.crps_ensemble(y, ens, m_axis=0, estimator="nrg")) < 1e-10
    assert rel(V.crps_ensemble(ens, y, fair=True), sr.crps_ensemble(y, ens, m_axis=0, estimator="fair")) < 1e-10
    # one member: the CRPS is the absolute error
    np.testing.assert_allclose(V.crps_ensemble(ens[:1], y), np.abs(ens[0] - y), rtol=1e-12, atol=1e-15)
    g = jax.grad(lambda e: jnp.mean(V.crps_ensemble(e, jnp.asarray(y))))(jnp.asarray(ens))
    assert np.all(np.isfinite(g))


def test_spread_error_and_rank_histogram_of_a_reliable_ensemble():
    rng = np.random.default_rng(1)
    m, n = 9, 20000
    centre = rng.normal(size=n)
    y = centre + rng.normal(size=n)          # truth and members drawn from the same distribution
    ens = centre + rng.normal(size=(m, n))
    assert float(V.spread_error(ens, y)) == pytest.approx(1.0, abs=0.03)
    assert float(V.spread_error(0.5 * (ens - ens.mean(0)) + ens.mean(0), y)) < 0.7   # under-dispersive
    h = np.asarray(V.rank_histogram(ens, y))
    assert h.shape == (m + 1,) and h.sum() == pytest.approx(1.0)
    assert np.all(np.abs(h - 1 / (m + 1)) < 0.012)
    # ties: all-dry points rank at 0 without a key, uniformly with one
    dry_e, dry_y = np.zeros((m, 5000)), np.zeros(5000)
    assert float(V.rank_histogram(dry_e, dry_y)[0]) == 1.0
    hk = np.asarray(V.rank_histogram(dry_e, dry_y, key=jax.random.key(0)))
    assert np.all(np.abs(hk - 1 / (m + 1)) < 0.02)
    with pytest.raises(DataError, match="do not match"):
        V.crps_ensemble(ens, y[:-1])
    with pytest.raises(ConfigError, match="at least 2"):
        V.spread_error(ens[:1], y)

"""Coarse-graining operators, subgrid forcing targets, datasets on disk and the ``nemic qg generate`` command."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.coarsen import Coarsener, forcing_dataset, load_forcing_dataset
from nemic.models.qg import QGState, get_config


@pytest.fixture(scope="module")
def pair():
    return get_config("eddy", nx=64), get_config("eddy", nx=16)


def field(m, key, scale=5e4):
    q = jax.random.normal(key, (2, m.ny, m.nx))
    _, _, wv2 = m.wavenumbers()
    q = m.ifft(m.fft(q) * jnp.exp(-wv2 * scale**2 / 2))
    return q / jnp.std(q) * 3e-6


def test_operators_on_a_resolved_wave_and_constants(pair):
    hi, lo = pair
    X, Y = np.meshgrid(hi.x, hi.y)
    k = 2 * np.pi / hi.L * 2
    f = np.cos(k * X + 2 * k * Y)
    Xl, Yl = np.meshgrid(lo.x, lo.y)
    exact_lo = np.cos(k * Xl + 2 * k * Yl)
    kap2 = 5 * k**2
    expected_gain = {
        "op1": 1.0,  # well inside the low-resolution filter's pass band
        "op2": np.exp(-kap2 * (2 * lo.dx) ** 2 / 24),
        # Gaussian, then r x r block means of a plane wave: product of sinc factors (exact for a sampled wave)
        "op3": np.exp(-kap2 * (4 * hi.dx) ** 2 / 24)
        * np.prod([np.sin(kk * 4 * hi.dx / 2) / (4 * np.sin(kk * hi.dx / 2)) for kk in (k, 2 * k)]),
    }
    for op, gain in expected_gain.items():
        c = Coarsener(hi, lo, op)
        np.testing.assert_allclose(c.coarsen(jnp.asarray(f)), gain * exact_lo, atol=1e-12, err_msg=op)
        np.testing.assert_allclose(c.coarsen(jnp.full((hi.ny, hi.nx), 2.5)), 2.5, rtol=1e-12)


def test_forcing_vanishes_for_resolved_fields_and_total_contains_subgrid(pair):
    hi, lo = pair
    c = Coarsener(hi, lo, "op1")
    # a field with modes only at low wavenumbers: its advection is exactly represented on both grids
    X, Y = np.meshgrid(hi.x, hi.y)
    k = 2 * np.pi / hi.L
    q = 1e-6 * np.stack([np.cos(k * X) * np.sin(k * Y), np.sin(2 * k * X + k * Y)])
    S = c.q_subgrid_forcing(hi, lo, jnp.asarray(q))
    assert float(jnp.max(jnp.abs(S))) < 1e-12 * float(jnp.max(jnp.abs(q))) * 1e-6
    # for turbulent fields it is not small, and the total forcing differs from it only by linear terms
    qt = field(hi, jax.random.key(0), scale=2e4)
    S = c.q_subgrid_forcing(hi, lo, qt)
    T = c.q_forcing_total(hi, lo, qt)
    assert float(jnp.std(S)) > 1e-3 * float(jnp.std(hi.tendency(QGState.from_q(qt), 0).q))
    # spectral operators commute with the linear terms (Fourier multipliers) except at the Nyquist modes, which
    # op1's filter removes: for op1 the total forcing is the subgrid forcing, for op2 only away from the Nyquist
    # modes; real-space block averaging (op3) does not commute with them
    np.testing.assert_allclose(T, S, atol=1e-10 * float(jnp.max(jnp.abs(S))))
    nyq = np.ones((lo.ny, lo.nk))
    nyq[lo.ny // 2, :] = 0
    nyq[:, -1] = 0
    for op, same in (("op2", True), ("op3", False)):
        c2 = Coarsener(hi, lo, op)
        diff = lo.ifft(lo.fft(c2.q_forcing_total(hi, lo, qt) - c2.q_subgrid_forcing(hi, lo, qt)) * nyq)
        assert (float(jnp.max(jnp.abs(diff))) < 1e-10 * float(jnp.max(jnp.abs(S)))) == same, op
    # and the subgrid forcing is quadratic
    np.testing.assert_allclose(c.q_subgrid_forcing(hi, lo, 2 * qt), 4 * S, rtol=1e-10, atol=1e-30)


def test_coarsener_bad_input(pair):
    hi, lo = pair
    with pytest.raises(ConfigError, match="unknown coarse-graining operator"):
        Coarsener(hi, lo, "op4")
    with pytest.raises(ConfigError, match="finer multiple"):
        Coarsener(lo, hi)
    with pytest.raises(DataError, match="must end with shape"):
        Coarsener(hi, lo).coarsen(jnp.zeros((2, 10, 10)))


def test_dataset_roundtrip_and_wrong_variables(pair, tmp_path):
    hi, lo = pair
    c = Coarsener(hi, lo, "op2")
    q = jnp.stack([field(hi, jax.random.key(i)) for i in range(3)])
    ds = forcing_dataset(c, hi, lo, np.arange(3) * 3600.0, q, batch=2)
    assert ds["q_subgrid_forcing"].attrs["units"] == "s-2" and ds["q"].dims == ("time", "lev", "y", "x")
    ref = c.q_subgrid_forcing(hi, lo, q[1])
    np.testing.assert_allclose(ds["q_subgrid_forcing"].values[1], ref, atol=1e-12 * float(jnp.max(jnp.abs(ref))))
    path = tmp_path / "op2.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = load_forcing_dataset(path)
    np.testing.assert_array_equal(back["q"].values, ds["q"].values)
    bad = tmp_path / "bad.nc"
    ds.drop_vars("q_forcing_total").to_netcdf(bad, engine="h5netcdf")
    with pytest.raises(DataError, match=r"lacks variable\(s\) \['q_forcing_total'\]"):
        load_forcing_dataset(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_forcing_dataset(tmp_path / "nope.nc")


def test_jit_vmap_grad_through_coarsening(pair):
    hi, lo = pair
    c = Coarsener(hi, lo, "op3")
    q = jnp.stack([field(hi, jax.random.key(i)) for i in range(2)])
    out = jax.jit(jax.vmap(lambda x: c.q_subgrid_forcing(hi, lo, x)))(q)
    ref = c.q_subgrid_forcing(hi, lo, q[1])
    np.testing.assert_allclose(out[1], ref, atol=1e-12 * float(jnp.max(jnp.abs(ref))))
    g = jax.grad(lambda x: jnp.sum(c.q_subgrid_forcing(hi, lo, x) ** 2))(q[0])
    assert g.shape == q[0].shape and float(jnp.max(jnp.abs(g))) > 0


@pytest.mark.slow
def test_generate_cli_writes_cf_datasets(tmp_path):
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "nemic"), "qg", "generate", "--config", "jet", "--years", "0.004",
           "--nx-hi", "32", "--nx-lo", "16", "--save-every", "10", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("hires.nc", "op1.nc", "op2.nc", "op3.nc", "generate.json"):
        assert (out / name).exists(), name
    ds = load_forcing_dataset(out / "op1.nc")
    assert ds.sizes["x"] == 16 and ds.sizes["time"] >= 2 and ds.attrs["config"] == "jet"
    hires = xr.open_dataset(out / "hires.nc", engine="h5netcdf")
    assert hires["q"].attrs["units"] == "s-1" and hires.sizes["x"] == 32
    bad = subprocess.run(cmd[:5] + ["--config", "storm", "--out", str(tmp_path / "x")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "unknown QG configuration 'storm'" in bad.stderr
    assert "Traceback" not in bad.stderr

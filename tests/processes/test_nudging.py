"""Nudging: analytic limits and steady states, spectral nudging, gradients, transformations and bad input."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nemic.core.errors import ConfigError, DataError
from nemic.io.output import to_xarray
from nemic.core.process import FunctionProcess
from nemic.core.rollout import rollout, simulate
from nemic.core.state import AbstractState
from nemic.core.steppers import RK4
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96State
from nemic.processes.nudging import Nudging, nudged_run, spectral_lowpass
from nemic.io.nudging import nudging_dataset


class Field2D(AbstractState):
    q: jax.Array
    cf: ClassVar[dict] = {"q": {"dims": ("y", "x"), "units": "s-1", "long_name": "potential vorticity"}}
    time_units: ClassVar[str] = "s"


@pytest.fixture(scope="module")
def reference():
    """A Lorenz-96 (F=8) trajectory at dt = 1e-3 over [0, 1]."""
    m = Lorenz96(8.0)
    s0 = m.initial_state(jax.random.PRNGKey(1), K=8, scale=3.0)
    return simulate(m, RK4(), s0, dt=1e-3, n_steps=1000)


def test_interpolation_is_linear_in_time(reference):
    nud = Nudging(reference, 1.0)
    t = 0.1234
    i = int(np.floor(t / 1e-3 + 1e-9))
    a = (t - float(reference.t[i])) / 1e-3
    expect = (1 - a) * reference.states.x[i] + a * reference.states.x[i + 1]
    np.testing.assert_allclose(nud.reference_at(t).x, expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nud.reference_at(float(reference.t[500])).x, reference.states.x[500], atol=1e-13)


def test_small_tau_tracks_reference_with_error_of_order_tau(reference):
    """Model F=10 nudged toward the F=8 truth: after a transient, max |x - x_ref| ~ tau * |model error|."""
    model = Lorenz96(10.0)
    s0 = Lorenz96State(x=reference.states.x[0])
    taus = np.array([0.002, 0.004, 0.008, 0.016])
    errs = []
    for tau in taus:
        traj = rollout(model + Nudging(reference, tau), RK4(), s0, dt=5e-4, n_steps=2000, save_every=10)
        errs.append(float(jnp.max(jnp.abs(traj.states.x[50:] - reference.states.x[250::5]))))
    slope = np.polyfit(np.log(taus), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1, (slope, errs)
    # the constant of the O(tau) term is the model error |F_model - F_truth| = 2 (to leading order)
    assert errs[0] / taus[0] == pytest.approx(2.0, rel=0.15)


def test_large_tau_reproduces_free_run(reference):
    model = Lorenz96(10.0)
    s0 = Lorenz96State(x=reference.states.x[0])
    free = rollout(model, RK4(), s0, dt=1e-3, n_steps=300)
    inf = rollout(model + Nudging(reference, np.inf), RK4(), s0, dt=1e-3, n_steps=300)
    np.testing.assert_array_equal(free.states.x, inf.states.x)
    big = rollout(model + Nudging(reference, 1e12), RK4(), s0, dt=1e-3, n_steps=300)
    np.testing.assert_allclose(big.states.x, free.states.x, atol=1e-8)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_linear_model_steady_nudging_tendency_is_analytic_fraction(tau):
    """dx/dt = -x/tau_B + F_m nudged to the truth x* = tau_B F_t: N = tau_B/(tau + tau_B) (F_t - F_m)."""
    tau_b, f_true = 0.7, jnp.array([1.0, -2.0, 0.5, 3.0])
    f_model = jnp.array([0.2, -1.0, 1.5, 3.0])
    model = FunctionProcess(lambda s, t: Lorenz96State(x=-s.x / tau_b + f_model))
    nud = Nudging(Lorenz96State(x=tau_b * f_true), tau)  # constant reference
    traj = rollout(model + nud, RK4(), Lorenz96State(x=jnp.zeros(4)), dt=0.01, n_steps=6000, save_every=6000)
    n_steady = nud.tendency(traj.final, traj.t[-1]).x
    expect = tau_b / (tau + tau_b) * (f_true - f_model)
    np.testing.assert_allclose(n_steady, expect, rtol=1e-9, atol=1e-12)


def test_spectral_nudging_leaves_high_wavenumbers_untouched():
    key = jax.random.PRNGKey(3)
    k1, k2 = jax.random.split(key)
    ref = Field2D(q=jax.random.normal(k1, (2, 16, 12)))
    state = Field2D(q=jax.random.normal(k2, (16, 12)))
    cutoff = 3
    nud = Nudging(ref, 0.5, times=[0.0, 1.0], spectral_cutoff=cutoff, spectral_axes=(0, 1))
    grid = Nudging(ref, 0.5, times=[0.0, 1.0])
    tendency = jax.jit(lambda n, s: n.tendency(s, 0.3).q)
    tend = tendency(nud, state)
    th, gh = np.fft.fft2(np.asarray(tend)), np.fft.fft2(np.asarray(tendency(grid, state)))
    ky = np.abs(np.fft.fftfreq(16) * 16)[:, None]
    kx = np.abs(np.fft.fftfreq(12) * 12)[None, :]
    low = (ky <= cutoff) & (kx <= cutoff)
    assert np.max(np.abs(th[~low])) < 1e-12 * np.max(np.abs(gh))
    np.testing.assert_allclose(th[low], gh[low], rtol=1e-12, atol=1e-12)
    assert np.isrealobj(np.asarray(tend))


def test_spectral_nudging_high_modes_evolve_as_free_run():
    """For a model diagonal in Fourier space (damping), the modes above the cutoff equal the free run's."""
    model = FunctionProcess(lambda s, t: Lorenz96State(x=-0.3 * s.x + 1.0))
    ref = Lorenz96State(x=jnp.sin(jnp.arange(16.0)) * 5 + jnp.cos(3 * jnp.arange(16.0)))
    s0 = Lorenz96State(x=jax.random.normal(jax.random.PRNGKey(0), (16,)))
    nud = Nudging(ref, 0.2, spectral_cutoff=2)
    a = rollout(model + nud, RK4(), s0, dt=0.01, n_steps=200).final.x
    b = rollout(model, RK4(), s0, dt=0.01, n_steps=200).final.x
    ah, bh = np.fft.fft(np.asarray(a)), np.fft.fft(np.asarray(b))
    high = np.abs(np.fft.fftfreq(16) * 16) > 2
    np.testing.assert_allclose(ah[high], bh[high], atol=1e-11)
    assert np.max(np.abs(ah[~high] - bh[~high])) > 0.1  # the low modes were nudged


def test_spectral_lowpass_is_a_projection():
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 10))
    p = spectral_lowpass(x, 2, (0, 1))
    np.testing.assert_allclose(spectral_lowpass(p, 2, (0, 1)), p, atol=1e-13)
    np.testing.assert_allclose(spectral_lowpass(x, 5, (0, 1)), x, atol=1e-13)


def test_per_field_tau_weights_and_mask():
    ref = TwoScaleLorenz96State(x=jnp.ones((2, 4)), y=jnp.ones((2, 4, 3)))
    state = TwoScaleLorenz96State(x=jnp.zeros(4), y=jnp.zeros((4, 3)))
    mask = jnp.array([1.0, 0.0, 1.0, 0.5])
    nud = Nudging(ref, {"x": 0.25}, times=[0.0, 1.0], weights={"x": mask})
    tend = nud.tendency(state, 0.5)
    np.testing.assert_allclose(tend.x, 4.0 * mask)
    np.testing.assert_array_equal(tend.y, 0.0)


def test_check_grads_jit_vmap_grad(reference):
    reference = reference.take(60)
    nud = Nudging(reference, 0.3, spectral_cutoff=2)
    x0 = reference.states.x[10] + 0.5

    @jax.jit
    def f(x, inv_tau, t):
        n = Nudging(reference, 1.0 / inv_tau, spectral_cutoff=2)
        return n.tendency(Lorenz96State(x=x), t).x

    check_grads(lambda x, it, t: f(x, it, t), (x0, jnp.asarray(3.0), jnp.asarray(0.2013)), order=1,
                modes=("fwd", "rev"))
    jitted = jax.jit(lambda n, s, t: n.tendency(s, t))
    np.testing.assert_allclose(jitted(nud, Lorenz96State(x=x0), 0.2).x, nud.tendency(Lorenz96State(x=x0), 0.2).x,
                               atol=1e-13)
    batch = Lorenz96State(x=reference.states.x[:5])
    vm = jax.vmap(nud.tendency)(batch, reference.t[:5])
    np.testing.assert_allclose(vm.x[2], nud.tendency(Lorenz96State(x=batch.x[2]), reference.t[2]).x, atol=1e-13)
    # grad of a nudged rollout w.r.t. tau reaches the Nudging module's parameters
    g = jax.grad(lambda n: jnp.sum(rollout(Lorenz96(10.0) + n, RK4(), Lorenz96State(x=x0), dt=1e-3,
                                           n_steps=20).final.x ** 2))(nud)
    assert np.isfinite(float(g.inv_tau["x"])) and float(g.inv_tau["x"]) != 0.0


def test_dataset_reference_and_diagnostics_roundtrip(reference, tmp_path):
    ds = to_xarray(reference)
    a = Nudging(ds, 0.1, like=Lorenz96State(x=jnp.zeros(8)))
    b = Nudging(reference, 0.1)
    s = Lorenz96State(x=jnp.ones(8))
    np.testing.assert_allclose(a.tendency(s, 0.4567).x, b.tendency(s, 0.4567).x, atol=1e-13)
    run = nudged_run(Lorenz96(10.0), b, RK4(), Lorenz96State(x=reference.states.x[0]), dt=1e-3, n_steps=100,
                     save_every=10)
    out = nudging_dataset(run, attrs={"tau": 0.1})
    assert out["x_nudging_tendency"].dims == ("time", "k")
    assert "nudging tendency" in out["x_nudging_tendency"].attrs["long_name"]
    expect = (reference.states.x[::10][:11] - run.trajectory.states.x) / 0.1
    np.testing.assert_allclose(out["x_nudging_tendency"].values, expect, atol=1e-10)
    out.to_netcdf(tmp_path / "n.nc", engine="h5netcdf")


def test_bad_input(reference):
    with pytest.raises(ConfigError, match="tau"):
        Nudging(reference, 0.0)
    with pytest.raises(ConfigError, match="tau"):
        Nudging(reference, -1.0)
    with pytest.raises(ConfigError, match="tau"):
        Nudging(reference, float("nan"))
    with pytest.raises(ConfigError, match="unknown field"):
        Nudging(reference, {"q": 1.0})
    with pytest.raises(DataError, match="shape"):
        Nudging(reference, 1.0, like=Lorenz96State(x=jnp.zeros(16)))
    with pytest.raises(DataError, match="TwoScaleLorenz96State"):
        Nudging(reference, 1.0, like=TwoScaleLorenz96State(x=jnp.zeros(8), y=jnp.zeros((8, 2))))
    nud = Nudging(reference, 1.0)
    with pytest.raises(DataError, match="shape"):
        nud.tendency(Lorenz96State(x=jnp.zeros(5)), 0.0)
    with pytest.raises(DataError, match="only covers"):
        Nudging(reference, 1.0, t_span=(0.5, 2.0))
    with pytest.raises(DataError, match="only covers"):
        nud.check_covers(-0.1, 0.5)
    nud.check_covers(0.0, 1.0)
    with pytest.raises(DataError, match="only covers"):
        nudged_run(Lorenz96(8.0), nud, RK4(), Lorenz96State(x=jnp.zeros(8)), dt=0.01, n_steps=200)
    with pytest.raises(DataError, match="increasing"):
        Nudging(Lorenz96State(x=jnp.zeros((3, 8))), 1.0, times=[0.0, 2.0, 1.0])
    with pytest.raises(DataError, match="leading time axis"):
        Nudging(Lorenz96State(x=jnp.zeros((3, 8))), 1.0, times=[0.0, 1.0])
    ds = to_xarray(reference).rename({"x": "u"})
    with pytest.raises(DataError, match="lacks variable"):
        Nudging(ds, 1.0, like=Lorenz96State(x=jnp.zeros(8)))
    with pytest.raises(ConfigError, match="like="):
        Nudging(to_xarray(reference), 1.0)
    with pytest.raises(ConfigError, match="spectral_cutoff"):
        Nudging(reference, 1.0, spectral_cutoff=-1)
    with pytest.raises(DataError, match="NaN"):
        Nudging(Lorenz96State(x=jnp.full((2, 8), jnp.nan)), 1.0, times=[0.0, 1.0])


@pytest.mark.slow  # compile-bound: about 25-50 s on 2 shared cores
def test_lorenz96_recipe_end_to_end_tiny(tmp_path):
    """The nudging recipe runs on a tiny configuration and writes its files; the nudging tendency estimates U."""
    import dataclasses
    import json

    import xarray as xr

    from nemic.experiments.nudging_l96 import NudgingL96Config, run

    base = NudgingL96Config.tiny()
    c = dataclasses.replace(base.closure, train_time=4.0, test_time=3.0, climate_time=3.0, n_forecasts=2,
                            max_lead=0.5, offline_iters=50)
    metrics = run(NudgingL96Config(closure=c, tau=0.05, online=False), tmp_path, progress=False, log=lambda m: None)
    for f in ("metrics.json", "nudged_run.nc", "guard.nc", "pdf_x.png", "free_run_nudging_correction.nc"):
        assert (tmp_path / f).exists(), f
    ds = xr.open_dataset(tmp_path / "nudged_run.nc", engine="h5netcdf")
    assert ds["x_nudging_tendency"].dims == ("time", "k")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert set(on_disk["models"]) == {"none", "nudging_correction", "nn_offline"}
    # with tau = 0.05 the nudging tendency is strongly correlated with the truth's subgrid tendency
    assert metrics["nudging"]["corr_nudging_tendency_vs_subgrid_u"] > 0.8


def test_cli_rejects_bad_tau(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "nemic"
    r = subprocess.run([str(exe), "nudging", "l96", "--out", str(tmp_path), "--tau", "0", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "tau" in r.stderr and "Traceback" not in r.stderr


def test_nudging_built_inside_a_traced_training_window():
    """The nudged-rollout loss of online training: Nudging built from a (vmapped, jitted) window of the target,
    with window-relative times. Nudging pulls the rollout toward the target, and the loss is differentiable."""
    dt, n = 0.01, 10
    truth = simulate(Lorenz96(8.0), RK4(), Lorenz96State(x=8.0 + jnp.sin(jnp.arange(8.0))), dt=dt, n_steps=4 * n)
    windows = Lorenz96State(x=jnp.stack([truth.states.x[i:i + n + 1] for i in (0, 10, 20, 29)]))

    def loss(F, tau):
        def one(w):
            model = Lorenz96(F) + Nudging(w, tau, times=np.arange(n + 1) * dt)
            tr = rollout(model, RK4(), Lorenz96State(x=w.x[0]), dt=dt, n_steps=n)
            return jnp.mean((tr.states.x - w.x) ** 2)

        return jnp.mean(jax.vmap(one)(windows))

    f = jax.jit(jax.value_and_grad(loss))
    nudged, g = f(10.0, 0.05)
    free, _ = f(10.0, 1e12)
    assert float(nudged) < 0.5 * float(free)
    assert np.isfinite(float(g)) and float(g) > 0


@pytest.mark.slow  # about 20 s on 2 shared cores
def test_ebm_flux_correction_from_nudging_reduces_bias(tmp_path):
    """Dry EBM nudged toward the moist EBM: the mean nudging tendency as a flux correction reduces the bias."""
    from nemic.experiments.nudging_ebm import NudgingEBMConfig, run

    m = run(NudgingEBMConfig(num_lat=18, tau_days=5.0, years=8.0, free_years=12.0), tmp_path, log=lambda s: None)
    unc, cor = m["models"]["uncorrected"], m["models"]["flux_corrected"]
    assert cor["rmse_Ts"] < 0.3 * unc["rmse_Ts"], (cor, unc)
    assert (tmp_path / "nudged_run.nc").exists() and (tmp_path / "ebm_flux_correction.png").exists()
    with pytest.raises(ConfigError, match="tau_days"):
        NudgingEBMConfig(tau_days=0.5)

"""The subgrid benchmark pipeline end to end at toy size: data, offline and online training, evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from nemic.core.errors import ConfigError, DataError
from nemic.experiments import qg_subgrid as ex
from nemic.models.qg import SECONDS_PER_YEAR, QGState, get_config
from nemic.nn.conv import CircularCNN
from nemic.processes.qg_closures import CNN_CLOSURE_KIND, BackscatterBiharmonic, CNNClosure
from nemic.train.checkpoint import CheckpointError, load_module, read_header, save_module


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    for na, nb in ((50, 50), (37, 101), (20, 60), (90, 30)):
        a, b = rng.normal(size=na), rng.gamma(2.0, size=nb)
        assert ex.wasserstein1(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
        assert ex.wasserstein1(np.sort(a), np.sort(b), presorted=True) == pytest.approx(
            scipy.stats.wasserstein_distance(a, b), rel=1e-12)


def test_similarity_is_one_for_a_perfect_closure_and_zero_for_none():
    m = get_config("eddy", nx=16)
    rng = np.random.default_rng(1)
    hr = ex.summarize(m, 1e-6 * rng.normal(size=(3, 2, 16, 16)))
    lr = ex.summarize(m, 2e-6 * rng.normal(size=(3, 2, 16, 16)))
    assert ex.similarity(hr, lr, hr)["min"] == pytest.approx(1.0)
    assert ex.similarity(lr, lr, hr)["mean"] == pytest.approx(0.0)


def test_summarize_adds_the_closure_energy_flux_and_distances_use_resolved_scales():
    from nemic.models.qg import QGState
    from nemic.models.qg import diagnostics as dg

    m = get_config("eddy", nx=16)
    q = jnp.asarray(1e-6 * np.random.default_rng(2).normal(size=(3, 2, 16, 16)))
    c = BackscatterBiharmonic(m)
    plain, with_c = ex.summarize(m, q), ex.summarize(m, q, c)
    extra = np.mean([np.asarray(dg.parameterization_energy_flux(m, x, m.ifft(c.closure_tendency(m, QGState.from_q(x), 0.0).qh))["KEflux"])
                     for x in q], axis=0)
    np.testing.assert_allclose(with_c["KEflux"] - plain["KEflux"], extra, rtol=1e-9, atol=1e-30)
    np.testing.assert_array_equal(with_c["KEspec1"], plain["KEspec1"])
    # a difference beyond the resolved wavenumbers does not count in the spectral distances
    other = dict(plain)
    other["KEspec1"] = np.where(plain["kr"] >= plain["kmax"], plain["KEspec1"] * 10, plain["KEspec1"])
    assert np.any(plain["kr"] >= plain["kmax"]) and ex.distances(other, plain)["KEspec1"] == 0.0
    assert ex.start_indices(10, 3) == [0, 3, 6]
    with pytest.raises(ConfigError, match="must be >= 1"):
        ex.start_indices(10, 0)


def test_spectrum_loss_is_zero_for_equal_sets_and_log4_squared_for_doubled_fields():
    m = get_config("eddy", nx=16)
    q = jnp.asarray(1e-6 * np.random.default_rng(3).normal(size=(4, 2, 16, 16)))
    assert float(ex.spectrum_loss(m, q, q)) == 0.0
    np.testing.assert_allclose(float(ex.spectrum_loss(m, 2 * q, q)), np.log(4.0) ** 2, rtol=1e-10)
    g = jax.grad(lambda a: ex.spectrum_loss(m, a * q, q))(1.5)
    np.testing.assert_allclose(float(g), 8 * np.log(1.5) / 1.5, rtol=1e-8)  # d/da (2 log a)^2
    with pytest.raises(ConfigError, match="spectrum_weight must be >= 0"):
        ex.train_online(None, m, None, spectrum_weight=-1.0)


def test_saved_closure_loads_back_with_the_same_tendency_and_rejects_other_weights(tmp_path):
    """The one weights format: kind QGCNNClosure (network kind + config, scales, grid) + weights, per-leaf dtypes."""
    m = get_config("eddy", nx=16)
    net = CircularCNN(2, 2, widths=(4,), kernel_sizes=(3, 3), key=jax.random.key(3))
    net32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, net)
    c = CNNClosure(net32, [2e-6, 5e-7], [3e-11, 1e-12], grid=m.grid)
    out = ex.save_trained_closure(c, tmp_path / "cnn", {"mode": "offline"})
    header = read_header(out / "closure.eqx")
    assert header["kind"] == CNN_CLOSURE_KIND and header["config"]["net_kind"] == "CircularCNN"
    assert header["config"]["net"]["widths"] == [4] and header["config"]["grid"]["nx"] == 16
    assert json.loads((out / "closure.json").read_text())["extra"] == {"mode": "offline"}
    back, info = ex.load_trained_closure(out)
    assert info == {"mode": "offline"} and back.grid == m.grid
    assert back.net.layers[0].conv.weight.dtype == jnp.float32 and back.in_scale.dtype == jnp.float64
    s = QGState.from_q(jax.random.normal(jax.random.key(4), (2, 16, 16)) * 1e-6)
    np.testing.assert_array_equal((m + back).tendency(s, 0.0).qh, (m + c).tendency(s, 0.0).qh)
    assert eqx.tree_equal(load_module(out / "closure.eqx"), back)  # the generic loader gives the same module
    # a closure directory holding another module's weights: one line naming the file and both kinds
    save_module(tmp_path / "other" / "closure.eqx", net)
    with pytest.raises(CheckpointError, match="holds weights of a 'CircularCNN', not of a 'QGCNNClosure'") as e:
        ex.load_trained_closure(tmp_path / "other")
    assert "\n" not in str(e.value)
    # the format of earlier versions (closure.json with the hyperparameters, bare closure.eqx) is not read
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "closure.json").write_text(json.dumps({"widths": [4], "in_scale": [1, 1]}))
    eqx.tree_serialise_leaves(tmp_path / "old" / "closure.eqx", c)
    with pytest.raises(CheckpointError, match="does not describe nemic weights") as e:
        ex.load_trained_closure(tmp_path / "old")
    assert "\n" not in str(e.value)


def test_summaries_at_two_resolutions_agree_on_resolved_spectra():
    """A field and its spectral truncation (op1) have the same KE spectrum below the coarse model's filter."""
    from nemic.data.coarsen import Coarsener

    hi, lo = get_config("eddy", nx=32), get_config("eddy", nx=16)
    q = jax.random.normal(jax.random.key(5), (3, 2, 32, 32)) * 1e-6
    _, _, wv2 = hi.wavenumbers()
    q_smooth = hi.ifft(hi.fft(q) * (wv2 < (4.2 * 2 * np.pi / hi.L) ** 2))  # below the coarse model's filter
    q = q_smooth + hi.ifft(hi.fft(q) * (wv2 > (12 * 2 * np.pi / hi.L) ** 2))  # + scales the coarse grid lacks
    qc = jax.vmap(Coarsener(hi, lo, "op1").coarsen)(q)
    a, b = ex.summarize(hi, q), ex.summarize(lo, qc)
    a["kmax"] = b["kmax"]
    d = ex.distances(a, b)
    sel = b["kr"] < b["kmax"]
    assert d["KEspec1"] < 1e-10 * np.sqrt(np.mean(b["KEspec1"][sel] ** 2))
    assert d["q1"] > 0  # the full-resolution field has more small-scale variance than the truncated one


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qgdata")
    hi = get_config("eddy", nx=32)
    q = jax.random.normal(jax.random.key(0), (2, 32, 32))
    _, _, wv2 = hi.wavenumbers()
    q = hi.ifft(hi.fft(q) * jnp.exp(-wv2 * (4e4) ** 2 / 2))
    q0 = q / jnp.std(q) * jnp.asarray([6e-6, 1e-6])[:, None, None]
    years = 96 * 3600.0 / SECONDS_PER_YEAR
    ex.generate("eddy", years, out, nx_hi=32, nx_lo=16, spinup_years=0.0, save_every=4, q0=q0, operators=("op1",))
    return out


def test_offline_then_online_training_and_evaluation(data_dir, tmp_path):
    ds, lo = ex.load_dataset(data_dir, "op1")
    assert ds.sizes["time"] == 25 and lo.nx == 16
    s_q, s_S = ex.scales(ds)
    closure = ex.make_cnn_closure(s_q, s_S, widths=(8, 8), kernel_sizes=(3, 3, 3), key=jax.random.key(1))
    closure, losses = ex.train_offline(closure, ds, steps=40, batch=8, lr=3e-3, log_every=39)
    assert losses[-1][1] < 0.9 * losses[0][1]
    # online: the loss on fixed rollouts decreases
    q = jnp.asarray(ds["q"].values)
    segs = jnp.stack([q[i:i + 3] for i in (0, 8, 16)])

    @eqx.filter_jit
    def fixed_loss(c):
        return jnp.mean(jax.vmap(lambda s: ex.online_loss(c, lo, s, 3600.0, 4))(segs))

    before = fixed_loss(closure)
    trained, ol = ex.train_online(closure, lo, ds, steps=8, horizon=2, batch=2, lr=1e-3, log_every=7,
                                  spectrum_weight=0.1)
    assert fixed_loss(trained) < before
    # save, reload (same tendency), evaluate with the classical closures
    ex.save_trained_closure(trained, tmp_path / "cnn", {"mode": "online", "losses": ol})
    back, info = ex.load_trained_closure(tmp_path / "cnn")
    assert info["mode"] == "online" and info["losses"] == [list(x) for x in ol]
    s0 = QGState.from_q(q[3])
    np.testing.assert_array_equal(back.tendency(s0, 0.0).qh, trained.tendency(s0, 0.0).qh)
    m = ex.evaluate(data_dir, {"backscatter": BackscatterBiharmonic(lo), "cnn_online": back}, tmp_path / "eval",
                    n_steps=24, save_every=4, spinup_steps=4, n_runs=2)
    assert m["n_runs"] == 2 and m["start_snapshots"] == [0, 12]
    assert m["runs"]["low_res"]["snapshots"] == 2 * 6 and not m["runs"]["cnn_online"]["blowups"]
    for name in ("backscatter", "cnn_online"):
        assert np.isfinite(m["closures"][name]["mean"])
        assert m["closures"][name]["min"] <= m["closures"][name]["mean"] <= 1.0
    def no_bare_nan(token):
        raise AssertionError(f"metrics.json holds the bare token {token} (invalid JSON)")

    assert json.loads((tmp_path / "eval" / "metrics.json").read_text(), parse_constant=no_bare_nan)["nx_lo"] == 16
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["command"] == "qg evaluate"
    assert (tmp_path / "eval" / "spectra.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "snapshots.png").exists()
    tab = ex.similarity_table([tmp_path / "eval"]).splitlines()
    mean, mn = m["closures"]["backscatter"]["mean"], m["closures"]["backscatter"]["min"]
    assert tab[2] == f"| backscatter | {mean:+.2f} / {mn:+.2f} |" and len(tab) == 4
    with pytest.raises(DataError, match="metrics.json' does not exist"):
        ex.similarity_table([tmp_path])


def test_bad_datasets_and_options(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown coarse-graining operator"):
        ex.load_dataset(data_dir, "op7")
    with pytest.raises(DataError, match="does not exist"):
        ex.load_dataset(tmp_path, "op1")
    with pytest.raises(DataError, match="not a saved closure"):
        ex.load_trained_closure(tmp_path)
    with pytest.raises(ConfigError, match="target must be 'hires' or 'coarse'"):
        ex.evaluate(data_dir, {}, tmp_path / "e", n_steps=8, save_every=4, target="hr")
    with pytest.raises(DataError, match="hires.nc' does not exist"):
        ex.load_hires(tmp_path)
    with pytest.raises(DataError, match="lacks the model attribute 'lo_nx'"):
        ex.model_from_attrs({"lo_ny": 16}, "lo", "somewhere.nc")
    q, hi = ex.load_hires(data_dir, t_start=48 * 3600.0)
    assert hi.nx == 32 and q.shape == (13, 2, 32, 32)
    ds, lo = ex.load_dataset(data_dir, "op1")
    ds.drop_vars("q_subgrid_forcing").to_netcdf(tmp_path / "op1.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="lacks variable"):
        ex.load_dataset(tmp_path, "op1")
    with pytest.raises(ConfigError, match="unknown QG configuration"):
        ex.generate("storm", 0.01, tmp_path / "x")


@pytest.mark.slow
def test_cli_train_and_evaluate(data_dir, tmp_path):
    nemic = str(Path(sys.executable).parent / "nemic")
    r = subprocess.run([nemic, "qg", "train", "--data", str(data_dir), "--out", str(tmp_path / "cnn"),
                        "--steps", "5", "--batch", "4", "--widths", "4"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([nemic, "qg", "evaluate", "--data", str(data_dir), "--out", str(tmp_path / "ev"),
                        "--closures", f"smagorinsky,cnn={tmp_path / 'cnn'}", "--steps", "16", "--save-every", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "smagorinsky: similarity mean" in r.stdout
    assert set(json.loads((tmp_path / "ev" / "metrics.json").read_text())["closures"]) == {"smagorinsky", "cnn"}
    r = subprocess.run([nemic, "qg", "evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "e2")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr

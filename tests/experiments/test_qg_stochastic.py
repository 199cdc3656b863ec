"""The stochastic QG recipe end to end on tiny grids (a smoke test of the files and the metrics' structure), and
the stochastic CNN closure: warm start equals the deterministic closure, keys, saving and loading."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.cli.testing import invoke, root_app
from nemic.core.rollout import ensemble_rollout
from nemic.errors import ConfigError, DataError
from nemic.experiments import qg_stochastic as qs
from nemic.experiments import qg_subgrid as ex
from nemic.models.qg import SECONDS_PER_YEAR, get_config
from nemic.processes.qg_stochastic import STOCHASTIC_CNN_CLOSURE_KIND, StochasticCNNClosure
from nemic.train.checkpoint import load_module, save_module


def _q0(nx=32):
    hi = get_config("eddy", nx=nx)
    q = jax.random.normal(jax.random.key(0), (2, nx, nx))
    _, _, wv2 = hi.wavenumbers()
    q = hi.ifft(hi.fft(q) * jnp.exp(-wv2 * (4e4) ** 2 / 2))
    return q / jnp.std(q) * jnp.asarray([6e-6, 1e-6])[:, None, None]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qgstoch")
    years = 96 * 3600.0 / SECONDS_PER_YEAR
    ex.generate("eddy", years, root / "long", nx_hi=32, nx_lo=16, spinup_years=0.0, save_every=12, q0=_q0(),
                operators=("op1",))
    ex.generate("eddy", years, root / "fine", nx_hi=32, nx_lo=16, spinup_years=0.0, save_every=3, q0=_q0(),
                operators=("op1",))
    return root


def test_warm_start_equals_the_deterministic_closure_and_weights_round_trip(tmp_path):
    lo = get_config("eddy", nx=16)
    det = ex.make_cnn_closure(np.full(2, 1e-6), np.full(2, 1e-11), widths=(4,), kernel_sizes=(3, 3),
                              key=jax.random.key(0))
    q = _q0(16)
    same = StochasticCNNClosure.from_deterministic(det, lo, noise_weight=0.0, key=jax.random.key(1))
    e = same.noise.sample(jax.random.key(2))
    np.testing.assert_allclose(np.asarray(same.forcing(q, e)), np.asarray(det.forcing(q)), rtol=1e-6, atol=1e-20)
    st = StochasticCNNClosure.from_deterministic(det, lo, noise_weight=1.0, key=jax.random.key(1))
    assert float(jnp.max(jnp.abs(st.forcing(q, e) - det.forcing(q)))) > 1e-3 * float(jnp.max(jnp.abs(det.forcing(q))))
    path = save_module(tmp_path / "st.eqx", st)
    back = load_module(path, kind=STOCHASTIC_CNN_CLOSURE_KIND)
    np.testing.assert_array_equal(np.asarray(back.forcing(q, e)), np.asarray(st.forcing(q, e)))
    np.testing.assert_array_equal(np.asarray(back.noise.log_tau), np.asarray(st.noise.log_tau))
    with pytest.raises(ConfigError):
        StochasticCNNClosure.from_deterministic(det, lo, tau=-1.0, key=jax.random.key(1))
    if not jax.config.jax_enable_x64:  # float32: a long correlation length would make NaN gradients
        with pytest.raises(ConfigError, match="too long"):
            StochasticCNNClosure.from_deterministic(det, get_config("eddy", nx=64), length=4.0,
                                                    key=jax.random.key(1))
    with pytest.raises(ConfigError, match="no noise state"):
        st.tendency(lo.initial_state(q=q), 0.0)


def test_same_keys_same_members_different_keys_differ():
    lo = get_config("eddy", nx=16)
    det = ex.make_cnn_closure(np.full(2, 1e-6), np.full(2, 1e-11), widths=(4,), kernel_sizes=(3, 3),
                              key=jax.random.key(0))
    st = StochasticCNNClosure.from_deterministic(det, lo, noise_weight=1.0, key=jax.random.key(1))
    state = lo.initial_state(q=_q0(16))
    run = lambda keys: ensemble_rollout(lo + st, lo.default_stepper(), state, keys=keys, dt=3600.0, n_steps=4,
                                        save_every=2, observe=lo.observe).states.q  # noqa: E731
    keys = jax.random.split(jax.random.key(5), 3)
    a, b = run(keys), run(keys)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.max(jnp.abs(a[0, -1] - a[1, -1]))) > 0


def test_quick_recipe_writes_scores_files_and_similarity(dirs, tmp_path):
    out = tmp_path / "out"
    status, errors = invoke(root_app(), ["qg", "stochastic", "--data", dirs / "long", "--forecast-data",
                                         dirs / "fine", "--out", out, "--quick", "--float64", "--no-progress"])
    assert status == 0, errors
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["checks"]) >= {"spread_error_within_0.7_1.3", "similarity_at_least_deterministic"}
    for name in ("deterministic_cnn", "stochastic_cnn"):
        c = m["closures"][name]
        assert c["crps"]["1"] is not None and np.isfinite(c["crps"]["1"]) and c["crps"]["1"] > 0
        assert c["similarity"]["mean"] is None or np.isfinite(c["similarity"]["mean"])
    assert m["closures"]["stochastic_cnn"]["spread"]["1"] > 0
    for f in ("scores.nc", "forecast_stochastic_cnn.nc", "spread_error.png", "crps_vs_lead.png", "spectra.png",
              "training.png", "members.png", "closures/stochastic_cnn/closure.eqx",
              "closures/deterministic_cnn/closure.eqx"):
        assert (out / f).is_file(), f
    import xarray as xr
    with xr.open_dataset(out / "forecast_stochastic_cnn.nc") as ds:
        assert ds["q"].dims[0] == "member" and ds.sizes["member"] == 2
    # the initial perturbation's amplitude is one of the candidates, chosen on training forecasts
    assert m["initial_perturbation"]["amplitude"] in (0.0, 0.1)
    assert set(m["initial_perturbation"]["fitted_on_training_forecasts"]) == {"0", "0.1"}
    # both closures of a run start a second one (no fitting): the stochastic closure comes back as saved
    out2 = tmp_path / "out2"
    status, errors = invoke(root_app(), ["qg", "stochastic", "--data", dirs / "long", "--forecast-data",
                                         dirs / "fine", "--out", out2, "--quick", "--float64", "--no-progress",
                                         "--init", out / "closures/deterministic_cnn", "--init-stochastic",
                                         out / "closures/stochastic_cnn"])
    assert status == 0, errors
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["training"]["stochastic_cnn"]["source"] == "init"
    assert m2["training"]["stochastic_cnn"]["noise_sigma"] == m["training"]["stochastic_cnn"]["noise_sigma"]
    with pytest.raises(ConfigError, match="needs init"):
        qs.run(qs.quick_config(), dirs / "long", dirs / "fine", tmp_path / "o3",
               init_stochastic=out / "closures/stochastic_cnn", log=lambda *_: None)
    # a saved deterministic closure can start a second run (no offline training), and bad input is refused first
    with pytest.raises(DataError):
        qs.run(qs.quick_config(max_lead_days=30.0), dirs / "long", dirs / "fine", tmp_path / "o2",
               log=lambda *_: None)
    assert not (tmp_path / "o2").exists()
    with pytest.raises(ConfigError):
        qs.quick_config(train_fraction=1.5)

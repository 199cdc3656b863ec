"""``nemic atmos train --online``: its one-line errors (a network on other levels than the truth, NaN in the truth,
no --init, a network not on the core's equidistant levels) and (slow) the quick path end to end on a small truth
made of the core's own states: weights in nemic's format, metrics.json with forecast RMSE of the initial and the
trained network, the loss PNG."""

import functools
import json

import jax
import numpy as np
import pytest

from nemic.cli.testing import invoke, root_app
from nemic.data.atmosphere.dataset import truth_dataset
from nemic.models.atmosphere import PrimitiveEquations
from nemic.nn.column import ColumnNet
from nemic.train.checkpoint import load_module, save_module

EQ = np.linspace(0.0, 1.0, 9)
SPEEDY = np.array([0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0])


@functools.lru_cache(maxsize=1)
def _state():
    m = PrimitiveEquations(21, 8)
    return m, m.observe(m.initial_state(jax.random.key(0), perturbation=5e3), 0.0)


def _truth(nt, t0, bounds=EQ, seed=0):
    """6-hourly states near the core's perturbed isothermal state (T, u, v, q, p_s on the T21 grid)."""
    m, f = _state()
    r = np.random.default_rng(seed)
    rep = lambda a, s: np.asarray(a)[None] + s * r.standard_normal((nt,) + np.shape(a))  # noqa: E731
    fields = {"T": rep(f.air_temperature, 0.1), "u": rep(f.eastward_wind, 0.1), "v": rep(f.northward_wind, 0.1),
              "q": np.maximum(rep(f.specific_humidity, 0.0) + 1e-3, 0.0), "ps": rep(f.surface_air_pressure, 1.0)}
    return truth_dataset(t0 + 0.25 * np.arange(nt), fields, lat=m.grid.lat, lon=m.grid.lon,
                         sigma=0.5 * (bounds[1:] + bounds[:-1]), sigma_boundaries=bounds)


def _net(path, bounds=EQ):
    net = ColumnNet(bounds, width=8, depth=1, key=jax.random.key(0), zero_init=True)
    x = ColumnNet.pack(np.full(8, 270.0), np.full(8, 1e-3), np.ones(8), np.ones(8), 1e5, 300.0, 0.0)
    net = net.with_statistics(x, np.ones_like(x), np.full(32, 1e-5), 3e-5)
    save_module(path, net)
    return path


def _write(d, train, test):
    d.mkdir()
    train.to_zarr(d / "train.zarr", mode="w", consolidated=False)
    test.to_zarr(d / "test.zarr", mode="w", consolidated=False)
    return d


def _args(truth, net, out):
    args = ["atmos", "train", "--online", "--quick", "--no-progress", "--truth", str(truth), "--out", str(out)]
    return args + (["--init", str(net)] if net is not None else [])


@pytest.mark.parametrize("case", ["levels", "nan", "no-init", "speedy-levels"])
def test_online_training_bad_inputs_are_one_line_errors(tmp_path, case):
    train, test = _truth(3, 60.25), _truth(5, 61.0, seed=1)
    net = _net(tmp_path / "net.eqx")
    if case == "levels":
        net = _net(tmp_path / "speedy.eqx", SPEEDY)
    elif case == "nan":
        train["q"][1, 2, 3, 4] = np.nan
    elif case == "no-init":
        net = None
    elif case == "speedy-levels":  # truth and network agree, but the hybrid core has equidistant levels
        train, test = _truth(3, 60.25, SPEEDY), _truth(5, 61.0, SPEEDY, seed=1)
        net = _net(tmp_path / "speedy.eqx", SPEEDY)
    truth = _write(tmp_path / "truth", train, test)
    code, err = invoke(root_app(), _args(truth, net, tmp_path / "on"))
    assert code == 2 and len(err) == 1, err
    expect = {"levels": "network was trained on", "nan": "'q' has 1 non-finite value", "no-init": "needs --init",
              "speedy-levels": "equidistant sigma levels"}[case]
    assert expect in err[0]
    assert not (tmp_path / "on").exists()


def test_online_training_command_quick_path(tmp_path):
    truth = _write(tmp_path / "truth", _truth(6, 60.25), _truth(5, 61.0, seed=1))
    net = _net(tmp_path / "net.eqx")
    code, err = invoke(root_app(), _args(truth, net, tmp_path / "on"))
    assert code == 0, err
    out = tmp_path / "on"
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["forecast_rmse"]["online network"]["T"]) == 1
    assert all(np.isfinite(v[0]) for r in m["forecast_rmse"].values() for v in r.values())
    assert np.isfinite(m["loss"]["first"]) and m["loss"]["stages"][0]["iterations"] == 2
    trained = load_module(out / "column_net.eqx", kind="ColumnNet")
    w0 = load_module(net, kind="ColumnNet").mlp.layers[-1].weight
    assert not np.array_equal(np.asarray(trained.mlp.layers[-1].weight), np.asarray(w0))
    # only the MLP trains: the stored normalisation and level thicknesses are unchanged
    np.testing.assert_array_equal(np.asarray(trained.d_sigma), np.diff(EQ))
    assert (out / "online.png").exists()

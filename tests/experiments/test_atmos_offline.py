"""``nemic atmos train --offline`` end to end on a small synthetic truth (the column training path, weights,
scores, metrics), and its one-line errors: a truth of another resolution, NaN in the truth, test levels that differ
from the training levels, a missing --offline."""

import json

import jax
import numpy as np
import pytest

from nemic.cli.testing import invoke, root_app
from nemic.data.atmosphere.dataset import truth_dataset
from nemic.data.atmosphere.spectral import lat_lon
from nemic.nn.column import ColumnNet
from nemic.train.checkpoint import load_module

SB = np.array([0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0])


def _truth(nt, t0, truncation=21, bounds=SB, seed=0):
    lat, lon = lat_lon(truncation)
    r = np.random.default_rng(seed)
    L = len(bounds) - 1
    s3, s2 = (nt, L, lat.size, lon.size), (nt, lat.size, lon.size)
    T, u, v = 250 + 30 * r.random(s3), r.normal(0, 10, s3), r.normal(0, 5, s3)
    ps, S = 1e5 + 500 * r.random(s2), 400 * r.random(s2)
    # targets that are smooth functions of the inputs, so there is something to learn
    f = {"T": T, "u": u, "v": v, "q": 1e-3 * r.random(s3), "ps": ps, "insolation": S,
         "dTdt_phys": 1e-5 * np.tanh((T - 265) / 10), "dqdt_phys": 1e-8 * np.tanh((T - 265) / 10),
         "dudt_phys": -1e-6 * u / 10, "dvdt_phys": -1e-6 * v / 5,
         "precipitation": 3e-5 * S / 400, "evaporation": 3e-5 * (1 - S / 400)}
    return truth_dataset(t0 + 0.25 * np.arange(nt), f, lat=lat, lon=lon, sigma=0.5 * (bounds[1:] + bounds[:-1]),
                         sigma_boundaries=bounds)


def _write(d, train, test):
    d.mkdir()
    train.to_zarr(d / "train.zarr", mode="w", consolidated=False)
    test.to_zarr(d / "test.zarr", mode="w", consolidated=False)
    return d


def test_offline_training_command_end_to_end(tmp_path):
    truth = _write(tmp_path / "truth", _truth(2, 60.25), _truth(1, 61.0, seed=1))
    code, err = invoke(root_app(), ["atmos", "train", "--offline", "--quick", "--no-progress", "--truth",
                                    str(truth), "--out", str(tmp_path / "off")])
    assert code == 0, err
    out = tmp_path / "off"
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_loss"] < 0.9 * m["test_loss_zero_network"], m
    assert set(m["r2"]) == {"dTdt_phys", "dqdt_phys", "dudt_phys", "dvdt_phys"}
    assert all(len(v) == 8 for v in m["r2"].values())
    net = load_module(out / "column_net.eqx", kind="ColumnNet")
    assert isinstance(net, ColumnNet) and net.levels == 8
    y = jax.vmap(net)(ColumnNet.pack(np.full((3, 8), 260.0), np.full((3, 8), 1e-3), np.zeros((3, 8)),
                                     np.zeros((3, 8)), np.full(3, 1e5), np.full(3, 300.0), np.zeros(3)))
    assert np.all(np.asarray(net.unpack(y)["precipitation"]) >= 0)
    assert (out / "scores.nc").exists() and (out / "offline.png").exists()


@pytest.mark.parametrize("case", ["resolution", "nan", "levels", "no-offline"])
def test_offline_training_bad_inputs_are_one_line_errors(tmp_path, case):
    train, test = _truth(1, 60.25), _truth(1, 61.0)
    if case == "resolution":
        train = _truth(1, 60.25, truncation=31)
    elif case == "nan":
        train["T"][0, 2, 3, 4] = np.nan
    elif case == "levels":
        eq = np.linspace(0.0, 1.0, 9)
        test = _truth(1, 61.0, bounds=eq)
    truth = _write(tmp_path / "truth", train, test)
    args = ["atmos", "train", "--quick", "--no-progress", "--truth", str(truth), "--out", str(tmp_path / "off")]
    if case != "no-offline":
        args.insert(2, "--offline")
    code, err = invoke(root_app(), args)
    assert code == 2 and len(err) == 1, err
    expect = {"resolution": "not the T21 Gaussian grid", "nan": "'T' has 1 non-finite value",
              "levels": "network was trained on", "no-offline": "pass --offline"}[case]
    assert expect in err[0]
    assert not (tmp_path / "off").exists()

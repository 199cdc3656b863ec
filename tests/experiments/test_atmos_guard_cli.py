"""(slow) ``nemic atmos guard --quick`` end to end on small truths made of the core's own states: a control truth
and the same states warmed by 4 K. The warmed columns are flagged far more often than the held-out control columns,
and the metrics, runs and PNGs are written."""

import json

import jax
import numpy as np

from nemic.cli.testing import invoke, root_app
from nemic.data.atmosphere.dataset import truth_dataset
from nemic.models.atmosphere import PrimitiveEquations
from nemic.nn.column import ColumnNet
from nemic.train.checkpoint import save_module

EQ = np.linspace(0.0, 1.0, 9)


def _truths(tmp_path):
    m = PrimitiveEquations(21, 8)
    f = m.observe(m.initial_state(jax.random.key(0), perturbation=5e3), 0.0)
    r = np.random.default_rng(0)

    def ds(nt, t0, warming=0.0):
        rep = lambda a, s: np.asarray(a)[None] + s * r.standard_normal((nt,) + np.shape(a))  # noqa: E731
        shape3 = (nt,) + np.shape(f.air_temperature)
        fields = {"T": rep(f.air_temperature, 1.0) + warming, "u": rep(f.eastward_wind, 1.0),
                  "v": rep(f.northward_wind, 1.0), "q": np.abs(rep(f.specific_humidity, 1e-4)) + 1e-3,
                  "ps": rep(f.surface_air_pressure, 100.0), "insolation": np.full((nt,) + shape3[2:], 300.0),
                  "precipitation": np.full((nt,) + shape3[2:], 3e-5), "evaporation": np.full((nt,) + shape3[2:], 3e-5),
                  **{k: np.zeros(shape3) for k in ("dTdt_phys", "dqdt_phys", "dudt_phys", "dvdt_phys")}}
        return truth_dataset(t0 + 0.25 * np.arange(nt), fields, lat=m.grid.lat, lon=m.grid.lon,
                             sigma=0.5 * (EQ[1:] + EQ[:-1]), sigma_boundaries=EQ)

    out = {}
    for name, warming in (("control", 0.0), ("warm", 4.0)):
        d = tmp_path / name
        d.mkdir()
        ds(8, 60.25, warming).to_zarr(d / "train.zarr", mode="w", consolidated=False)
        ds(5, 62.25, warming).to_zarr(d / "test.zarr", mode="w", consolidated=False)
        out[name] = d
    net = ColumnNet(EQ, width=8, depth=1, key=jax.random.key(0), zero_init=True)
    x = ColumnNet.pack(np.full(8, 270.0), np.full(8, 1e-3), np.ones(8), np.ones(8), 1e5, 300.0, 0.0)
    save_module(tmp_path / "net.eqx", net.with_statistics(x, np.full_like(x, 10.0), np.full(32, 1e-5), 3e-5))
    return out["control"], out["warm"], tmp_path / "net.eqx"


def test_guard_command_quick_path(tmp_path):
    control, warm, net = _truths(tmp_path)
    out = tmp_path / "guard"
    code, err = invoke(root_app(), ["atmos", "guard", "--quick", "--no-progress", "--truth", control, "--shifted",
                                    warm, "--net", net, "--out", out])
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    rates = m["flag_rate"]
    assert rates["held_out"] < 0.1 and rates["shifted"] > 0.9, rates
    assert set(m["runs"]) == {"no guard", "guard, clip fallback"}
    assert all(r["finite"] and len(r["daily_T_rmse_K"]) == 2 for r in m["runs"].values())
    assert (out / "guard.png").exists() and (out / "guard_runs.png").exists()

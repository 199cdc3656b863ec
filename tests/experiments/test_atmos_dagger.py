"""``nemic atmos train --dagger``: settings checked in one line before any work; (slow) one quick round end to end
on a quick jcm truth from the shipped network: the free run's saved states are labelled with SPEEDY's physics and
join the training stores, and the round's network is the result."""

import json

import numpy as np
import pytest
import xarray as xr

from nemic.cli.testing import invoke, root_app
from nemic.core.errors import ConfigError
from nemic.experiments.atmos_climate_run import shipped_dir
from nemic.experiments.atmos_dagger import DaggerConfig, quick_dagger_config, run_dagger
from nemic.experiments.atmos_truth import TruthConfig, generate
from nemic.train.checkpoint import load_module


@pytest.mark.parametrize("bad,match", [
    ({"rounds": 0}, "rounds"),
    ({"coupling": "both"}, "coupling"),
    ({"run_days": 1.0, "snapshot_days": 2.0}, "run_days"),
    ({"perturbed_columns": 0}, "perturbed_columns"),
    ({"snapshot_days": 0.1}, "snapshot_days"),  # not a whole number of the runs' 6-hourly samples
])
def test_bad_settings_are_one_line_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as e:
        DaggerConfig(**bad)
    assert "\n" not in str(e.value)


def test_rounds_draw_from_every_store_with_the_offline_settings():
    cfg = DaggerConfig(width=64, perturbed="/a", perturbed_columns=500)
    off = cfg.offline(["/a", "/r1", "/r2"])
    assert off.perturbed_dirs == ["/a", "/r1", "/r2"] and off.width == 64 and off.perturbed_columns == 500
    run = cfg.run_config("net.eqx")
    assert run.coupling == "split" and run.snapshot_days == 2.0 and run.weights == "net.eqx"


def test_dagger_needs_an_initial_network(tmp_path):
    code, err = invoke(root_app(), ["atmos", "train", "--dagger", "--truth", str(tmp_path), "--out",
                                    str(tmp_path / "d")])
    assert code == 2 and len(err) == 1 and "--init" in err[0]


def test_one_quick_round_end_to_end(tmp_path):
    """Slow (jcm): a 2-day truth on the hybrid's levels, one quick round from the shipped network."""
    generate(TruthConfig(spinup_days=1.0, days=2.0, test_days=1.0, chunk_days=1.0, vertical="equidistant"),
             tmp_path / "truth", progress=False, log=lambda s: None)
    m = run_dagger(quick_dagger_config(), tmp_path / "truth", shipped_dir() / "column_net.eqx", tmp_path / "dag",
                   progress=False, log=lambda s: None)
    (r,) = m["rounds"]
    assert r["blowup"] is None and r["run_days"] == pytest.approx(2.0) and r["states"] == 4
    assert r["stores"] == ["round1/states"]
    with xr.open_zarr(tmp_path / "dag" / "round1" / "states" / "perturbed.zarr", consolidated=False) as s:
        assert s.sizes["time"] == 4 and all(np.all(np.isfinite(s[k].values)) for k in ("dTdt_phys", "precipitation"))
    net = load_module(tmp_path / "dag" / "column_net.eqx", kind="ColumnNet")
    assert net.levels == 8
    assert json.loads((tmp_path / "dag" / "metrics.json").read_text())["rounds"][0]["test_loss"] == r["test_loss"]

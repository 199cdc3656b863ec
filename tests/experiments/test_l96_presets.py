"""Named truth configurations of `nemic l96 stochastic` (terrax's demo configuration beside Wilks 2005's)."""

import json

import pytest

from nemic.cli.testing import invoke, root_app
from nemic.errors import ConfigError
from nemic.experiments.l96_stochastic import L96StochasticConfig, preset


def test_terrax_preset_is_terrax_demo_configuration():
    truth, c_values = preset("terrax")
    cfg = L96StochasticConfig(**truth)
    assert (cfg.K, cfg.J, cfg.h, cfg.b, cfg.F) == (8, 4, 1.0, 3.0, 18.0) and c_values == (5.0,)
    truth, c_values = preset("wilks")
    assert (truth["J"], truth["b"], truth["F"]) == (32, 10.0, 20.0) and c_values == (10.0, 4.0)
    with pytest.raises(ConfigError, match="unknown configuration"):
        preset("terax")


def test_quick_cli_run_with_the_terrax_configuration(tmp_path):
    out = tmp_path / "out"
    status, errors = invoke(root_app(), ["l96", "stochastic", "--config", "terrax", "--quick", "--out", out,
                                         "--no-progress"])
    assert status == 0, errors
    m = json.loads((out / "metrics.json").read_text())
    assert m["c"] == 5.0 and list(m["by_c"]) == ["5"]
    cfg = m["by_c"]["5"]["config"]
    assert (cfg["J"], cfg["b"], cfg["F"], cfg["c"]) == (4, 3.0, 18.0, 5.0)
    assert set(m["closures"]) == {"deterministic_nn", "ar1", "stochastic_nn"}

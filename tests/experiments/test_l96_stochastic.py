"""The stochastic Lorenz-96 recipe: the AR(1) fit of Arnold et al. (2013) on a synthetic series, bad settings, and
(slow) the whole `nemic l96 stochastic --quick` run with every promised output."""

import json

import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.experiments.l96_stochastic import L96StochasticConfig, fit_ar1


def test_ar1_fit_recovers_polynomial_sigma_and_phi():
    rng = np.random.default_rng(0)
    n, k, phi, sigma = 20000, 4, 0.8, 0.5
    r = np.zeros((n, k))
    r[0] = sigma * rng.normal(size=k)
    for i in range(1, n):
        r[i] = phi * r[i - 1] + sigma * np.sqrt(1 - phi**2) * rng.normal(size=k)
    x = rng.normal(size=(n, k)) * 3
    u = 1.0 - 0.5 * x + 0.02 * x**3 + r
    poly, s, p = fit_ar1(x, u, degree=3)
    np.testing.assert_allclose(np.asarray(poly.coeffs), [1.0, -0.5, 0.0, 0.02], atol=0.02)
    assert abs(s - sigma) < 0.02 and abs(p - phi) < 0.02


@pytest.mark.parametrize("kw, msg", [({"n_members": 1}, "n_members"), ({"noise_tau": -1.0}, "noise_tau"),
                                     ({"coarse_dt": 0.0015}, "whole multiple"), ({"crps_members": 1}, "crps")])
def test_bad_settings(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        L96StochasticConfig(**kw)


@pytest.mark.slow  # reason: trains three closures and runs ensembles end to end (~1-2 min on 2 loaded cores)
def test_quick_cli_run_writes_every_output(tmp_path):
    from typer.testing import CliRunner

    from nemic.cli import _register, app

    _register()
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["l96", "stochastic", "--quick", "--c", "10", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    for name in ("deterministic_nn", "ar1", "stochastic_nn"):
        c = m["closures"][name]
        assert set(c["crps"]) == {"0.2", "0.5", "1.0", "2.0"} and set(c["spread_error"]) == set(c["crps"])
        assert all(np.isfinite(v) for v in c["crps"].values()) and 0 <= c["hellinger_x"] <= 1
        assert (out / "c10" / f"ensemble_{name}.nc").is_file()
    for f in ("scores.nc", "crps_vs_lead.png", "spread_error.png", "rank_histograms.png", "pdf_x.png"):
        assert (out / "c10" / f).is_file(), f
    assert (out / "run.json").is_file()
    import xarray as xr

    ds = xr.open_dataset(out / "c10" / "ensemble_ar1.nc")
    assert ds.x.dims == ("member", "time", "k") or ds.x.dims[0] == "member"

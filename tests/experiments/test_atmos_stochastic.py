"""The stochastic hybrid (SPPT on the balanced column physics): a zero pattern gives the deterministic balanced
physics exactly; a pattern multiplies every column output by 1 + e and keeps each column's water budget closed;
the forecast scores against hand-computed CRPS, MAE and spread/error; bad settings are one-line errors; and
(slow) the quick ``nemic atmos train --stochastic`` path end to end on a truth made of the shipped state."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from nemic.core.errors import ConfigError
from nemic.experiments.atmos_climate_fixers import GlobalBalance
from nemic.experiments.atmos_climate_run import load_initial_fields, shipped_dir
from nemic.experiments.atmos_stochastic import SPPTBalance, forecast_scores
from nemic.experiments.atmos_stochastic_run import StochasticConfig
from nemic.models.atmosphere import ColumnPhysics, PackedColumnFunction, PrimitiveEquations
from nemic.models.atmosphere.random_field import SphericalAR1Field
from nemic.nn.column import GRAVITY
from nemic.train.checkpoint import load_module


@pytest.fixture(scope="module")
def setup():
    model = PrimitiveEquations(21, 8, dt=1800.0)
    net = load_module(shipped_dir() / "column_net.eqx", kind="ColumnNet")
    phys = ColumnPhysics(model.grid, PackedColumnFunction(net, 8), insolation="daily", day0=240.0)
    fields, _ = load_initial_fields(None, model)
    return model, phys, model.from_fields(fields)


def test_zero_pattern_is_the_deterministic_balance_and_a_pattern_scales_every_output(setup):
    model, phys, state = setup
    pattern = SphericalAR1Field(model.grid, sigma=0.5, length_km=800.0)
    zero = SPPTBalance(phys, pattern).bind_noise(jnp.zeros(pattern.amplitude.shape))
    a, b = zero.tendency(state, 0.0), GlobalBalance(phys).tendency(state, 0.0)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    psi = pattern.init(jax.random.key(3))
    e = np.asarray(pattern.nodal(psi)).reshape(-1)
    fields, base = phys.columns(state, 0.0)
    _, pert = SPPTBalance(phys, pattern, psi)._columns(state, 0.0)
    for name in ("temperature", "specific_humidity", "eastward_wind", "northward_wind"):
        np.testing.assert_allclose(np.asarray(getattr(pert, name)), (1 + e)[:, None] * np.asarray(getattr(base, name)),
                                   rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(np.asarray(pert.precipitation), (1 + e) * np.asarray(base.precipitation), rtol=1e-6)
    # each column's water budget: sum_k dq/dt_k p_s dsigma_k / g = E - P
    ps = np.asarray(fields.surface_air_pressure).reshape(-1)
    water = (np.asarray(pert.specific_humidity) * model.grid.layer_thickness).sum(-1) * ps / GRAVITY
    np.testing.assert_allclose(water, np.asarray(pert.evaporation) - np.asarray(pert.precipitation),
                               atol=1e-5 * float(np.abs(pert.evaporation).max()))
    assert SPPTBalance(phys, pattern).stochastic and not GlobalBalance(phys).stochastic
    with pytest.raises(ConfigError, match="key"):
        SPPTBalance(phys, pattern).tendency(state, 0.0)


def test_forecast_scores_against_hand_computed_values():
    y = np.array([[[0.0, 1.0]], [[2.0, 2.0]]])  # (start, lead, point): 2 starts, 1 lead, 2 points
    ens = np.stack([y - 1.0, y + 1.0], axis=1)  # (start, member, lead, point): members at y -+ 1
    det = (y + 0.5)[:, None]
    s = forecast_scores({"T": ens}, {"T": det}, {"T": y})["T"]
    # CRPS of two members at y -+ 1: mean |x - y| = 1, minus sum |xi - xj| / (2 M^2) = 4 / 8 -> 0.5
    assert s["crps"] == pytest.approx([0.5]) and s["mae"] == pytest.approx([0.5])
    assert s["crps_over_mae"] == pytest.approx([1.0]) and s["rmse_mean"] == pytest.approx([0.0], abs=1e-12)
    ens2 = np.stack([y, y + 2.0], axis=1)  # mean y + 1: error 1, unbiased variance 2 -> sqrt(3/2 * 2) / 1
    assert forecast_scores({"T": ens2}, {"T": det}, {"T": y})["T"]["spread_error"] == pytest.approx([np.sqrt(3.0)])


@pytest.mark.parametrize("kw", [{"sigmas": ()}, {"sigmas": (0.0,)}, {"members": 1}, {"fit_days": 3.0}])
def test_bad_stochastic_settings_are_one_line_errors(kw):
    with pytest.raises(ConfigError) as e:
        StochasticConfig(**kw)
    assert "\n" not in str(e.value)


def test_quick_stochastic_command_end_to_end(tmp_path):
    """Slow: a truth of 3 days made of the shipped state (persistence as the reference), the quick setting."""
    from nemic.cli.testing import invoke, root_app
    from nemic.data.atmosphere.dataset import truth_dataset

    init = xr.open_dataset(shipped_dir() / "initial_state.nc", decode_times=False)
    n = 13
    f = {k: np.repeat(init[k].values, n, axis=0) for k in ("T", "u", "v", "q", "ps")}
    zeros4, zeros3 = np.zeros_like(f["T"]), np.zeros_like(f["ps"])
    f.update({"dTdt_phys": zeros4, "dqdt_phys": zeros4, "dudt_phys": zeros4, "dvdt_phys": zeros4,
              "precipitation": zeros3, "evaporation": zeros3, "insolation": zeros3 + 300.0})
    bounds = init["level_bounds"].values
    sb = np.concatenate([bounds[:, 0], bounds[-1:, 1]])
    truth = tmp_path / "truth"
    truth.mkdir()
    for split, t0 in (("train", 240.25), ("test", 300.0)):
        ds = truth_dataset(t0 + 0.25 * np.arange(n), f, lat=init["lat"].values, lon=init["lon"].values,
                           sigma=init["level"].values, sigma_boundaries=sb)
        ds.to_zarr(truth / f"{split}.zarr", mode="w", consolidated=False)
    code, err = invoke(root_app(), ["atmos", "train", "--stochastic", "--quick", "--truth", str(truth), "--init",
                                    str(shipped_dir() / "column_net.eqx"), "--out", str(tmp_path / "st")])
    assert code == 0, err
    m = json.loads((tmp_path / "st" / "metrics.json").read_text())
    assert m["sigma"] == 0.5 and set(m["test"]) == {"T", "u", "q", "ps"}
    for v in m["test"].values():
        assert np.isfinite(v["crps"][0]) and v["crps"][0] > 0 and v["spread_error"][0] > 0
    assert (tmp_path / "st" / "stochastic.png").exists() and (tmp_path / "st" / "sppt.json").exists()

"""EBM calibration recovers known parameters from noisy synthetic targets and names what Ts alone cannot separate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.experiments import ebm as X
from nemic.models.ebm import DiffusiveEBM


@pytest.mark.slow
def test_lbfgs_and_eki_recover_A_B_D_a0_within_cramer_rao_bounds():
    # a coarse grid needs a wide albedo transition: with 20 cells and a 2 K width the misfit is rugged (each cell's
    # albedo switches separately) and L-BFGS can stall in a local dip
    truth = DiffusiveEBM(20, albedo_width=4.0)
    r = X.calibrate_ebm(truth, ["A", "B", "D", "a0"], years=8, methods=("lbfgs", "eki"), lbfgs_steps=40,
                        eki_members=32, eki_iter=10, key=jax.random.PRNGKey(7))
    cr = r["identifiability"]["cramer_rao_std"]
    for method in ("lbfgs", "eki"):
        res = r["methods"][method]
        for name in ("A", "B", "D", "a0"):
            err = res["estimate"][name] - r["truth"][name]
            assert abs(err) < 4 * cr[name], (method, name, err, cr[name])
        assert res["max_abs_relative_error"] < 0.05
        # the fit is as good as the truth itself given the noise (loss per observation ~ 1/2)
        assert res["final_loss"] <= r["loss_at_truth"] + 1e-3
    assert r["methods"]["eki"]["n_forward"] == 32 * 10 and r["methods"]["eki"]["n_gradient"] == 0
    # with Ts and OLR every parameter is identified; from Ts alone, A, B and D cannot be separated
    assert r["identifiability"]["poorly_identified"] == []
    ts_only = r["identifiability_Ts_only"]
    assert {"A", "B", "D"} <= set(ts_only["poorly_identified"])
    assert any({p[0], p[1]} == {"A", "D"} for p in ts_only["inseparable_pairs"])
    assert ts_only["condition_number"] > 10 * r["identifiability"]["condition_number"]


def test_ts_alone_cannot_separate_A_B_D_but_ts_and_olr_can():
    """Fast check of the identifiability analysis on a small grid (the full recovery test is marked slow)."""
    from nemic.train.calibration import identifiability

    m = DiffusiveEBM(12, albedo_width=4.0)
    names = ["A", "B", "D", "a0"]
    f_both, sc = X.ebm_forward(m, names, targets=("Ts", "OLR"), years=6)
    f_ts, _ = X.ebm_forward(m, names, targets=("Ts",), years=6)
    sigma = np.r_[np.full(12, 0.3), np.full(12, 1.0)]
    both = identifiability(f_both, np.ones(4), sigma, names)
    ts = identifiability(f_ts, np.ones(4), 0.3, names)
    assert both["poorly_identified"] == [] and {"A", "B", "D"} <= set(ts["poorly_identified"])
    assert ts["condition_number"] > 10 * both["condition_number"]
    # the Jacobian is the derivative of the forward map: compare one column with central differences
    e = np.zeros(4)
    e[2] = 1e-5
    fd = (np.asarray(f_ts(jnp.ones(4) + e)) - np.asarray(f_ts(jnp.ones(4) - e))) / 2e-5
    assert np.allclose(np.asarray(jax.jacfwd(f_ts)(jnp.ones(4)))[:, 2], fd, rtol=1e-5, atol=1e-7)


def test_bad_calibration_setups():
    m = DiffusiveEBM(10)
    with pytest.raises(ConfigError, match="subset"):
        X.ebm_forward(m, ["K"])
    with pytest.raises(ConfigError, match="targets"):
        X.ebm_forward(m, ["A"], targets=("precip",))
    with pytest.raises(ConfigError, match="daily"):
        X.ebm_forward(m, ["A"], targets=("Ts_seasonal",))
    np.testing.assert_equal(X.ebm_forward(m, ["A"], years=1)[1], [210.0])

"""The downscaling recipe: its scores on perfect and known-bad predictions, the must-show checks, settings
checks, and (slow) the whole ``nemic downscale train --quick`` / ``evaluate`` / ``sample`` path on the shipped
OPERA sample, and the shipped weights."""

import json

import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.experiments.downscaling import DownscalingConfig, evenly, latent_scale_of
from nemic.experiments.downscaling_eval import checks, score

THR = (0.1, 1.0, 5.0)


def fields(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.gamma(0.4, 6.0, (n, size, size))
    return np.where(f < 0.1, 0.0, f)


def test_scores_of_a_perfect_forecast_and_ensemble():
    truth = fields()
    s = score({"perfect": truth, "ens": np.stack([truth, truth])}, truth, THR)
    for name in ("perfect", "ens"):
        assert s[name]["mae"] == 0.0 and s[name]["rapsd_error"] == 0.0 and s[name]["minkowski_distance"] == 0.0
        assert s[name]["fss_5mm_9px"] == 1.0 and s[name]["csi_1mm"] == 1.0
    assert s["ens"]["crps"] == 0.0
    # an ensemble of two fields: CRPS at each pixel = (|a - y| + |b - y|)/2 - |a - b|/4 (energy form, by hand)
    a, b = fields(seed=1), fields(seed=2)
    got = score({"ens": np.stack([a, b])}, truth, THR)["ens"]
    want = np.mean((np.abs(a - truth) + np.abs(b - truth)) / 2 - np.abs(a - b) / 4)
    np.testing.assert_allclose(got["crps"], want, rtol=1e-5)
    np.testing.assert_allclose(got["mae"], np.mean(np.abs((a + b) / 2 - truth)), rtol=1e-5)


def test_must_show_checks():
    base = {"mae": 1.0, "fss_5mm_9px": 0.3, "rapsd_error": 0.5, "minkowski_distance": 0.4}
    better = {"mae": 1.04, "fss_5mm_9px": 0.4, "rapsd_error": 0.3, "minkowski_distance": 0.2}
    gen = {"mae": 1.2, "fss_5mm_9px": 0.2, "rapsd_error": 0.1, "minkowski_distance": 0.1, "crps": 0.9,
           "spread_error": 1.4}
    c = checks({"mse": base, "mse_minkowski_relaxed": better, "generative": gen})
    assert c["mse_minkowski_relaxed"]["mae_within_5pct"] and c["mse_minkowski_relaxed"]["beats_mse_fss_5mm_9px"]
    assert c["generative"]["beats_deterministic_rapsd_error"]
    assert c["generative"]["crps_below_deterministic_mae"]
    assert not c["generative"]["spread_error_in_0.7_1.3"]


def test_validation_selection_of_the_minkowski_weight():
    from nemic.experiments.downscaling_train import selection_key

    cfg = DownscalingConfig()
    ref = {"mae": 1.0, "fss_5mm_9px": 0.5, "rapsd_error": 1.0, "minkowski_distance": 0.5}
    all_four = {"mae": 1.04, "fss_5mm_9px": 0.55, "rapsd_error": 0.8, "minkowski_distance": 0.45}
    # three conditions, a larger gain: (0.6/0.5 - 1 + 1 - 0.5 + 1 - 0.3/0.5) / 3 = 0.3667
    three = {"mae": 1.2, "fss_5mm_9px": 0.6, "rapsd_error": 0.5, "minkowski_distance": 0.3}
    assert selection_key(all_four, ref, cfg) == (4, pytest.approx((0.1 + 0.2 + 0.1) / 3))
    assert selection_key(three, ref, cfg) == (3, pytest.approx(1.1 / 3))
    assert max([three, all_four], key=lambda s: selection_key(s, ref, cfg)) is all_four
    assert selection_key(ref, ref, cfg) == (1, 0.0)  # only the MAE condition (<= 1.05 x) holds for a tie


def test_validation_rule_of_the_sampler_setting():
    from nemic.experiments.downscaling_train import choose_sampler

    def c(sigma, eps, r, md):
        return {"noise_scale": sigma, "sde_noise": eps, "spread_error": r, "minkowski_distance": md}

    # the old rule (closest to 1) would keep the speckled wide-noise ensemble; the structure rule keeps the
    # smallest Minkowski distance among the settings whose spread/error lies in [0.8, 1.2]
    narrow, sde, wide, speckled = c(1.0, 0.0, 0.73, 0.40), c(1.0, 1.0, 0.85, 0.45), c(1.5, 1.0, 1.18, 0.60), \
        c(2.5, 0.0, 1.02, 3.9)
    assert choose_sampler([narrow, sde, wide, speckled]) is sde
    assert choose_sampler([narrow, wide, speckled]) is wide
    # the band's edges count as inside; ties in the distance go to the smaller noise scale, then sde noise
    edge = c(1.0, 0.5, 0.8, 0.45)
    assert choose_sampler([edge, sde]) is edge and choose_sampler([sde, edge]) is edge
    assert choose_sampler([narrow, c(1.0, 0.5, 1.2, 0.9)], band=(0.8, 1.2))["sde_noise"] == 0.5
    # none inside the band: spread/error closest to 1 in ratio (0.6 -> |log 0.6| = 0.51 > |log 1.5| = 0.41)
    assert choose_sampler([c(1.0, 0.0, 0.6, 0.3), c(3.0, 0.0, 1.5, 5.0)])["noise_scale"] == 3.0
    # a wider band admits the narrow ensemble with the better structure
    assert choose_sampler([narrow, sde, wide], band=(0.7, 1.3)) is narrow
    # more sampling steps as a setting: the in-band one wins; on a tie of everything else, fewer steps
    steps8, steps16 = {**narrow, "n_steps": 8}, {**narrow, "n_steps": 16, "spread_error": 0.81}
    assert choose_sampler([steps8, steps16]) is steps16
    assert choose_sampler([{**steps16, "n_steps": 32}, steps16]) is steps16
    with pytest.raises(ConfigError):
        choose_sampler([])


def test_settings():
    assert DownscalingConfig().patch_size == 120 and DownscalingConfig(factor=16).patch_size == 128
    for bad in ({"factor": 12}, {"factor": 10, "patch": 128}, {"models": ("mse", "gan")}, {"members": 1},
                {"thresholds": (1.0, 0.5)}, {"solver": "rk4"}, {"val_fraction": 1.0}, {"surrogate_version": 3},
                {"noise_scales": ()}, {"noise_scales": (1.0, 0.0)}, {"minkowski_weights": (5.0, -1.0)},
                {"pretrain_steps": -1}, {"sde_noises": ()}, {"sde_noises": (0.0, -1.0)}, {"spread_band": (1.1, 1.3)},
                {"spread_band": (0.8,)}, {"sampler_steps": (8, 0)}):
        with pytest.raises(ConfigError):
            DownscalingConfig(**bad)
    assert list(evenly(10, 3)) == [0, 4, 9] and list(evenly(2, 5)) == [0, 1]
    # latent scale: std of log(1 + R) - log(1 + block mean), here a field constant on its blocks gives the floor
    block = np.repeat(np.repeat(fields(1, 4), 8, -2), 8, -1)
    assert latent_scale_of(block, 8) == 0.001


def test_quick_cli_train_evaluate_sample(tmp_path):
    from nemic.cli.testing import invoke, root_app

    app = root_app()
    out = tmp_path / "run"
    code, lines = invoke(app, ["downscale", "train", "--quick", "--no-progress", "--out", out])
    assert code == 0, lines
    m = json.loads((out / "metrics.json").read_text())
    for name in ("mse", "mse_minkowski_relaxed", "mse_minkowski_surrogate", "generative", "generative_minkowski"):
        assert {"fss_5mm_9px", "rapsd_error", "minkowski_distance", "mae"} <= set(m["models"][name])
    assert {"crps", "spread_error"} <= set(m["models"]["generative"])
    # the sampler calibration scored the 2 x 2 settings of the quick config on validation and kept one of them
    rec = json.loads((out / "weights" / "training_report.json").read_text())["training"]["generative"]
    assert len(rec["sampler_validation"]) == 4
    assert (rec["noise_scale"], rec["sde_noise"]) in {(1.0, 0.0), (1.0, 1.0), (1.5, 0.0), (1.5, 1.0)}
    for f in ("predictions.nc", "cases.png", "rapsd.png", "fss_scales.png", "minkowski_curves.png", "training.png",
              "weights/mse.eqx", "weights/generative.eqx", "weights/training_report.json"):
        assert (out / f).is_file(), f
    ev = tmp_path / "eval"
    code, lines = invoke(app, ["downscale", "evaluate", "--weights", out / "weights", "--out", ev, "--no-progress"])
    assert code == 0, lines
    assert set(json.loads((ev / "metrics.json").read_text())["models"]) >= {"mse", "generative"}
    code, lines = invoke(app, ["downscale", "sample", "--weights", out / "weights", "--out", tmp_path / "s",
                               "--members", "2"])
    assert code == 0, lines
    assert (tmp_path / "s" / "sample.nc").is_file() and (tmp_path / "s" / "sample.png").is_file()


def test_shipped_weights_evaluate_out_of_the_box(tmp_path):
    from nemic.cli.testing import invoke, root_app
    code, lines = invoke(root_app(), ["downscale", "evaluate", "--out", tmp_path / "e", "--no-progress",
                                      "--members", "2", "--max-patches", "2"])
    assert code == 0, lines
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert any("minkowski" in k for k in m["models"]) and any("generative" in k for k in m["models"])

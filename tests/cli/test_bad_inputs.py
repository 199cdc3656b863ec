"""Bad inputs, as a hostile user would try them, for every command except ``nemic qg`` (issue 11).

Each case asserts the exit status, that the user sees ONE line naming the problem, and that an existing results
directory given as ``--out`` is unchanged byte for byte (and mode for mode) afterwards. Commands run in-process
(``typer``'s CliRunner, errors turned into the line ``nemic.cli.main`` prints by ``nemic.cli.describe_error``);
a few run as real subprocesses to check the real exit status and stderr. Every case fails in its validation
stage, before any heavy work, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import nemic.cli as cli
from nemic.cli.testing import invoke, root_app, snapshot


# ---------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def app():
    return root_app()


@pytest.fixture(scope="module")
def results(app, tmp_path_factory):
    """An existing results directory: a tiny successful ``nemic ebm run`` (a few seconds), and its snapshot."""
    out = tmp_path_factory.mktemp("existing") / "results"
    r = CliRunner().invoke(app, ["ebm", "run", "--out", str(out), "--num-lat", "12"])
    assert r.exit_code == 0, r.output
    snap = snapshot(out)
    assert {"run.json", "equilibrium.nc", "co2.nc", "summary.json", "ebm.png"} <= set(snap)
    return out, snap


def check(app, results, args, words, status=2):
    """``nemic ARGS`` exits with ``status``, shows one error line containing every one of ``words``, and leaves
    the existing results directory exactly as it was."""
    out, snap = results
    args = [a.replace("{OUT}", str(out)) if isinstance(a, str) else a for a in args]
    code, lines = invoke(app, args)
    assert code == status, (code, lines)
    assert len(lines) == 1, lines
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert "Traceback" not in lines[0]
    assert snapshot(out) == snap, "the existing results directory changed"


# ---------------------------------------------------------------------------------------------------- data files
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    good = np.zeros((2, 64, 64))
    good[:, 10:40, 10:40] = 2.0

    def nc(name, data, dims=("time", "y", "x"), units="mm h-1"):
        ds = xr.Dataset({"rain_rate": (dims, data, {"units": units})})
        ds.to_netcdf(d / name)
        return d / name

    inf = good.copy()
    inf[0, 5, 5] = np.inf
    neg = good.copy()
    neg[0, 3, 3] = -1.0
    paths = {
        "inf": nc("inf.nc", inf),
        "negative": nc("negative.nc", neg),
        "dims4": nc("dims4.nc", good[..., None], dims=("time", "y", "x", "band")),
        "dims_order": nc("order.nc", np.moveaxis(good, 0, -1), dims=("y", "x", "time")),
        "units": nc("units.nc", good, units="K"),
        "dir": d,
    }
    text = d / "notes.txt"
    text.write_text("not radar data\n")
    paths["text"] = text
    import h5py

    odim = d / "odim_groups.h5"
    with h5py.File(odim, "w") as h5:
        h5.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_3")
        h5.create_group("what")
        h5.create_group("where")
        g = h5.create_group("scan1/data1")  # not datasetN
        g.create_dataset("data", data=np.zeros((8, 8), np.uint16))
    paths["odim_groups"] = odim
    odim2 = d / "odim_gain.h5"
    with h5py.File(odim2, "w") as h5:
        h5.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_3")
        h5.create_group("what")
        h5.create_group("where")
        g = h5.create_group("dataset1/data1")
        w = g.create_group("what")
        w.attrs["quantity"] = np.bytes_("RATE")
        w.attrs["gain"] = np.nan
        g.create_dataset("data", data=np.zeros((8, 8), np.uint16))
        h5.create_group("dataset1/quality1")  # a name beside data1 that is not dataN: ignored
    paths["odim_gain"] = odim2
    binary = d / "config.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    paths["binary"] = binary
    return paths


def cfg(tmp_path, text, suffix=".toml"):
    p = tmp_path / f"config{suffix}"
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------------- ebm
@pytest.mark.parametrize("args, words", [
    (["--num-lat", "1"], ["--num-lat", ">= 2"]),
    (["--num-lat", "100000000000"], ["--num-lat", "at most"]),
    (["--co2-ratio", "0"], ["co2-ratio", "> 0"]),
    (["--co2-ratio", "-2"], ["co2-ratio"]),
    (["--co2-ratio", "nan"], ["co2-ratio", "finite"]),
    (["--years", "1e9"], ["years", "steps"]),
    (["--years", "-1"], ["years", ">= 0"]),
    (["--years", "inf"], ["years", "finite"]),
    (["--S0", "nan"], ["S0", "finite"]),
    (["--A", "inf"], ["A", "finite"]),
    (["--D", "-1"], ["D"]),
    (["--water-depth", "0"], ["water-depth", "> 0"]),
    (["--grid", "hex"], ["grid", "lat, sin"]),
    (["--insolation", "weekly"], ["insolation", "p2"]),
    (["--S0", "1300", "--co2-ratio", "0"], ["co2-ratio"]),  # the mixed-results case
])
def test_ebm_run(app, results, args, words):
    check(app, results, ["ebm", "run", "--out", "{OUT}", *args], words)


@pytest.mark.parametrize("args, words", [
    (["--s0-min", "1300", "--s0-max", "1200"], ["s0_max >= s0_min"]),
    (["--s0-step", "0"], ["s0-step", "> 0"]),
    (["--s0-step", "nan"], ["s0-step", "finite"]),
    (["--s0-step", "1e-6"], ["values of S0", "at most"]),
    (["--years-per-value", "0"], ["years-per-value"]),
    (["--years-per-value", "1e12"], ["steps"]),
    (["--num-lat", "0"], ["--num-lat"]),
    (["--grid", "square"], ["grid"]),
])
def test_ebm_hysteresis(app, results, args, words):
    check(app, results, ["ebm", "hysteresis", "--out", "{OUT}", *args], words)


@pytest.mark.parametrize("args, words", [
    (["--params", "A,K"], ["--params", "K"]),
    (["--params", ","], ["--params", "at least one"]),
    (["--params", "A,A"], ["twice"]),
    (["--targets", "Ts,SST"], ["--targets", "SST"]),
    (["--methods", "adam,sgd"], ["--methods", "sgd"]),
    (["--years", "0"], ["--years", "> 0"]),
    (["--guess-factor", "-1"], ["guess-factor"]),
    (["--noise-ts", "nan"], ["noise-ts", "finite"]),
    (["--seed", "-1"], ["--seed", ">= 0"]),
])
def test_ebm_calibrate(app, results, args, words):
    check(app, results, ["ebm", "calibrate", "--out", "{OUT}", *args], words)


@pytest.mark.parametrize("args, words", [
    (["--learning-rate", "nan"], ["learning-rate", "finite"]),  # was: NaN weights saved, exit 0
    (["--learning-rate", "0"], ["learning-rate", "> 0"]),
    (["--steps", "0"], ["--steps", ">= 1"]),
    (["--horizon-days", "0"], ["horizon-days"]),
    (["--horizon-days", "1e6"], ["horizon-days", "at most"]),
    (["--moist-D", "-0.3"], ["moist-D"]),
    (["--num-lat", "3"], ["--num-lat", ">= 4"]),
    (["--seed", "1.5"], ["seed"]),  # a usage error: Typer's one "Error:" line names the option
])
def test_ebm_hybrid(app, results, args, words):
    check(app, results, ["ebm", "hybrid", "--out", "{OUT}", *args], words)


# ---------------------------------------------------------------------------------------------------- quickstart
@pytest.mark.parametrize("text, words", [
    ("seed = 1.5", ["seed", "integer"]),
    ('K = "eight"', ["K", "integer"]),
    ("online_curriculum = [[0, 10]]", ["online_curriculum", "rollout_saves >= 1"]),
    ("online_curriculum = []", ["online_curriculum", "non-empty"]),
    ("online_curriculum = [[100000, 10]]", ["online_curriculum", "training states"]),
    ("online_curriculum = [[2.5, 10]]", ["online_curriculum"]),
    ("online_curriculum = 5", ["online_curriculum", "list"]),
    ("offline_lr = nan", ["offline_lr", "finite"]),
    ("truth_dt = -0.001", ["truth_dt", "> 0"]),
    ("coarse_dt = 0.0033", ["whole multiple"]),
    ("train_time = 1e12", ["memory"]),
    ("max_lead = 1000.0", ["test_time", "too short"]),
    ("online = true", ["unknown config key", "online"]),
    ("K = 8\nK = 9", ["not valid TOML"]),
    ("acf_max_lag = 500.0", ["acf_max_lag"]),
    ("nn_halfwidth = -1", ["nn_halfwidth"]),
])
def test_quickstart_config(app, results, tmp_path, text, words):
    check(app, results, ["quickstart", "--out", "{OUT}", "--no-progress", "--config", cfg(tmp_path, text)], words)


def test_quickstart_config_files(app, results, files, tmp_path):
    check(app, results, ["quickstart", "--out", "{OUT}", "--config", files["dir"]], ["is a directory"])
    check(app, results, ["quickstart", "--out", "{OUT}", "--config", files["binary"]], ["binary"])
    check(app, results, ["quickstart", "--out", "{OUT}", "--config", tmp_path / "nope.toml"], ["does not exist"])
    check(app, results, ["quickstart", "--out", "{OUT}", "--config", cfg(tmp_path, "[1, 2]", ".json")],
          ["table of settings"])
    check(app, results, ["quickstart", "--out", "{OUT}", "--seed", "1.5"], ["--seed"])


def test_quickstart_out_is_a_file(app, results, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    check(app, results, ["quickstart", "--out", blocker, "--no-progress"], ["not a directory"])
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------------------------------------------- nudging
@pytest.mark.parametrize("args, words", [
    (["l96", "--small", "--tau", "0"], ["tau", "> 0"]),
    (["l96", "--small", "--tau", "nan"], ["tau", "finite"]),
    (["l96", "--small", "--tau", "0.001"], ["tau", "2 coarse_dt"]),
    (["l96", "--small", "--seed", "-3"], ["seed", ">= 0"]),
    (["ebm", "--tau-days", "0"], ["tau_days"]),
    (["ebm", "--years", "1e9"], ["years", "steps"]),
    (["ebm", "--free-years", "nan"], ["free_years", "finite"]),
    (["ebm", "--num-lat", "3"], ["num_lat"]),
    (["ebm", "--num-lat", "1e11"], ["--num-lat"]),
])
def test_nudging(app, results, args, words):
    check(app, results, ["nudging", *args[:1], "--out", "{OUT}", *args[1:]], words)


def test_nudging_l96_config_directory(app, results, files):
    check(app, results, ["nudging", "l96", "--small", "--out", "{OUT}", "--config", files["dir"]],
          ["is a directory"])


# ---------------------------------------------------------------------------------------------------- minkowski
@pytest.mark.parametrize("args, words", [
    (["--window", "0:256:0"], ["window", "y0:y1,x0:x1"]),
    (["--window", "10:5,0:10"], ["window", "start < stop"]),
    (["--window", "0:10"], ["window"]),
    (["--window", "0:999,0:10"], ["window", "past the frame"]),
    (["--frame", "99"], ["frame", "[0, 6)"]),
    (["--thresholds", "a,b"], ["thresholds", "numbers"]),
    (["--thresholds", "2,0.5"], ["thresholds", "increasing"]),
    (["--thresholds", "nan"], ["thresholds", "finite"]),
    (["--connectivity", "6"], ["connectivity", "4 or 8"]),
])
def test_minkowski_measures(app, results, args, words):
    check(app, results, ["minkowski", "measures", *args], words)


@pytest.mark.parametrize("name, words", [
    ("inf", ["infinite"]),
    ("negative", ["negative"]),
    ("dims4", ["(time, y, x)", "band"]),
    ("dims_order", ["(time, y, x)"]),
    ("units", ["units", "mm h-1"]),
    ("dir", ["is a directory"]),
    ("text", ["neither ODIM-HDF5 nor netCDF"]),
    ("odim_groups", ["dataset1", "scan1"]),
    ("odim_gain", ["gain"]),
])
def test_minkowski_measures_bad_files(app, results, files, name, words):
    check(app, results, ["minkowski", "measures", files[name]], words)


@pytest.mark.parametrize("args, words", [
    (["--lr", "nan"], ["--lr", "finite"]),  # was: NaN thresholds saved, exit 0
    (["--lr", "-1"], ["--lr", "> 0"]),
    (["--steps", "0"], ["--steps", ">= 1"]),
    (["--patch", "30", "--factor", "4"], ["--patch", "multiple", "--factor"]),
    (["--train-fraction", "1.5"], ["train-fraction"]),
    (["--min-wet", "2"], ["min-wet"]),
    (["--max-patches", "1"], ["max-patches"]),
    (["--n-thresholds", "0"], ["n-thresholds"]),
])
def test_minkowski_train_surrogate(app, results, args, words):
    check(app, results, ["minkowski", "train-surrogate", "--out", "{OUT}", *args], words)


@pytest.mark.parametrize("name, words", [("inf", ["infinite"]), ("dims4", ["(time, y, x)"]),
                                         ("text", ["neither"])])
def test_minkowski_train_surrogate_bad_data(app, results, files, name, words):
    check(app, results, ["minkowski", "train-surrogate", "--out", "{OUT}", "--data", files[name], "--patch", "16",
                         "--stride", "16", "--steps", "2"], words)


# ---------------------------------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("args, words", [
    (["ebm", "run", "--out", "{OUT}", "--co2-ratio", "0"], ["co2-ratio"]),
    (["ebm", "hybrid", "--out", "{OUT}", "--learning-rate", "nan"], ["learning-rate"]),
    (["minkowski", "measures", "--window", "0:256:0"], ["window"]),
])
def test_subprocess_exit_status_and_one_line(results, args, words):
    out, snap = results
    p = subprocess.run([sys.executable, "-m", "nemic.cli", *[a.replace("{OUT}", str(out)) for a in args]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert snapshot(out) == snap


# ---------------------------------------------------------------------------------------------------- the API
def _api_cases():
    import jax.numpy as jnp

    from nemic.experiments.config import from_dict
    from nemic.experiments.l96_closure import L96ClosureConfig
    from nemic.experiments.nudging_ebm import NudgingEBMConfig
    from nemic.metrics.climate import autocorrelation, hellinger_distance
    from nemic.metrics.minkowski.loss import MinkowskiLoss
    from nemic.metrics.minkowski.surrogate import constraint_violations, r2_scores
    from nemic.metrics.skill import forecast_rmse, rmse, skill_lost_lead_time

    nan2 = np.array([[1.0, np.nan], [0.0, 1.0]])
    x = np.arange(10.0)
    field = np.ones((8, 8))
    field[2, 2] = np.nan
    return [
        ("hellinger NaN", lambda: hellinger_distance(x, [np.nan, 1.0]), "samples_b"),
        ("hellinger inf", lambda: hellinger_distance([np.inf], x), "samples_a"),
        ("hellinger empty", lambda: hellinger_distance([], x), "at least one"),
        ("autocorrelation NaN", lambda: autocorrelation(np.r_[x, np.nan], 2), "NaN/inf"),
        ("autocorrelation lag", lambda: autocorrelation(x, -1), "max_lag"),
        ("rmse NaN", lambda: rmse(jnp.asarray(nan2), jnp.zeros((2, 2))), "forecast"),
        ("forecast_rmse NaN", lambda: forecast_rmse(jnp.zeros((2, 2)), jnp.asarray(nan2)), "truths"),
        ("forecast_rmse shapes", lambda: forecast_rmse(jnp.ones((3, 4)), jnp.ones((3, 5))), "equal shapes"),
        ("skill_lost NaN", lambda: skill_lost_lead_time([0, 1], [0.0, np.nan], 1.0), "finite"),
        ("r2 NaN", lambda: r2_scores(nan2, np.ones((2, 2))), "pred"),
        ("violations NaN", lambda: constraint_violations(np.full((2, 4, 3), np.nan), 64), "measures"),
        ("relaxed loss NaN", lambda: MinkowskiLoss([0.5, 1.0])(jnp.asarray(field), jnp.ones((8, 8))),
         "prediction"),
        ("L96 seed 1.5", lambda: from_dict(L96ClosureConfig, {"seed": 1.5}), "integer"),
        ("L96 curriculum", lambda: L96ClosureConfig(online_curriculum=((0, 5),)), "online_curriculum"),
        ("nudging EBM years", lambda: NudgingEBMConfig(years=1e9), "steps"),
        ("config not a table", lambda: from_dict(L96ClosureConfig, [1, 2]), "table"),
    ]


@pytest.mark.parametrize("case", range(16))
def test_api_one_line_errors(case):
    from nemic.errors import NemicError

    name, fn, words = _api_cases()[case]
    with pytest.raises(NemicError) as e:
        fn()
    msg, status = cli.describe_error(e.value)
    assert status == 2 and "\n" not in str(e.value) and words.lower() in msg.lower(), (name, msg)


def test_surrogate_training_refuses_nan_settings_and_data():
    import jax

    from nemic.errors import ConfigError, DataError
    from nemic.nn.minkowski_surrogate import MinkowskiSurrogate
    from nemic.train.surrogate import train_surrogate

    m = MinkowskiSurrogate(np.array([0.5, 1.0]), channels=4, blocks=1, constrained=False, key=jax.random.PRNGKey(0))
    x = np.ones((4, 8, 8))
    y = np.ones((4, 4, 2))
    with pytest.raises(ConfigError, match="learning_rate"):
        train_surrogate(m, x, y, steps=2, learning_rate=float("nan"), key=jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="steps"):
        train_surrogate(m, x, y, steps=0, key=jax.random.PRNGKey(0))
    x[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        train_surrogate(m, x, y, steps=2, key=jax.random.PRNGKey(0))
    with pytest.raises(DataError, match="NaN"):  # the learned surrogate itself
        m(x[0])


# ---------------------------------------------------------------------------------------------------- staged runs
def test_a_directory_of_other_files_is_never_replaced(app, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    code, lines = invoke(app, ["ebm", "run", "--out", home, "--num-lat", "4"])
    assert code == 2 and len(lines) == 1 and "not empty" in lines[0] and "run.json" in lines[0], lines
    assert (home / "thesis.tex").read_text() == "years of work" and len(list(home.iterdir())) == 1


def test_staged_run_keeps_checkpoints_of_a_failed_run_and_drops_its_other_files(tmp_path):
    from nemic.experiments.config import staged_run
    from nemic.io.runs import is_finished_run, staging_dir

    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with staged_run(out, "test", {"a": 1}) as stage:
            (stage / "checkpoints").mkdir()
            (stage / "checkpoints" / "fit.ckpt").write_text("step 7")
            (stage / "half_written.nc").write_text("partial")
            raise RuntimeError("killed")
    assert not out.exists() and (staging_dir(out) / "checkpoints" / "fit.ckpt").exists()
    with staged_run(out, "test", {"a": 1}) as stage:
        assert (stage / "checkpoints" / "fit.ckpt").read_text() == "step 7"  # a rerun resumes from it
        assert not (stage / "half_written.nc").exists()  # a failed run's files never join the new results
        (stage / "result.json").write_text("{}")
    assert is_finished_run(out) and sorted(p.name for p in out.iterdir()) == ["result.json", "run.json"]
    assert not staging_dir(out).exists()

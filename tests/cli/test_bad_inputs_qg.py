"""Bad inputs to ``nemic qg generate | train | evaluate | table`` and ``nemic nudging qg`` (issue 11).

Each case asserts the exit status, that the user sees ONE line naming the problem, and that an existing results
directory given as ``--out`` is unchanged byte for byte (and mode for mode) afterwards. The results directory is
the smallest successful ``nemic qg generate`` (16 -> 8 points, 8 steps: a few seconds, mostly compilation); it is
also the (finite) data of the train/evaluate cases. Commands run in-process (typer's CliRunner, errors turned into
the line ``nemic.cli.main`` prints by ``nemic.cli.describe_error``); one runs as a real subprocess. Every case
fails in its validation stage, before any heavy work, except two that fail inside the run (a simulated crash) to
show that the staged write leaves the earlier results as they were.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from nemic.cli.testing import invoke, root_app, snapshot

YEARS_8_STEPS = str(8 * 3600 / (360 * 86400))  # 8 steps of 3600 s


@pytest.fixture(autouse=True)
def _keep_x64():
    """The commands set jax's float64 flag (``--float64``); give the next test the flag it had."""
    import jax

    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(scope="module")
def app():
    return root_app()


@pytest.fixture(scope="module")
def results(app, tmp_path_factory):
    """An existing results directory: the smallest successful ``nemic qg generate``, and its snapshot."""
    out = tmp_path_factory.mktemp("existing") / "gen"
    r = CliRunner().invoke(app, ["qg", "generate", "--out", str(out), "--nx-hi", "16", "--nx-lo", "8",
                                 "--years", YEARS_8_STEPS, "--save-every", "4", "--spinup-years", "0",
                                 "--operators", "op1"])
    assert r.exit_code == 0, (r.output, r.exception)
    snap = snapshot(out)
    assert {"run.json", "hires.nc", "op1.nc", "generate.json"} == set(snap)
    return out, snap


@pytest.fixture(scope="module")
def files(results, tmp_path_factory):
    """Data directories with one NaN (in op1.nc's q; in hires.nc's q), closures (good, truncated, another
    model's weights) and odd files."""
    import jax

    from nemic.experiments.qg_subgrid import CLOSURE_FILE, make_cnn_closure, save_trained_closure
    from nemic.nn.conv import CircularCNN
    from nemic.train.checkpoint import save_module

    gen, _ = results
    d = tmp_path_factory.mktemp("files")
    paths = {"copy": d / "copy"}
    shutil.copytree(gen, paths["copy"])
    for name, f in (("nan_op1", "op1.nc"), ("nan_hires", "hires.nc")):
        p = d / name
        shutil.copytree(gen, p)
        with xr.open_dataset(p / f, engine="h5netcdf") as ds:
            ds = ds.load()
        q = ds["q"].values.copy()
        q[-1, 0, 3, 2] = np.nan
        ds["q"] = (ds["q"].dims, q, ds["q"].attrs)
        (p / f).unlink()
        ds.to_netcdf(p / f, engine="h5netcdf")
        paths[name] = p
    closure = make_cnn_closure(np.ones(2), np.ones(2), widths=(4,), kernel_sizes=(3, 3), key=jax.random.key(0))
    paths["cnn"] = save_trained_closure(closure, d / "cnn", {"mode": "offline"})
    trunc = d / "truncated"
    shutil.copytree(paths["cnn"], trunc)
    raw = (trunc / CLOSURE_FILE).read_bytes()
    (trunc / CLOSURE_FILE).write_bytes(raw[: len(raw) - 40])
    paths["truncated"] = trunc
    other = d / "other"
    other.mkdir()
    save_module(other / CLOSURE_FILE, CircularCNN(2, 2, widths=(4,), kernel_sizes=(3, 3), key=jax.random.key(1)))
    paths["other"] = other
    (d / "notnc.nc").write_text("not netCDF\n")
    paths["notnc"] = d / "notnc.nc"
    bad_eval = d / "bad_eval"
    bad_eval.mkdir()
    (bad_eval / "metrics.json").write_text("{not json")
    paths["bad_eval"] = bad_eval
    cfg = d / "typo.json"
    cfg.write_text(json.dumps({"tua_days": 1.0}))
    paths["typo"] = cfg
    paths["junk_dir"] = d / "junk"
    (d / "junk").mkdir()
    (d / "junk" / "notes.txt").write_text("mine\n")
    return paths


def check(app, results, args, words, status=2):
    out, snap = results
    code, lines = invoke(app, [str(out) if a == "{OUT}" else a for a in args])
    assert code == status, (code, lines)
    assert len(lines) == 1, lines
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert "Traceback" not in lines[0]
    assert snapshot(out) == snap, "the existing results directory changed"


GEN = ["qg", "generate", "--out", "{OUT}"]
CASES_GENERATE = [
    (["--nx-lo", "48"], ["nx_hi (256)", "multiple", "nx_lo (48)"]),
    (["--nx-hi", "32", "--nx-lo", "64"], ["nx_hi (32)", "larger than nx_lo (64)"]),
    (["--nx-hi", "1000000"], ["nx_hi", "1000000", "too large"]),
    (["--nx-hi", "1e6"], ["--nx-hi", "integer"]),
    (["--nx-hi", "30", "--nx-lo", "15"], ["nx_lo must be even", "15"]),
    (["--dt", "nan"], ["--dt", "finite"]),
    (["--dt", "-60"], ["--dt", "> 0"]),
    (["--save-every", "0"], ["--save-every", ">= 1"]),
    (["--years", "1e9", "--save-every", "1"], ["years = 1e+09", "steps"]),
    (["--years", "1", "--save-every", "100000"], ["fewer steps than save_every"]),
    (["--years", "1", "--spinup-years", "2"], ["spinup_years (2)", "shorter than years (1)"]),
    (["--operators", "op1,op7"], ["unknown coarse-graining operator 'op7'"]),
    (["--operators", ","], ["at least one coarse-graining operator"]),
    (["--config", "storm"], ["unknown qg configuration 'storm'"]),
]


@pytest.mark.parametrize("args,words", CASES_GENERATE, ids=[" ".join(a) for a, _ in CASES_GENERATE])
def test_generate_bad_settings(app, results, args, words):
    check(app, results, GEN + args, words)


def test_generate_bad_restart_files(app, results, files, tmp_path):
    small = ["--nx-hi", "16", "--nx-lo", "8"]
    check(app, results, GEN + small + ["--restart", tmp_path / "none.nc"], ["restart file", "none.nc",
                                                                             "does not exist"])
    check(app, results, GEN + small + ["--restart", files["notnc"]], ["cannot read restart file", "notnc.nc"])
    check(app, results, GEN + ["--restart", results[0] / "hires.nc"], ["shape (2, 16, 16)", "nx_hi = 256"])
    check(app, results, GEN + small + ["--restart", files["nan_hires"] / "hires.nc"],
          ["'q (last snapshot)'", "hires.nc", "nan"])


def test_out_that_is_not_a_finished_run_or_holds_the_data_is_refused(app, results, files):
    junk = files["junk_dir"]
    before = snapshot(junk)
    code, lines = invoke(app, GEN + ["--out", junk, "--nx-hi", "16", "--nx-lo", "8"])
    assert code == 2 and len(lines) == 1 and "no run.json" in lines[0]
    assert snapshot(junk) == before
    check(app, results, ["qg", "train", "--data", "{OUT}", "--out", "{OUT}", "--steps", "1"],
          ["--out", "holds the input"])
    check(app, results, ["qg", "evaluate", "--data", "{OUT}", "--out", "{OUT}"], ["--out", "holds the input"])


def test_generate_that_fails_during_the_run_leaves_the_earlier_results(app, results, monkeypatch):
    """The issue's case: a rerun that fails half-way must not leave a mix of old and new files."""
    import nemic.experiments.qg_subgrid as ex

    def crash(*a, **k):
        raise MemoryError

    monkeypatch.setattr(ex, "forcing_dataset", crash)  # after the spin-up and hires.nc are written (staged)
    check(app, results, GEN + ["--nx-hi", "16", "--nx-lo", "8", "--years", YEARS_8_STEPS, "--save-every", "4",
                               "--spinup-years", "0", "--operators", "op1", "--seed", "7"], ["out of memory"])


TRAIN = ["qg", "train", "--out", "{OUT}"]


def test_train_bad_settings_and_data(app, results, files, tmp_path):
    data = ["--data", files["copy"]]  # finite data, another directory than --out
    check(app, results, TRAIN + data + ["--steps", "0"], ["--steps", ">= 1"])
    check(app, results, TRAIN + data + ["--widths", "a,b"], ["--widths", "'a,b'"])
    check(app, results, TRAIN + data + ["--lr", "nan"], ["--lr", "finite"])
    check(app, results, TRAIN + data + ["--mode", "sideways"], ["--mode", "'sideways'"])
    check(app, results, TRAIN + data + ["--operator", "op9"], ["unknown coarse-graining operator 'op9'"])
    check(app, results, TRAIN + data + ["--mode", "online", "--horizon", "10"],
          ["--horizon 10", "at least 11 snapshots", "has 3"])
    check(app, results, TRAIN + ["--data", files["nan_op1"]], ["variable 'q'", "op1.nc", "nan"])
    check(app, results, TRAIN + ["--data", tmp_path / "nowhere"], ["nowhere", "does not exist"])
    check(app, results, TRAIN + data + ["--init", tmp_path], ["not a saved closure"])
    check(app, results, TRAIN + data + ["--init", files["truncated"]], ["closure.eqx", "truncated"])
    check(app, results, TRAIN + data + ["--init", files["other"]], ["closure.eqx", "'CircularCNN'",
                                                                     "QGCNNClosure"])
    check(app, results, TRAIN + data + ["--init", files["cnn"], "--widths", "8,8"],
          ["--widths 8,8", "does not match", "widths 4"])


def test_train_that_fails_during_training_leaves_the_earlier_results(app, results, files, monkeypatch):
    import nemic.experiments.qg_subgrid as ex
    from nemic.train.loop import TrainingDivergedError

    def diverge(*a, **k):
        raise TrainingDivergedError("the loss became NaN at iteration 3")

    monkeypatch.setattr(ex, "train_offline", diverge)
    check(app, results, TRAIN + ["--data", files["copy"], "--init", files["cnn"], "--steps", "5", "--float64"],
          ["nan at iteration 3"])


EVAL = ["qg", "evaluate", "--out", "{OUT}"]


def test_evaluate_bad_settings_and_data(app, results, files):
    data = ["--data", files["nan_hires"]]
    check(app, results, EVAL + data + ["--closures", "smagorinsky,foo"], ["unknown closure 'foo'"])
    check(app, results, EVAL + data + ["--closures", f"a={files['cnn']},a={files['cnn']}"],
          ["--closures", "more than once"])
    check(app, results, EVAL + data + ["--save-every", "0"], ["--save-every", ">= 1"])
    check(app, results, EVAL + data + ["--runs", "0"], ["--runs", ">= 1"])
    check(app, results, EVAL + data + ["--target", "both"], ["--target", "'both'"])
    check(app, results, EVAL + data + ["--closures", f"x={files['truncated']}"], ["closure.eqx", "truncated"])
    check(app, results, EVAL + ["--data", files["nan_op1"]], ["variable 'q'", "op1.nc", "1 nan"])
    # finite op1.nc, but one NaN in the high-resolution reference: refused before any free run
    check(app, results, EVAL + data + ["--steps", "4", "--save-every", "4", "--spinup-steps", "0",
                                       "--closures", "smagorinsky"], ["variable 'q'", "hires.nc", "nan"])
    check(app, results, EVAL + ["--data", files["copy"], "--steps", "2", "--save-every", "4"],
          ["steps (2)", "at least save_every (4)"])


def test_table_of_missing_or_corrupt_metrics(app, results, files, tmp_path):
    check(app, results, ["qg", "table", tmp_path], ["metrics.json", "does not exist"])
    check(app, results, ["qg", "table", files["bad_eval"]], ["metrics.json", "not a metrics.json"])


NUDGE = ["nudging", "qg", "--out", "{OUT}", "--no-progress"]


def test_nudging_qg_bad_settings_and_data(app, results, files, tmp_path):
    data = ["--data", files["nan_op1"]]  # NaN in op1.nc (the climate)
    good = ["--data", files["copy"]]
    check(app, results, NUDGE + ["--data", tmp_path / "none"], ["none", "not a directory"])
    check(app, results, NUDGE + good + ["--days", "nan"], ["days", "finite"])
    check(app, results, NUDGE + good + ["--tau-days", "0"], ["tau_days", "> 0"])
    check(app, results, NUDGE + good + ["--train-steps", "0"], ["train_steps", ">= 1"])
    check(app, results, NUDGE + good + ["--config", files["typo"]], ["unknown config key", "tua_days"])
    check(app, results, NUDGE + data, ["variable 'q'", "op1.nc", "nan"])
    check(app, results, NUDGE + ["--data", files["nan_hires"]], ["hires.nc", "'q (last snapshot)'", "nan"])
    check(app, results, NUDGE + ["--data", results[0]], ["--out", "holds the input"])
    check(app, results, NUDGE + good + ["--compare", tmp_path / "nocnn"], ["nocnn", "not a saved closure"])


def test_similarity_scores_refuse_non_finite_input():
    from nemic.core.errors import DataError
    from nemic.metrics.qg_similarity import DISTRIBUTION_METRICS, SPECTRAL_METRICS, distances, similarity, wasserstein1

    rng = np.random.default_rng(0)
    summ = {"kr": np.arange(1.0, 6.0), "kmax": 10.0,
            **{k: rng.normal(size=5) for k in SPECTRAL_METRICS},
            **{k: np.sort(rng.normal(size=20)) for k in DISTRIBUTION_METRICS}}
    other = {k: (v + 0.1 if isinstance(v, np.ndarray) and k != "kr" else v) for k, v in summ.items()}
    assert np.isfinite(similarity(other, other, summ)["mean"])
    for key, where in (("KEflux", 2), ("q1", 0)):
        bad = dict(summ)
        bad[key] = summ[key].copy()
        bad[key][where] = np.nan
        with pytest.raises(DataError, match=key):
            distances(bad, other)
        with pytest.raises(DataError, match=key):
            similarity(other, other, bad)
    with pytest.raises(DataError, match="NaN/inf"):
        wasserstein1([0.0, np.inf], [1.0, 2.0])
    with pytest.raises(DataError, match="NaN/inf"):
        similarity(other, other, summ, {k: float("nan") for k in (*SPECTRAL_METRICS, *DISTRIBUTION_METRICS)})


def test_real_subprocess_one_line_and_the_issue_rerun_case(results):
    """The real executable: `qg generate --nx-lo 48` into an existing run is refused with one stderr line,
    exit 2, before any spin-up, and the earlier results are unchanged."""
    out, snap = results
    nemic = str(Path(sys.executable).parent / "nemic")
    r = subprocess.run([nemic, "qg", "generate", "--out", str(out), "--nx-lo", "48"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nx_lo (48)" in lines[0] and "Traceback" not in r.stderr
    assert snapshot(out) == snap

"""Bad inputs to ``nemic downscale``: each is refused with ONE error line before any training, and no results
directory is left behind. Files are tiny netCDF files written here."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import xarray as xr

from nemic.cli.testing import invoke, root_app


@pytest.fixture(scope="module")
def app():
    return root_app()


def _rain(path, data, name="rain_rate"):
    dims = ("time", "y", "x")
    xr.Dataset({name: (dims, data, {"units": "mm h-1"})},
               coords={"time": np.arange(data.shape[0]).astype("datetime64[h]")}).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("downscale_files")
    wet = np.zeros((4, 130, 130))
    wet[:, 20:90, 20:90] = 3.0
    nan_frame = wet.copy()
    nan_frame[2] = np.nan
    return {
        "no_rain": _rain(d / "no_rain.nc", wet, name="temperature"),
        "small": _rain(d / "small.nc", wet[:, :60, :60]),
        "dry": _rain(d / "dry.nc", np.zeros((4, 130, 130))),
        "nan_frame": _rain(d / "nan_frame.nc", nan_frame),
        "wet": _rain(d / "wet.nc", wet),
    }


def check(app, args, words, out=None):
    code, lines = invoke(app, args)
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert "Traceback" not in lines[0]
    if out is not None:
        assert not out.exists(), "a failed run left a results directory"


@pytest.mark.parametrize("name, words", [
    ("no_rain", ["rain"]),
    ("small", ["smaller than the patch"]),
    ("dry", ["dry"]),
    ("nan_frame", ["NaN everywhere"]),
])
def test_train_refuses_bad_data(app, files, tmp_path, name, words):
    out = tmp_path / "out"
    check(app, ["downscale", "train", "--data", files[name], "--out", out, "--quick", "--no-progress"], words, out)


def test_factor_that_does_not_divide_the_patch(app, files, tmp_path):
    out = tmp_path / "out"
    check(app, ["downscale", "train", "--data", files["wet"], "--out", out, "--factor", "7"], ["factor"], out)
    cfg = tmp_path / "c.toml"
    cfg.write_text("patch = 128\n")  # 10 does not divide 128
    check(app, ["downscale", "train", "--data", files["wet"], "--out", out, "--factor", "10", "--config", cfg],
          ["does not divide the patch size 128"], out)


def test_missing_file_and_bad_options(app, tmp_path):
    out = tmp_path / "out"
    check(app, ["downscale", "evaluate", "--data", tmp_path / "nope.nc", "--out", out], ["does not exist"], out)
    check(app, ["downscale", "evaluate", "--out", out, "--members", "1"], ["members"], out)
    check(app, ["downscale", "sample", "--out", out, "--window", "a,b"], ["window"], out)


def test_weights_of_another_model(app, tmp_path):
    from nemic.nn.flow import ConditionalFlow
    from nemic.train.checkpoint import save_module

    w = tmp_path / "weights"
    w.mkdir()
    save_module(w / "mse.eqx", ConditionalFlow(10, width=2, depth=1, key=jax.random.key(0)))
    out = tmp_path / "out"
    check(app, ["downscale", "evaluate", "--weights", w, "--out", out], ["ConditionalFlow", "mse"], out)
    (w / "mse.eqx").unlink()
    check(app, ["downscale", "evaluate", "--weights", w, "--out", out], ["no downscaling weights"], out)

"""``nemic atmos run``: bad options are one-line errors before anything runs (fast); a short Held-Suarez run writes
CF netCDF, metrics.json and PNGs (slow: compiles a time step)."""

import json

import xarray as xr

from nemic.cli.testing import invoke, root_app


def test_bad_options_are_one_line_errors(tmp_path):
    app = root_app()
    for args, text in ((["--days", "-1"], "--days"), (["--forcing", "warm"], "--forcing"),
                       (["--save-hours", "0.1"], "whole number of time steps"),
                       (["--truncation", "20"], "unsupported truncation T20")):
        code, lines = invoke(app, ["atmos", "run", "--out", str(tmp_path / "x"), "--quiet", *args])
        assert code == 2 and len(lines) == 1 and text in lines[0], (args, lines)
    assert not (tmp_path / "x").exists()


def test_short_held_suarez_run_writes_cf_files(tmp_path):
    out = tmp_path / "hs"
    code, lines = invoke(root_app(), ["atmos", "run", "--out", str(out), "--days", "0.5", "--save-hours", "4",
                                      "--quiet"])
    assert code == 0, lines
    ds = xr.open_dataset(out / "atmosphere.nc")
    assert ds["air_temperature"].dims == ("time", "level", "lat", "lon") and ds.sizes["time"] == 4
    assert ds["surface_air_pressure"].attrs["standard_name"] == "surface_air_pressure"
    m = json.loads((out / "metrics.json").read_text())
    assert m["relative_dry_mass_drift"] < 1e-12 and m["steps"] == 36
    assert (out / "zonal_mean.png").stat().st_size > 0 and (out / "global_mean.png").stat().st_size > 0

"""The +4 K climate of the truth: ``sst_offset`` reaches jcm's prescribed sea-surface temperature, compared with
the Neale & Hoskins (2000) "control" profile written out here (27 cos^2(3 lat / 2) degC + 273.15 K within 60
degrees of the equator, 273.15 K poleward) plus the offset; a non-finite offset is a one-line error."""

import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.data.atmosphere.truth import jcm_truth
from nemic.experiments.atmos_truth import TruthConfig


def _control_sst(lat_deg):
    lat = np.deg2rad(lat_deg)
    return np.where(np.abs(lat_deg) < 60.0, 273.15 + 27.0 * np.cos(1.5 * lat) ** 2, 273.15)


def test_sst_offset_reaches_jcms_sea_surface_temperature():
    offset = 4.0
    # jcm_truth builds the model and returns the grid and forcing before integrating anything (the chunks are lazy)
    info, _ = jcm_truth(21, 8, vertical="equidistant", spinup_days=1.0, days=1.0, chunk_days=1.0,
                        sst_offset=offset)
    sst = info["sst"]
    assert sst.shape == (32, 64)
    ref = np.broadcast_to(_control_sst(info["lat"])[:, None], sst.shape) + offset
    np.testing.assert_allclose(sst, ref, atol=2e-4)  # float32 storage
    assert info["sst_offset"] == offset


def test_truth_config_takes_the_offset_and_refuses_nan():
    assert TruthConfig(sst_offset=4.0).sst_offset == 4.0
    with pytest.raises(ConfigError, match="sst_offset") as e:
        jcm_truth(21, 8, sst_offset=float("nan"))
    assert "\n" not in str(e.value)

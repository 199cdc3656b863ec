"""Fixtures of the metrics tests: the OPERA sample shipped with nemic."""

import pytest


@pytest.fixture(scope="session")
def opera_sample():
    from nemic.data.opera import load_sample

    return load_sample()

"""Numbers in tests are checked in float64; long tests listed in ``slow_tests.txt`` are marked ``slow``."""

from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

_SLOW = {line.strip() for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
         if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in _SLOW:
            item.add_marker(pytest.mark.slow)

"""``--quick`` keeps what the user changed (nemic.experiments.config.quick_keeping_changes)."""

import dataclasses

import pytest

from nemic.core.errors import ConfigError
from nemic.experiments.config import quick_keeping_changes


@dataclasses.dataclass(frozen=True)
class _Settings:
    steps: int = 1000
    width: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")


def test_changed_settings_win_over_the_quick_sizes_and_the_rest_are_quick():
    quick = _Settings(steps=5, width=4)
    assert quick_keeping_changes(_Settings(), quick) == quick
    assert quick_keeping_changes(_Settings(seed=3), quick) == _Settings(steps=5, width=4, seed=3)
    assert quick_keeping_changes(_Settings(width=128), quick) == _Settings(steps=5, width=128)


def test_the_result_is_validated_like_any_settings():
    @dataclasses.dataclass(frozen=True)
    class Bounded(_Settings):
        def __post_init__(self):
            if self.width > self.steps:
                raise ConfigError("width above steps")

    with pytest.raises(ConfigError, match="width above steps"):
        quick_keeping_changes(Bounded(width=500), Bounded(steps=5, width=4))

"""Rich progress bars for long work (simulations, training). Quiet when ``enabled`` is False."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class _NullBar:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


@contextmanager
def progress_bar(enabled: bool = True, transient: bool = False) -> Iterator:
    """A Rich ``Progress`` with description, bar, count, elapsed and remaining time, and a free ``info`` field."""
    if not enabled:
        yield _NullBar()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=transient) as p:
        yield p

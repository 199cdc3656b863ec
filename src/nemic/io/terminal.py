"""Rich progress bars for long work (simulations, training). Quiet when ``enabled`` is False."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


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
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=transient) as p:
        yield p


@contextmanager
def progress(description: str = "simulating", enabled: bool = True) -> Iterator:
    """A ``report(done, total)`` callback drawing a Rich bar, for :func:`nemic.core.rollout.simulate`::

        with progress("spin-up") as report:
            traj = simulate(model, None, state0, dt=dt, n_steps=n, progress=report)

    Yields ``None`` when ``enabled`` is False (simulate then reports nothing).
    """
    if not enabled:
        yield None
        return
    with progress_bar(True) as pb:
        task = pb.add_task(description, total=None, info="")

        def report(done: int, total: int) -> None:
            pb.update(task, completed=done, total=total)

        yield report

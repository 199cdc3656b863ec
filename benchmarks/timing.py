"""Shared timing helper of the benchmark scripts: the median wall time of repeated calls after a warm-up."""

from __future__ import annotations

import statistics
import time

import jax


def timed(fn, repeats: int) -> float:
    """Median wall time (s) of ``repeats`` calls of ``fn`` (each blocked until its JAX results are ready).

    Call ``fn`` once before to exclude compilation.
    """
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)

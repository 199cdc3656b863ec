"""Training windows streamed from a zarr store larger than memory, with prefetching in a background thread.

:class:`StreamingWindowSampler` is a sampler of :func:`nemic.train.loop.fit` that runs on the host (``on_host =
True``: ``fit`` calls it outside ``jit`` and puts the batch on the device, split over the mesh's batch axis when
training on a mesh). Each batch is ``batch_size`` windows, each a random member and a random start time, of
``n_saves + 1`` consecutive saves read lazily from the store (xarray + Dask): only those windows are read, so
memory holds a few batches, never the data set.

The batch of iteration ``i`` depends only on ``(seed, i)`` (``numpy.random.default_rng([seed, i])``), so a
resumed training reads the same batches as an uninterrupted one, and a background thread can read the batches
of the next ``prefetch`` iterations while the device computes the current one.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import dask
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError, DataError
from nemic.data.zarr_store import open_zarr

__all__ = ["StreamingWindowSampler"]


class StreamingWindowSampler:
    """Draw windows of ``n_saves`` saves (plus their start) from a ``(member, time, ...)`` store.

    Args:
        source: a zarr store path (opened with :func:`nemic.data.zarr_store.open_zarr`) or a lazy Dataset.
        n_saves: window length in saves (>= 1): the start state and the ``n_saves`` saves that follow it.
        batch_size: windows per batch.
        variables: data variables to read (default: all with ``member`` and ``time`` dimensions).
        seed: the seed of the window draws.
        prefetch: batches read ahead by a background thread (0: read when asked).
        make_batch: ``make_batch(start, target, t0) -> batch`` (e.g. build model states); default a dict
            ``{"start": {var: (B, ...)}, "target": {var: (B, n_saves, ...)}, "t0": (B,)}``.

    Call ``sampler(key, iteration)`` (the key is ignored: draws follow ``(seed, iteration)``); :meth:`close` (or
    a ``with`` block) stops the thread.
    """

    on_host = True

    def __init__(self, source: str | os.PathLike | xr.Dataset, n_saves: int, batch_size: int, *,
                 variables: Sequence[str] | None = None, seed: int = 0, prefetch: int = 2,
                 make_batch: Callable[[dict, dict, np.ndarray], Any] | None = None):
        ds = source if isinstance(source, xr.Dataset) else open_zarr(source)
        for name, v in (("n_saves", n_saves), ("batch_size", batch_size)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ConfigError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        names = list(variables) if variables is not None else [
            v for v in ds.data_vars if ds[v].dims[:2] == ("member", "time")]
        if not names:
            raise DataError("the store has no variable with dimensions (member, time, ...)")
        for v in names:
            if v not in ds.data_vars or ds[v].dims[:2] != ("member", "time"):
                raise DataError(f"variable {v!r} is not in the store with dimensions (member, time, ...)")
        self.n_members, self.n_times = int(ds.sizes["member"]), int(ds.sizes["time"])
        if n_saves + 1 > self.n_times:
            raise DataError(f"the store has {self.n_times} saves, too few for windows of {n_saves} saves")
        self.arrays = {v: ds[v].data for v in names}  # Dask arrays: nothing is read yet
        self.times = np.asarray(ds["time"].values)
        self.n_saves, self.batch_size, self.seed, self.prefetch = int(n_saves), int(batch_size), int(seed), int(
            prefetch)
        self.make_batch = make_batch
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemic-prefetch") if prefetch else None
        self._ahead: dict[int, Future] = {}
        self._lock = threading.Lock()

    def indices(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """(members, starts) of the windows of ``iteration``."""
        rng = np.random.default_rng([self.seed, int(iteration)])
        members = rng.integers(0, self.n_members, self.batch_size)
        starts = rng.integers(0, self.n_times - self.n_saves, self.batch_size)
        return members, starts

    def read(self, iteration: int) -> tuple[dict, dict, np.ndarray]:
        """Read the windows of ``iteration`` from the store: (start, target, t0) as NumPy arrays."""
        members, starts = self.indices(iteration)
        n = self.n_saves + 1
        lazy = {v: [a[m, s:s + n] for m, s in zip(members, starts)] for v, a in self.arrays.items()}
        (got,) = dask.compute(lazy, scheduler="synchronous")
        windows = {v: np.stack(w) for v, w in got.items()}
        start = {v: w[:, 0] for v, w in windows.items()}
        target = {v: w[:, 1:] for v, w in windows.items()}
        return start, target, self.times[starts]

    def _schedule(self, iteration: int) -> None:
        for j in range(iteration + 1, iteration + 1 + self.prefetch):
            if j not in self._ahead:
                self._ahead[j] = self._pool.submit(self.read, j)
        for j in [j for j in self._ahead if j <= iteration]:
            self._ahead.pop(j).cancel()

    def __call__(self, key: Any = None, iteration: int = 0) -> Any:
        iteration = int(iteration)
        with self._lock:
            fut = self._ahead.pop(iteration, None)
            if self._pool is not None:
                self._schedule(iteration)
        start, target, t0 = fut.result() if fut is not None else self.read(iteration)
        if self.make_batch is not None:
            return self.make_batch(start, target, t0)
        return {"start": start, "target": target, "t0": t0}

    def close(self) -> None:
        """Stop the prefetching thread (pending reads are cancelled)."""
        if self._pool is not None:
            for f in self._ahead.values():
                f.cancel()
            self._ahead.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "StreamingWindowSampler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

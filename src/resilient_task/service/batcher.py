"""Group commit: many concurrent callers, one store round trip.

While one batch is being written, new requests queue up; the next round trip takes them all.
Under light load a batch holds one request (no added latency); under heavy load batches grow
and the database commits -- the real bottleneck -- are shared by many tasks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class _Batch(Generic[T, R]):
    """Requests written in one round trip; each waiter reads its result by index.

    One wake-up event per batch, not per request, and only once a second request joins: the
    flusher reads its own result without waiting.
    """

    __slots__ = ("done", "error", "items", "results")

    def __init__(self, item: T) -> None:
        self.items = [item]
        self.results: Sequence[R] = ()
        self.error: BaseException | None = None
        self.done: anyio.Event | None = None


class Batcher(Generic[T, R]):
    """Calls ``flush(items) -> results`` (same order) for batches of concurrent ``submit``s.

    The first caller that finds no flush running becomes the flusher and writes batches until
    the queue is empty; the others wait for their batch. A failed flush fails every request
    of that batch with the same exception.
    """

    def __init__(
        self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self._flush = flush
        self._max = max_batch
        self._queue: deque[_Batch[T, R]] = deque()  # not yet flushed; only the last one grows
        self._flushing = False
        self.batches = 0
        """How many round trips were made (for statistics)."""

    async def submit(self, item: T) -> R:
        """Queue ``item``, wait for its batch, return its result (or raise the batch's error)."""
        queue = self._queue
        if queue and len((batch := queue[-1]).items) < self._max:
            index = len(batch.items)
            batch.items.append(item)
        else:
            batch, index = _Batch(item), 0
            queue.append(batch)
        if not self._flushing:
            self._flushing = True
            try:
                # Shielded: once queued, every request is written even if its caller is gone.
                with anyio.CancelScope(shield=True):
                    await anyio.lowlevel.checkpoint()  # let siblings queue up
                    while self._queue:
                        await self._run(self._queue.popleft())
            finally:
                self._flushing = False
        else:
            if batch.done is None:
                batch.done = anyio.Event()
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[index]

    async def _run(self, batch: _Batch[T, R]) -> None:
        self.batches += 1
        try:
            results = await self._flush(batch.items)
            if len(results) != len(batch.items):
                raise RuntimeError(
                    f"batch flush returned {len(results)} results for {len(batch.items)} items"
                )
            batch.results = results
        except Exception as exc:
            batch.error = exc
        finally:
            if batch.done is not None:
                batch.done.set()

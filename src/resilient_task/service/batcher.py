"""Group commit: many concurrent callers, one store round trip.

While one batch is being written, new requests queue up; the next round trip takes them all.
Under light load a batch holds one request (no added latency); under heavy load batches grow
and the database commits -- the real bottleneck -- are shared by many tasks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = anyio.Event()
        self.result: R | None = None
        self.error: BaseException | None = None


class Batcher(Generic[T, R]):
    """Calls ``flush(items) -> results`` (same order) for batches of concurrent ``submit``s.

    The first caller that finds no flush running becomes the flusher and writes batches until
    the queue is empty; the others wait for their own result. A failed flush fails every
    request of that batch with the same exception.
    """

    def __init__(
        self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self._flush = flush
        self._max = max_batch
        self._queue: list[_Slot[T, R]] = []
        self._flushing = False
        self.batches = 0
        """How many round trips were made (for statistics)."""

    async def submit(self, item: T) -> R:
        """Queue ``item``, wait for its batch, return its result (or raise the batch's error)."""
        slot: _Slot[T, R] = _Slot(item)
        self._queue.append(slot)
        if not self._flushing:
            self._flushing = True
            try:
                await anyio.lowlevel.cancel_shielded_checkpoint()  # let siblings queue up
                while self._queue:
                    batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                    with anyio.CancelScope(shield=True):
                        await self._run(batch)
            finally:
                self._flushing = False
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    async def _run(self, batch: list[_Slot[T, R]]) -> None:
        self.batches += 1
        try:
            results = await self._flush([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch flush returned {len(results)} results for {len(batch)} items"
                )
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except Exception as exc:
            for slot in batch:
                slot.error = exc
        finally:
            for slot in batch:
                slot.done.set()

"""The consumer lag of each trigger partition this node consumes, reported to the Observer.

Lag is what ``kafka-consumer-groups --describe`` shows: the partition's log end offset minus
the offset the group committed (where it would resume after a crash), so it counts triggers
fetched but not yet handled as well as those not fetched. It is measured in the background
every ``interval`` seconds with one ListOffsets request for all partitions (a paused
consumer does not fetch, so the high-water mark of its last fetch would be stale); the
committed offset is asked of the group coordinator once per assignment and then followed
from this consumer's own commits. A partition the group never committed counts from its log
start (the consumer's ``auto_offset_reset=earliest``).

When a partition is revoked, or the consumer stops, its lag is reported as ``None``: the node
that consumes it now reports it, and a dashboard summing the nodes' gauges counts it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from resilient_task.ports.observer import NULL_OBSERVER, Observer

__all__ = ["LagMeter"]

logger = logging.getLogger(__name__)


class LagMeter:
    """Measures and reports the lag of the partitions one consumer is assigned.

    Args:
        observer: receives ``consumer_lag`` for each assigned partition; with the default
            :data:`~resilient_task.ports.observer.NULL_OBSERVER` nothing is measured.
        interval: seconds between two measurements.
        timeout: the longest one measurement may take; it is abandoned after that (the
            gauges keep their previous values).
        from_start: a partition without a committed offset counts from its log start
            (``auto_offset_reset=earliest``); otherwise it is not reported until committed.
    """

    def __init__(
        self, *, observer: Observer, interval: float, timeout: float, from_start: bool = True
    ) -> None:
        self._observer, self._interval, self._timeout = observer, interval, timeout
        self._from_start = from_start
        self._committed: dict[Any, int] = {}
        self._reported: set[Any] = set()
        self._epoch = 0  # bumped by forget(): a measurement begun before must not write
        self._task: asyncio.Task[None] | None = None
        self._next = 0.0

    def tick(self, consumer: Any) -> None:
        """Start a background measurement if one is due and none is running."""
        if self._observer is NULL_OBSERVER:
            return  # nobody listens: spare the broker the requests
        now = asyncio.get_running_loop().time()
        if now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + self._interval
        self._task = asyncio.create_task(self._measure_quietly(consumer), name="resilient-task-lag")

    def committed(self, offsets: dict[Any, int]) -> None:
        """This consumer committed ``offsets`` (newer than what a running measurement read).

        Revoking a partition commits before it forgets, and cancels background commits first,
        so no commit lands here for a partition after it was forgotten.
        """
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[Any] | None = None) -> None:
        """No longer this consumer's: report ``None`` for ``partitions`` (all when None)."""
        self._epoch += 1
        gone = set(self._reported | self._committed.keys() if partitions is None else partitions)
        for partition in gone:
            self._committed.pop(partition, None)
            if partition in self._reported:
                self._reported.discard(partition)
                self._observer.consumer_lag(partition.topic, partition.partition, None)

    async def stop(self) -> None:
        """Cancel a running measurement and forget every partition."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.forget()
        self._next = 0.0

    async def _measure_quietly(self, consumer: Any) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self.measure(consumer)
        except Exception as exc:  # a metric must never disturb consuming; the next try comes
            logger.debug("measuring the trigger consumer lag failed: %r", exc)

    async def measure(self, consumer: Any) -> dict[Any, int]:
        """Measure and report the lag of every assigned partition now; returns it."""
        epoch = self._epoch
        partitions = sorted(consumer.assignment())
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        unknown = [p for p in partitions if p not in self._committed]
        found: dict[Any, int | None] = {p: await consumer.committed(p) for p in unknown}
        never = [p for p, offset in found.items() if offset is None]
        if never and self._from_start:
            found.update(await consumer.beginning_offsets(never))
        if epoch != self._epoch:
            return {}  # revoked or stopped meanwhile: these numbers are not ours any more
        for partition, offset in found.items():
            if offset is not None:
                self._committed.setdefault(partition, offset)
        assigned = consumer.assignment()
        lags = {}
        for partition in partitions:
            base = self._committed.get(partition)
            if base is None or partition not in assigned:
                continue
            lags[partition] = lag = max(0, ends[partition] - base)
            self._reported.add(partition)
            self._observer.consumer_lag(partition.topic, partition.partition, lag)
        return lags

"""The consuming half of :class:`KafkaTriggerer`: fetch, hand over, commit what is handled.

At-least-once, never commit-on-hand-off: an offset is committed only when its callback and every
earlier one of the partition returned (:mod:`.offsets`), every ``commit_interval``, when
partitions are revoked, and on stop. With ``max_in_flight`` callbacks running the consumer
pauses its partitions instead of buffering; it still polls, so it stays in the group. Malformed
messages are logged and skipped. Broker errors are logged once per outage and retried with
backoff in the background; they never escape into the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from resilient_task.adapters.delivery import Backoff, drain_callbacks
from resilient_task.adapters.kafka.clients import (
    DRIVER_ERRORS,
    RECOVERABLE_ERRORS,
    Outage,
    close_client,
)
from resilient_task.adapters.kafka.messages import decode_trigger
from resilient_task.adapters.kafka.offsets import OffsetTracker, PartitionOffsets
from resilient_task.adapters.kafka.topics import ensure_topic
from resilient_task.domain.task import BaseTask
from resilient_task.errors import ConfigurationError
from resilient_task.ports.triggerer import TriggerCallback
from resilient_task.properties import KafkaProperties

__all__ = ["TriggerConsumer"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 3.0
"""Seconds stop waits for the consumer to leave the group; then it is abandoned (the group
coordinator drops the member after its session timeout)."""


class TriggerConsumer:
    """One start..stop period of consuming triggers (the triggerer makes a new one per start)."""

    def __init__(
        self,
        *,
        properties: KafkaProperties,
        options: dict[str, Any],
        on_trigger: TriggerCallback,
        max_in_flight: int,
        stop_timeout: float,
        commit_interval: float,
        connect_timeout: float,
    ) -> None:
        self._properties, self._options, self._on_trigger = properties, options, on_trigger
        self._max_in_flight, self._stop_timeout = max_in_flight, stop_timeout
        self._commit_interval, self._connect_timeout = commit_interval, connect_timeout
        self._tracker: OffsetTracker[Any] = OffsetTracker()
        self._handlers: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._slot_freed = asyncio.Event()
        self._callback_done = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._fetching = False
        self._fatal: ConfigurationError | None = None
        self._task: asyncio.Task[None] | None = None
        self._outage = Outage(logger, f"Kafka consumer of {properties.triggers_topic}")
        self.paused = False
        """True while fetching is paused because ``max_in_flight`` callbacks are running."""

    async def start(self) -> None:
        """Subscribe in the background; return when subscribed or after ``connect_timeout``."""
        self._task = asyncio.create_task(self._run(), name="resilient-task-trigger-consumer")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            logger.warning(
                "Kafka consumer of %s not subscribed after %.1f s; still trying in the background",
                self._properties.triggers_topic,
                self._connect_timeout,
            )
        if self._fatal is not None:
            await self.stop()
            raise self._fatal

    async def stop(self) -> None:
        """Stop fetching, let callbacks finish for ``stop_timeout``, commit, close. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if not self._fetching:
            task.cancel()  # connecting or backing off: nothing to drain or commit
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.cancel()
                raise
        await self._drain()

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                await self._consume(backoff)
            except ConfigurationError as exc:
                if not self._ready.is_set():  # start() is still waiting: fail it
                    self._fatal = exc
                    self._ready.set()
                    return
                self._outage.failed(exc)  # it ran before: maybe a passing ACL change; retry
            except RECOVERABLE_ERRORS as exc:
                self._outage.failed(exc)
            except Exception:
                logger.exception("Kafka trigger consumer failed unexpectedly; restarting it")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.next_delay()):
                    await self._stopping.wait()

    async def _consume(self, backoff: Backoff) -> None:
        await ensure_topic(self._properties, time_limit=self._connect_timeout)
        consumer = AIOKafkaConsumer(**self._options)
        self._tracker.forget()
        try:
            await consumer.start()
            consumer.subscribe(
                [self._properties.triggers_topic], listener=_Listener(self, consumer)
            )
            self._ready.set()
            self._outage.recovered()
            backoff.reset()
            self._fetching = True
            await self._fetch(consumer)
            await self._drain()
            await self._commit(consumer, time_limit=self._stop_timeout)
        finally:
            self._fetching = self.paused = False
            await self._close(consumer)

    async def _fetch(self, consumer: Any) -> None:
        loop = asyncio.get_running_loop()
        poll_ms = max(1, int(min(self._commit_interval, 0.1) * 1000))
        next_commit = loop.time() + self._commit_interval
        while not self._stopping.is_set():
            if loop.time() >= next_commit:
                await self._commit(consumer)
                await self._rewind_past_log_end(consumer)
                next_commit = loop.time() + self._commit_interval
            free = self._max_in_flight - self._in_flight
            if free <= 0:
                self._pause(consumer)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._commit_interval):
                        await self._slot_freed.wait()
                self._slot_freed.clear()
                # Polling while paused keeps this member in the group (max_poll_interval_ms).
                self._seek_back(consumer, await consumer.getmany(timeout_ms=0))
                continue
            self._resume(consumer)
            self._dispatch(await consumer.getmany(timeout_ms=poll_ms, max_records=free))

    def _dispatch(self, batches: dict[Any, list[Any]]) -> None:
        for partition, records in batches.items():
            offsets = self._tracker.partition(partition)
            for record in records:
                offsets.fetched(record.offset)
                task = decode_trigger(record.value)
                if task is None:
                    logger.warning(
                        "skipping malformed trigger message at %s partition %d offset %d",
                        partition.topic,
                        partition.partition,
                        record.offset,
                    )
                    offsets.handled(record.offset)
                    continue
                self._in_flight += 1
                handler = asyncio.create_task(self._handle(offsets, record.offset, task))
                self._handlers.add(handler)
                handler.add_done_callback(self._handlers.discard)

    async def _handle(self, offsets: PartitionOffsets, offset: int, task: BaseTask) -> None:
        try:
            try:
                await self._on_trigger(task)
            except Exception:
                # Handled all the same: the store and the resumer own retries, not the broker.
                logger.exception(
                    "trigger callback failed for task %s (version %s)", task.id, task.version
                )
            offsets.handled(offset)
        finally:
            self._in_flight -= 1
            self._slot_freed.set()
            self._callback_done.set()

    async def _drain(self) -> None:
        """Wait ``stop_timeout`` for running callbacks; cancel the rest (not committed)."""
        await drain_callbacks(self._handlers, self._stop_timeout, logger)

    async def _commit(
        self, consumer: Any, partitions: set[Any] | None = None, *, time_limit: float = 5.0
    ) -> None:
        offsets = self._tracker.to_commit(partitions)
        if not offsets:
            return
        try:
            async with asyncio.timeout(time_limit):
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: the new owner reads again from the last commit (duplicates).
            logger.info("offset commit skipped after a rebalance: %r", exc)
        except DRIVER_ERRORS as exc:
            self._outage.failed(exc)
        else:
            self._tracker.committed(offsets)

    async def revoke(self, consumer: Any, revoked: set[Any]) -> None:
        """Before a rebalance: let revoked partitions' callbacks finish, commit, forget them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_timeout):
                while self._tracker.unhandled(revoked):
                    self._callback_done.clear()
                    await self._callback_done.wait()
        await self._commit(consumer, revoked, time_limit=self._stop_timeout)
        self._tracker.forget(revoked)

    async def _rewind_past_log_end(self, consumer: Any) -> None:
        """Read a partition again from its start when our position lies beyond its end.

        That happens when the broker lost the partition's log (a topic deleted and re-created,
        an in-memory broker restarted) without answering OFFSET_OUT_OF_RANGE: the consumer
        would otherwise wait at its old position while new triggers pile up below it.
        """
        for partition in consumer.assignment():
            # Each await below lets a rebalance run: a partition revoked meanwhile is not ours
            # to read any more (aiokafka asserts or raises IllegalStateError on it).
            if partition not in consumer.assignment():
                continue
            end = consumer.highwater(partition)
            if end is None:
                continue
            try:
                position = await consumer.position(partition)
            except IllegalStateError:
                continue
            if position > end and partition in consumer.assignment():
                logger.warning(
                    "trigger partition %s[%d] ends at offset %d, before our position %d: "
                    "the broker lost its log; reading it again from the start",
                    partition.topic,
                    partition.partition,
                    end,
                    position,
                )
                self._tracker.forget([partition])
                await consumer.seek_to_beginning(partition)

    def _pause(self, consumer: Any) -> None:
        if not self.paused:
            logger.debug("pausing trigger fetching: %d callbacks running", self._in_flight)
        consumer.pause(*consumer.assignment())
        self.paused = True

    def _resume(self, consumer: Any) -> None:
        if self.paused:
            consumer.resume(*consumer.paused())
            self.paused = False

    @staticmethod
    def _seek_back(consumer: Any, batches: dict[Any, list[Any]]) -> None:
        for partition, records in batches.items():
            if records:
                consumer.seek(partition, records[0].offset)

    async def _close(self, consumer: Any) -> None:
        self._tracker.forget()
        await close_client(consumer, what="Kafka trigger consumer", wait=_CLOSE_TIMEOUT)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TriggerConsumer, consumer: Any) -> None:
        self._owner, self._consumer = owner, consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.revoke(self._consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logger.debug("trigger partitions assigned: %s", sorted(p.partition for p in assigned))

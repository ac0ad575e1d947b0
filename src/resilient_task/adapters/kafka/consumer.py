"""The consuming half of :class:`KafkaTriggerer`: fetch, hand over, commit what is handled.

At-least-once, never commit-on-hand-off: an offset is committed only when its callback and every
earlier one of the partition returned (:mod:`.offsets`), every ``commit_interval``, when
partitions are revoked, and on stop. Periodic commits run in the background: fetching never
waits for one, and a failed commit is retried later with backoff (its offsets stay due). With
``max_in_flight`` callbacks running the consumer pauses its partitions instead of buffering; it
still polls, so it stays in the group. Malformed messages are logged and skipped. Broker errors
are logged once per outage and retried with backoff in the background; they never escape into
the node. A configuration the broker refuses (a session timeout outside its limits, a bad group
id, a denied group or topic) is logged once at ERROR saying what to change, and retried with
backoff. Every ``lag_interval`` the consumer lag of each assigned partition (log end minus
committed offset) goes to the Observer (:mod:`.lag`). Signs of a lost topic (failed commits,
partitions missing from the metadata) make the :class:`~.topics.TopicKeeper` check it; when it
was re-created, the consumer rejoins to see its partitions.

Stopping takes at most ``stop_timeout`` (running callbacks) plus ``_LEAVE_TIMEOUT`` (the last
commit and leaving the group), whatever the broker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    InconsistentGroupProtocolError,
    InvalidGroupIdError,
    InvalidSessionTimeoutError,
    TopicAuthorizationFailedError,
)

from resilient_task.adapters.delivery import Backoff, drain_callbacks
from resilient_task.adapters.kafka.clients import DRIVER_ERRORS, RECOVERABLE_ERRORS, close_client
from resilient_task.adapters.kafka.lag import LagMeter
from resilient_task.adapters.kafka.messages import decode_trigger, malformed_reason
from resilient_task.adapters.kafka.offsets import OffsetTracker, PartitionOffsets
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import TopicKeeper
from resilient_task.domain.task import BaseTask
from resilient_task.errors import ConfigurationError
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.ports.triggerer import TriggerCallback
from resilient_task.service.outage import OutageLog

__all__ = ["TriggerConsumer"]

logger = logging.getLogger(__name__)

_LEAVE_TIMEOUT = 3.0
"""Seconds stop gives the last commit and leaving the group together; then the consumer is
abandoned (the group coordinator drops the member after its session timeout)."""
_LAST_COMMIT_TIMEOUT = 1.0
"""Seconds of :data:`_LEAVE_TIMEOUT` the last commit may take (uncommitted triggers are only
delivered again: duplicates)."""
_COMMIT_TIMEOUT = 5.0
"""Seconds one background commit may take before it counts as failed."""
_LAG_INTERVAL = 5.0
"""Default seconds between two measurements of the consumer lag."""
_LAG_TIMEOUT = 5.0
"""Seconds one measurement of the consumer lag may take before it is abandoned."""
_REWIND_QUIET = 60.0
"""Seconds without a rewind after which a partition's rewind episode is over (the next one is
logged as a warning again, and its backoff starts again from one second)."""

_BROKER_REFUSED: dict[type[BaseException], str] = {
    InvalidSessionTimeoutError: (
        "the broker refused the consumer's session timeout (session_timeout_ms={session}): it "
        "must lie between the broker's group.min.session.timeout.ms and "
        "group.max.session.timeout.ms; change KafkaProperties.extra['session_timeout_ms'] "
        "(and heartbeat_interval_ms, a third of it) or the broker's limits"
    ),
    InconsistentGroupProtocolError: (
        "the consumer group {group} is used by clients with another assignment protocol; give "
        "resilient-task a consumer group of its own (KafkaProperties.consumer_group_id)"
    ),
    InvalidGroupIdError: (
        "the broker refused the consumer group id {group}; change KafkaProperties.consumer_group_id"
    ),
    GroupAuthorizationFailedError: (
        "this client may not use the consumer group {group}; grant it Read on the group"
    ),
    TopicAuthorizationFailedError: (
        "this client may not read the topic {topic}; grant it Read (and Describe) on the topic"
    ),
}
"""Broker errors that only a change of configuration ends, and what to change."""


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
        topic: TopicKeeper | None = None,
        observer: Observer = NULL_OBSERVER,
        lag_interval: float = _LAG_INTERVAL,
    ) -> None:
        self._properties, self._options, self._on_trigger = properties, options, on_trigger
        self._lag = LagMeter(
            observer=observer,
            interval=lag_interval,
            timeout=_LAG_TIMEOUT,
            from_start=options.get("auto_offset_reset", "latest") == "earliest",
        )
        self._topic = topic if topic is not None else TopicKeeper(properties)
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
        self._outage = OutageLog(logger, f"Kafka consumer of {properties.triggers_topic}")
        self._backoff = Backoff()
        self._refused: type[BaseException] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._commit_backoff = Backoff(first=self._commit_interval, cap=5.0)
        self._next_commit_try = 0.0
        self._rewinds: dict[Any, _Rewinds] = {}
        self._topic_generation = 0
        self._joined = False
        self.paused = False
        """True while fetching is paused because ``max_in_flight`` callbacks are running."""
        self.rewinds = 0
        """How many times a partition was read again from its start (its log ended before our
        position)."""
        self.failed_commits = 0
        """How many background offset commits failed (their offsets were committed later)."""

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
        """Stop fetching, let callbacks finish for ``stop_timeout``, commit, close. Idempotent.

        Takes at most ``stop_timeout`` plus three seconds (the last commit and leaving the
        group), even while the broker is down or refuses commits.
        """
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
        while not self._stopping.is_set():
            try:
                await self._consume()
            except ConfigurationError as exc:
                if not self._ready.is_set():  # start() is still waiting: fail it
                    self._fatal = exc
                    self._ready.set()
                    return
                self._outage.failed(exc)  # it ran before: maybe a passing ACL change; retry
            except tuple(_BROKER_REFUSED) as exc:
                self._broker_refused(exc)
            except RECOVERABLE_ERRORS as exc:
                self._outage.failed(exc)
            except Exception:
                logger.exception("Kafka trigger consumer failed unexpectedly; restarting it")
            else:
                continue  # the topic was re-created: rejoin at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff.next_delay()):
                    await self._stopping.wait()

    def _broker_refused(self, error: BaseException) -> None:
        """Log a configuration the broker refuses once (ERROR, with the fix), then debug."""
        kind = type(error)
        if self._refused is kind:
            logger.debug("Kafka broker still refuses the consumer: %r", error)
            return
        self._refused = kind
        hint = _BROKER_REFUSED.get(kind) or next(
            text for cls, text in _BROKER_REFUSED.items() if isinstance(error, cls)
        )
        logger.error(
            "Kafka consumer of %s cannot join its group: %s (%r); retrying with backoff",
            self._properties.triggers_topic,
            hint.format(
                session=self._options.get("session_timeout_ms"),
                group=self._properties.consumer_group_id,
                topic=self._properties.triggers_topic,
            ),
            error,
        )

    def joined(self) -> None:
        """The group assigned partitions (maybe none): the consumer works; reset the backoff."""
        self._joined = True
        self._backoff.reset()
        self._refused = None
        self._outage.succeeded()

    async def _consume(self) -> None:
        await self._topic.ensure(time_limit=self._connect_timeout)
        self._topic_generation = self._topic.generation
        self._joined = False
        consumer = AIOKafkaConsumer(**self._options)
        self._tracker.forget()
        try:
            await consumer.start()
            consumer.subscribe(
                [self._properties.triggers_topic], listener=_Listener(self, consumer)
            )
            self._ready.set()
            self._fetching = True
            await self._fetch(consumer)
            await self._drain()
        finally:
            self._fetching = self.paused = False
            await self._leave(consumer)

    async def _fetch(self, consumer: Any) -> None:
        """Fetch and dispatch until stop, or until the topic was re-created (then rejoin)."""
        loop = asyncio.get_running_loop()
        poll_ms = max(1, int(min(self._commit_interval, 0.1) * 1000))
        next_commit = loop.time() + self._commit_interval
        while not self._stopping.is_set():
            if loop.time() >= next_commit:
                if self._topic.generation != self._topic_generation:
                    logger.info("rejoining to read the re-created topic's partitions")
                    return
                self._commit_soon(consumer)
                self._lag.tick(consumer)
                self._check_topic(consumer)
                # A partition without a position yet makes the check wait for the broker.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(self._commit_interval, 0.1)):
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
                        "skipping malformed trigger message at %s partition %d offset %d: %s",
                        partition.topic,
                        partition.partition,
                        record.offset,
                        malformed_reason(record.value),
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

    def _commit_soon(self, consumer: Any) -> None:
        """Start a background commit of what is handled, unless one runs or a retry waits."""
        if self._committing is not None and not self._committing.done():
            return
        if asyncio.get_running_loop().time() < self._next_commit_try:
            return
        offsets = self._tracker.to_commit()
        if offsets:
            self._committing = asyncio.create_task(
                self._commit_in_background(consumer, offsets), name="resilient-task-commit"
            )

    async def _commit_in_background(self, consumer: Any, offsets: dict[Any, int]) -> None:
        if await self._commit(consumer, offsets, time_limit=_COMMIT_TIMEOUT):
            self._commit_backoff.reset()
            self._next_commit_try = 0.0
        else:
            self.failed_commits += 1
            delay = self._commit_backoff.next_delay()
            self._next_commit_try = asyncio.get_running_loop().time() + delay

    async def _stop_committing(self) -> None:
        """Cancel a background commit (its offsets stay due: the next commit includes them)."""
        committing, self._committing = self._committing, None
        if committing is not None and not committing.done():
            committing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committing

    async def _commit(self, consumer: Any, offsets: dict[Any, int], *, time_limit: float) -> bool:
        """Commit ``offsets``; True if the broker took them. Failures are logged, not raised."""
        if not offsets:
            return True
        try:
            async with asyncio.timeout(time_limit):
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: the new owner reads again from the last commit (duplicates).
            logger.info("offset commit skipped after a rebalance: %r", exc)
            return True
        except DRIVER_ERRORS as exc:
            self._outage.failed(exc)
            # aiokafka retries a commit to a lost topic until our time limit: check the topic.
            self._topic.suspect(f"an offset commit failed: {exc!r}")
            return False
        self._tracker.committed(offsets)
        self._lag.committed(offsets)
        self._outage.succeeded()
        return True

    def _check_topic(self, consumer: Any) -> None:
        """Fewer partitions in our metadata than the topic had: it was lost; have it checked.

        Only once the group assigned partitions: before that the metadata may not be loaded.
        """
        if not self._joined:
            return
        known = consumer.partitions_for_topic(self._properties.triggers_topic)
        if known is None or len(known) < self._topic.partitions:
            seen = len(known) if known is not None else 0
            self._topic.suspect(f"the consumer's metadata shows partitions {known}", seen)

    async def revoke(self, consumer: Any, revoked: set[Any]) -> None:
        """Before a rebalance: let revoked partitions' callbacks finish, commit, forget them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_timeout):
                while self._tracker.unhandled(revoked):
                    self._callback_done.clear()
                    await self._callback_done.wait()
        await self._stop_committing()
        offsets = self._tracker.to_commit(revoked)
        await self._commit(consumer, offsets, time_limit=self._stop_timeout)
        self._tracker.forget(revoked)
        self._lag.forget(revoked)
        for partition in revoked:
            self._rewinds.pop(partition, None)

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
                await self._rewind(consumer, partition, end, position)
            elif partition in self._rewinds and self._rewinds[partition].quiet(self._now()):
                del self._rewinds[partition]  # consistent for a while: the episode is over

    async def _rewind(self, consumer: Any, partition: Any, end: int, position: int) -> None:
        """Read ``partition`` again from its start: at most once per backoff delay.

        A broker that keeps reporting an end before our position (an inconsistent high-water
        mark) would otherwise make us re-read the partition every commit interval. The first
        rewind of an episode is logged as a warning, the rest at debug; all are counted.
        """
        now = self._now()
        state = self._rewinds.get(partition)
        if state is not None and now < state.next_allowed:
            return
        again = state is not None
        if state is None:
            state = self._rewinds[partition] = _Rewinds()
        state.rewound(now)
        self.rewinds += 1
        log = logger.debug if again else logger.warning
        log(
            "trigger partition %s[%d] ends at offset %d, before our position %d: "
            "the broker lost its log; reading it again from the start%s",
            partition.topic,
            partition.partition,
            end,
            position,
            f" (rewind {state.count} of this episode)" if again else "",
        )
        self._tracker.forget([partition])
        await consumer.seek_to_beginning(partition)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

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

    async def _leave(self, consumer: Any) -> None:
        """Commit what is handled and leave the group, within :data:`_LEAVE_TIMEOUT` in all."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await self._stop_committing()
            offsets = self._tracker.to_commit()
            await self._commit(consumer, offsets, time_limit=_LAST_COMMIT_TIMEOUT)
        finally:
            self._tracker.forget()
            self._rewinds.clear()
            await self._lag.stop()
            left = max(0.5, _LEAVE_TIMEOUT - (loop.time() - began))
            await close_client(consumer, what="Kafka trigger consumer", wait=left)


class _Rewinds:
    """One partition's episode of rewinds: when the next may happen, how many happened."""

    def __init__(self) -> None:
        self._backoff = Backoff(first=1.0, cap=30.0)
        self.next_allowed = 0.0
        self.last = 0.0
        self.count = 0

    def rewound(self, now: float) -> None:
        """Record a rewind at ``now``; the next is allowed after a growing delay."""
        self.count += 1
        self.last = now
        self.next_allowed = now + self._backoff.next_delay()

    def quiet(self, now: float) -> bool:
        """True once no rewind happened for :data:`_REWIND_QUIET` seconds."""
        return now - self.last >= _REWIND_QUIET


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TriggerConsumer, consumer: Any) -> None:
        self._owner, self._consumer = owner, consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.revoke(self._consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logger.debug("trigger partitions assigned: %s", sorted(p.partition for p in assigned))
        self._owner.joined()

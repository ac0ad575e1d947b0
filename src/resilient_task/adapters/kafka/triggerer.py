"""KafkaTriggerer: the ``Triggerer`` port over one Kafka topic and one consumer group.

Tuned for trigger latency, not throughput (a trigger is ~150 bytes):

- producer: ``linger_ms=0`` (send at once; aiokafka still batches whatever queues up while a
  request is in flight), ``acks="all"`` (a trigger acknowledged by a leader that then dies would
  otherwise cost a whole ``expected_queue_time``; in one data centre the extra replica
  round-trip is around a millisecond), no idempotence (duplicates are harmless);
- hand-overs (:meth:`KafkaTriggerer.hand_over`, what ``add_task`` uses) are coalesced: one
  after a quiet spell of ``coalesce`` (5 ms) goes out at once, the next ones within that time
  wait for its end and go out together, in one produce request. aiokafka spends about as much
  CPU on a request of one trigger as of ten, so a node adding one task after another spends
  about half as much per task (measured: ~640 -> ~350 µs of CPU per trigger at one trigger per
  1.4 ms), for at most ``coalesce`` of delay under such load and none when adds are spaced;
- consumer: ``fetch_max_wait_ms=5`` and ``fetch_min_bytes=1`` (an idle consumer's fetch returns
  within 5 ms of a new message; the price is one fetch request per 5 ms per broker),
  ``auto_offset_reset="earliest"`` (a new group also gets triggers sent before it first joined;
  replays are harmless), ``enable_auto_commit=False`` (commits follow handling, see
  :mod:`.consumer`), offsets committed every ``commit_interval`` (100 ms).

Everything can be overridden through ``KafkaProperties.extra`` except the group id and
auto-commit. asyncio only (aiokafka).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from resilient_task.adapters.kafka.clients import (
    DRIVER_ERRORS,
    client_options,
    close_client,
    is_transient,
    validate_extra,
)
from resilient_task.adapters.kafka.consumer import TriggerConsumer
from resilient_task.adapters.kafka.messages import encode_trigger
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import TopicKeeper
from resilient_task.domain.task import BaseTask
from resilient_task.errors import BackendError, ConfigurationError, TriggerError
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.ports.triggerer import TriggerCallback

__all__ = ["KafkaTriggerer", "Unacknowledged"]

Unacknowledged = Callable[[Sequence[BaseTask]], Awaitable[None]]
"""Called with the tasks whose handed-over triggers the broker refused or did not acknowledge."""

logger = logging.getLogger(__name__)

_PRODUCER_CLOSE_WAIT = 1.0
"""Seconds stop waits for the producer's unacknowledged triggers before leaving it closing."""
_PARTITION_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the producer's partition count of the topic."""
_SEND_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, BackendError, ConfigurationError)


class _HandOver(NamedTuple):
    """Triggers handed over in one call: their tasks, messages and lost-trigger callback."""

    tasks: Sequence[BaseTask]
    messages: list[tuple[bytes, bytes]]
    on_unacknowledged: Unacknowledged


def task_id_key(task: BaseTask) -> bytes:
    """The default partition key: the task id, spreading triggers evenly over partitions."""
    return task.id.bytes


class KafkaTriggerer:
    """Sends triggers to ``properties.triggers_topic`` and consumes them in one consumer group.

    The producer opens on the first :meth:`trigger` (creating the topic if needed), so nodes
    that only add tasks never start a consumer. :meth:`stop` closes the consumer *and* the
    producer; a later :meth:`trigger` opens a new producer, closed by the next :meth:`stop`.
    ``async with`` calls :meth:`stop` on exit.

    Args:
        properties: bootstrap servers, topic namespace, group id, partitions, ``extra``.
        partition_key: the message key of a task's trigger (default: the task id's bytes).
        max_in_flight: most callbacks running at once; then fetching pauses.
        stop_timeout: seconds stop (and a rebalance) waits for running callbacks.
        send_timeout: seconds :meth:`trigger` may take before it raises TriggerError.
        retry_after: seconds between two background probes of a broker that failed. After a
            failed send, :meth:`trigger` fails at once (the tasks go to database polling) until
            a probe -- the triggers of a refused call, sent in the background -- succeeds, so a
            caller waits ``send_timeout`` at most once per outage, never once per window.
        connect_timeout: seconds :meth:`start` waits to subscribe before returning anyway.
        commit_interval: seconds between offset commits.
        coalesce: seconds a :meth:`hand_over` within this time of the previous produce request
            waits, so that those of one such spell share one request (see above); 0 sends each
            at once.
        on_unacknowledged: when given, every :meth:`trigger` is a :meth:`hand_over` to this
            callback. ``None`` (the default): :meth:`trigger` waits for the acknowledgement
            and raises TriggerError. (A node's task service calls :meth:`hand_over` itself,
            while its resumer's :meth:`trigger` still waits: see ``KafkaTriggers.wait_for_ack``.)
        observer: told of the consumer's lag per partition (see ``adapters/kafka/lag.py``).
    """

    def __init__(
        self,
        *,
        properties: KafkaProperties,
        partition_key: Callable[[BaseTask], bytes] = task_id_key,
        max_in_flight: int = 1000,
        stop_timeout: float = 5.0,
        send_timeout: float = 3.0,
        connect_timeout: float = 10.0,
        commit_interval: float = 0.1,
        retry_after: float = 5.0,
        coalesce: float = 0.005,
        on_unacknowledged: Unacknowledged | None = None,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        validate_extra(properties)
        if max_in_flight < 1 or min(stop_timeout, send_timeout, connect_timeout, coalesce) < 0:
            raise ConfigurationError("max_in_flight must be positive and timeouts not negative")
        if commit_interval <= 0:
            raise ConfigurationError("commit_interval must be positive")
        self._properties, self._partition_key = properties, partition_key
        self._max_in_flight, self._stop_timeout = max_in_flight, stop_timeout
        self._send_timeout, self._connect_timeout = send_timeout, connect_timeout
        self._commit_interval = commit_interval
        self._retry_after = retry_after
        self._down = False
        self._next_probe = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._producer: Any = None
        self._producer_generation = 0
        self._next_partition_check = 0.0
        self._producer_lock = asyncio.Lock()
        self._topic = TopicKeeper(properties)
        self._consumer: TriggerConsumer | None = None
        self._on_unacknowledged = on_unacknowledged
        self._observer = observer
        # Acknowledgements being waited for, and on_unacknowledged calls running; their tasks.
        self._unacknowledged: dict[asyncio.Future[Any], Sequence[BaseTask]] = {}
        self._hurrying: dict[asyncio.Future[None], Sequence[BaseTask]] = {}
        # Hand-overs waiting for the end of a coalescing spell, and flushes running.
        self._coalesce = coalesce
        self._buffer: list[_HandOver] = []
        self._flush_at: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._last_request = -coalesce
        self.probes = 0
        """How many background probes of a failed broker were sent."""

    @property
    def paused(self) -> bool:
        """True while fetching is paused because ``max_in_flight`` callbacks are running."""
        return self._consumer is not None and self._consumer.paused

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Send one message per task and wait for the broker's acknowledgement of all of them.

        With ``on_unacknowledged``, the same as :meth:`hand_over` to it.

        Raises:
            TriggerError: not acknowledged within ``send_timeout`` or refused by the broker;
                ``__cause__`` holds the aiokafka error.
        """
        await self._trigger(tasks, self._on_unacknowledged)

    async def hand_over(self, tasks: Sequence[BaseTask], on_unacknowledged: Unacknowledged) -> None:
        """Send one message per task; return once the producer has them, without the ack.

        The tasks are durable once committed and a trigger is a hint, so the caller need not
        wait for the broker. Triggers the broker then refuses, or does not acknowledge within
        ``send_timeout``, are passed to ``on_unacknowledged`` (which should pull the tasks'
        pick-up deadlines, as the caller does after a :class:`TriggerError`), and logged with
        their task ids; so are those still unacknowledged when :meth:`stop` gives up waiting.

        Raises:
            TriggerError: the producer could not take them within ``send_timeout``, or the
                topic is known to be down (a failed send, no successful probe since).
        """
        await self._trigger(tasks, on_unacknowledged)

    async def _trigger(
        self, tasks: Sequence[BaseTask], on_unacknowledged: Unacknowledged | None
    ) -> None:
        if not tasks:
            return
        messages = [(self._partition_key(task), encode_trigger(task)) for task in tasks]
        topic = self._properties.triggers_topic
        if self._down:
            self._probe_soon(messages)
            raise TriggerError(
                f"Kafka topic {topic!r} failed and has not answered a probe since; not waiting "
                f"for it (tasks are left to database polling)",
                transient=True,
            )
        if on_unacknowledged is not None:
            now = asyncio.get_running_loop().time()
            if self._flush_at is not None or now < self._last_request + self._coalesce:
                self._buffer.append(_HandOver(tasks, messages, on_unacknowledged))
                if self._flush_at is None:
                    self._flush_at = asyncio.get_running_loop().call_at(
                        self._last_request + self._coalesce, self._flush_later
                    )
                return
            self._last_request = now
        try:
            if on_unacknowledged is None:
                await self._send(messages)
            else:
                acknowledged = await self._send(messages, wait=False)
                if acknowledged is not None:
                    self._watch([_HandOver(tasks, messages, on_unacknowledged)], acknowledged)
        except _SEND_ERRORS as exc:
            self._failed(exc)
            raise TriggerError(
                f"could not send triggers for task(s) {_ids(tasks)} to Kafka topic {topic!r}: "
                f"{exc!r}",
                transient=is_transient(exc),
            ) from exc

    def _flush_later(self) -> None:
        """The coalescing spell is over: send what was handed over meanwhile, in the background."""
        self._flush_at = None
        hand_overs, self._buffer = self._buffer, []
        self._last_request = asyncio.get_running_loop().time()
        self._start_flush(hand_overs)

    def _start_flush(self, hand_overs: list[_HandOver]) -> None:
        """Send ``hand_overs`` in the background (:meth:`_settle` waits for it)."""
        flush = asyncio.ensure_future(self._flush(hand_overs))
        self._flushing.add(flush)
        flush.add_done_callback(self._flushing.discard)

    async def _flush(self, hand_overs: list[_HandOver]) -> None:
        """Send ``hand_overs`` in one go; what cannot be sent goes to their callbacks."""
        if not hand_overs:
            return
        if self._down:  # failed since: no send, straight to polling
            self._lost(hand_overs, TriggerError("the Kafka topic failed", transient=True))
            return
        messages = [message for hand_over in hand_overs for message in hand_over.messages]
        try:
            acknowledged = await self._send(messages, wait=False)
        except asyncio.CancelledError:  # stop gave up on this send: never drop them silently
            self._lost(hand_overs, TimeoutError("stopped while sending"))
            raise
        except _SEND_ERRORS as exc:
            self._failed(exc)
            self._lost(hand_overs, exc)
            return
        except Exception as exc:
            logger.exception("sending %d coalesced trigger(s) failed", len(messages))
            self._lost(hand_overs, exc)
            return
        if acknowledged is not None:
            self._watch(hand_overs, acknowledged)

    async def _send(
        self, messages: list[tuple[bytes, bytes]], *, wait: bool = True
    ) -> asyncio.Future[Any] | None:
        """Send; with ``wait`` also await the acknowledgements, else return their future."""
        topic = self._properties.triggers_topic
        acknowledged: asyncio.Future[Any] | None = None
        producer = self._producer
        if wait or producer is None or self._producer_generation != self._topic.generation:
            async with asyncio.timeout(self._send_timeout):
                producer = await self._open_producer()
                if wait:
                    await _send_all(producer, topic, messages)
                else:
                    acknowledged = await _hand_over(producer, topic, messages)
        else:
            # The hot path of add_task: the producer is open, and hands over without waiting
            # for the broker (aiokafka bounds a send blocked on metadata or a full buffer by
            # its request_timeout_ms, our send_timeout): no timer, no lock.
            acknowledged = await _hand_over(producer, topic, messages)
        now = asyncio.get_running_loop().time()
        if now >= self._next_partition_check:
            # A topic re-created by the broker's auto-creation takes sends all the same, on
            # fewer partitions: look at our metadata now and then (a dictionary look-up).
            self._next_partition_check = now + _PARTITION_CHECK_INTERVAL
            async with asyncio.timeout(self._send_timeout):
                known = await producer.partitions_for(topic)
            if len(known) < self._topic.partitions:
                self._topic.suspect(f"the producer's metadata shows partitions {known}", len(known))
        return acknowledged

    def _watch(self, hand_overs: list[_HandOver], acknowledged: asyncio.Future[Any]) -> None:
        """Hand triggers not acknowledged within ``send_timeout`` to their callbacks."""
        self._unacknowledged[acknowledged] = [
            t for hand_over in hand_overs for t in hand_over.tasks
        ]
        timer = asyncio.get_running_loop().call_later(self._send_timeout, acknowledged.cancel)

        def done(future: asyncio.Future[Any]) -> None:
            timer.cancel()
            self._unacknowledged.pop(future, None)
            if future.cancelled():
                error: BaseException = TimeoutError(f"no acknowledgement in {self._send_timeout} s")
            elif future.exception() is None:
                return
            else:
                error = future.exception()  # type: ignore[assignment]
            self._failed(error)
            self._lost(hand_overs, error)

        acknowledged.add_done_callback(done)

    def _lost(self, hand_overs: list[_HandOver], error: BaseException) -> None:
        """Pass the tasks of lost hand-overs to their callbacks (one call per callback)."""
        by_callback: dict[Unacknowledged, list[BaseTask]] = {}
        for hand_over in hand_overs:
            by_callback.setdefault(hand_over.on_unacknowledged, []).extend(hand_over.tasks)
        for on_unacknowledged, tasks in by_callback.items():
            hurry = asyncio.ensure_future(self._hurry(tasks, error, on_unacknowledged))
            self._hurrying[hurry] = tasks
            hurry.add_done_callback(self._hurrying.pop)

    async def _hurry(
        self, tasks: Sequence[BaseTask], error: BaseException, on_unacknowledged: Unacknowledged
    ) -> None:
        logger.warning(
            "Kafka did not acknowledge the trigger(s) of task(s) %s (%r): handing them to "
            "database polling",
            _ids(tasks),
            error,
        )
        try:
            await on_unacknowledged(tasks)
        except Exception:
            logger.exception(
                "handing %d unacknowledged trigger(s) to polling failed (task(s) %s); they run "
                "after their expected queue time",
                len(tasks),
                _ids(tasks),
            )

    def _failed(self, error: BaseException) -> None:
        """A send failed: fail every call at once until a background probe succeeds."""
        if not self._down:
            logger.warning(
                "Kafka topic %s unavailable (%r): triggers fail at once until a probe succeeds",
                self._properties.triggers_topic,
                error,
            )
        self._down = True
        self._next_probe = asyncio.get_running_loop().time() + self._retry_after
        self._topic.suspect(f"a send failed: {error!r}")

    def _probe_soon(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Send ``messages`` in the background to learn whether the broker is back.

        One probe at a time, at most one per ``retry_after``; duplicate triggers are harmless.
        """
        if self._probe is not None and not self._probe.done():
            return
        if asyncio.get_running_loop().time() < self._next_probe:
            return
        self.probes += 1
        self._probe = asyncio.create_task(self._run_probe(messages), name="resilient-task-probe")

    async def _run_probe(self, messages: list[tuple[bytes, bytes]]) -> None:
        try:
            await self._send(messages)  # a probe waits for the acknowledgement
        except _SEND_ERRORS as exc:
            self._failed(exc)
        except Exception:
            logger.exception("probing Kafka topic %s failed", self._properties.triggers_topic)
            self._failed(RuntimeError("probe failed"))
        else:
            self._down = False
            logger.warning("Kafka topic %s takes triggers again", self._properties.triggers_topic)

    async def start(self, on_trigger: TriggerCallback) -> None:
        """Join the consumer group and deliver triggers to ``on_trigger`` in the background.

        Returns once subscribed, or after ``connect_timeout`` while the broker is unreachable
        (it keeps trying, logging once per outage).

        Raises:
            ConfigurationError: the topic is missing and cannot be created, or its settings are
                impossible.
        """
        if self._consumer is not None:
            raise RuntimeError("KafkaTriggerer is already started")
        self._consumer = TriggerConsumer(
            properties=self._properties,
            options=self._consumer_options(),
            on_trigger=on_trigger,
            max_in_flight=self._max_in_flight,
            stop_timeout=self._stop_timeout,
            commit_interval=self._commit_interval,
            connect_timeout=self._connect_timeout,
            topic=self._topic,
            observer=self._observer,
        )
        try:
            await self._consumer.start()
        except BaseException:
            self._consumer = None
            raise

    async def stop(self) -> None:
        """Stop consuming (handled offsets committed) and close the producer. Idempotent.

        Takes at most ``stop_timeout`` (running callbacks) plus 3 s (the last commit and
        leaving the group) plus twice ``send_timeout`` (handed-over triggers: sent and
        acknowledged, else passed to their callbacks) plus 1 s (closing the producer), whatever
        the broker does; what is left finishes in the background.
        """
        consumer, self._consumer = self._consumer, None
        probe, self._probe = self._probe, None
        try:
            if probe is not None and not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
            if consumer is not None:
                await consumer.stop()
        finally:
            await self._settle()
            await self._topic.close()
            async with self._producer_lock:
                producer, self._producer = self._producer, None
            if producer is not None:
                # Acknowledgements of a live broker come in milliseconds; a dead broker's never.
                wait = min(self._send_timeout, _PRODUCER_CLOSE_WAIT)
                await close_client(producer, what="Kafka trigger producer", wait=wait)

    async def _settle(self) -> None:
        """Send what is coalesced, wait for acknowledgements, hand the rest to its callbacks.

        ``send_timeout`` at most for the sends and acknowledgements, as long again for the
        callbacks. Never silent: tasks whose callback is still running when this gives up are
        logged (they are in the store and run after their expected queue time).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._send_timeout
        if self._flush_at is not None:  # send the coalesced hand-overs now
            self._flush_at.cancel()
            self._flush_at = None
        hand_overs, self._buffer = self._buffer, []
        if hand_overs:
            self._start_flush(hand_overs)
        if self._flushing:
            flushing = list(self._flushing)
            _, stuck = await asyncio.wait(flushing, timeout=max(0, deadline - loop.time()))
            for sending in stuck:
                sending.cancel()  # its hand-overs go to their callbacks
            await asyncio.gather(*flushing, return_exceptions=True)
        if self._unacknowledged:
            unacknowledged = list(self._unacknowledged)
            await asyncio.wait(unacknowledged, timeout=max(0, deadline - loop.time()))
            for future in unacknowledged:
                future.cancel()  # its done callback starts the hand-over to polling
            await asyncio.sleep(0)  # let those callbacks run
        if self._hurrying:
            _, pending = await asyncio.wait(list(self._hurrying), timeout=self._send_timeout)
            if pending:
                left = [task for hurry in pending for task in self._hurrying.get(hurry, ())]
                logger.warning(
                    "stopping with %d unacknowledged trigger(s) not yet handed to polling "
                    "(task(s) %s): they run after their expected queue time",
                    len(left),
                    _ids(left),
                )

    async def __aenter__(self) -> KafkaTriggerer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _open_producer(self) -> Any:
        async with self._producer_lock:
            if not self._topic.partitions:
                await self._topic.ensure(time_limit=self._send_timeout)
            if self._producer is not None and self._producer_generation != self._topic.generation:
                # The topic was re-created: a new producer reads its partitions afresh.
                stale, self._producer = self._producer, None
                await close_client(stale, what="replaced Kafka trigger producer", wait=0)
            if self._producer is None:
                producer = AIOKafkaProducer(**self._producer_options())
                try:
                    await producer.start()
                except BaseException:
                    await self._close_producer(producer)
                    raise
                self._producer = producer
                self._producer_generation = self._topic.generation
            return self._producer

    async def _close_producer(self, producer: Any) -> None:
        await close_client(producer, what="Kafka trigger producer", wait=self._send_timeout)

    def _producer_options(self) -> dict[str, Any]:
        return client_options(
            self._properties,
            AIOKafkaProducer,
            acks="all",
            linger_ms=0,
            enable_idempotence=False,
            request_timeout_ms=max(1000, int(self._send_timeout * 1000)),
            retry_backoff_ms=50,
        )

    def _consumer_options(self) -> dict[str, Any]:
        options = client_options(
            self._properties,
            AIOKafkaConsumer,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
            fetch_min_bytes=1,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            retry_backoff_ms=100,
        )
        options.update(group_id=self._properties.consumer_group_id, enable_auto_commit=False)
        return options


async def _send_all(producer: Any, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    futures: list[asyncio.Future[Any]] = []
    try:
        for key, value in messages:
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        for future in futures:
            # After a failure or timeout, nobody awaits the rest; retrieve their outcome.
            future.add_done_callback(_discard_outcome)


async def _hand_over(
    producer: Any, topic: str, messages: list[tuple[bytes, bytes]]
) -> asyncio.Future[Any]:
    """Give ``messages`` to the producer; a future of all their acknowledgements."""
    futures: list[asyncio.Future[Any]] = []
    try:
        for key, value in messages:
            futures.append(await producer.send(topic, value, key=key))
    finally:
        for future in futures:
            future.add_done_callback(_discard_outcome)
    return futures[0] if len(futures) == 1 else asyncio.gather(*futures)


def _ids(tasks: Sequence[BaseTask], shown: int = 5) -> str:
    """The first ``shown`` task ids, and how many more, for a log line."""
    ids = ", ".join(str(task.id) for task in tasks[:shown])
    return f"{ids} and {len(tasks) - shown} more" if len(tasks) > shown else ids


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

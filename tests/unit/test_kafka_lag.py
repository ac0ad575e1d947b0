"""The Kafka consumer lag: measured per partition, reported to the Observer, gone when revoked.

Against a fake aiokafka consumer whose log ends, committed offsets and log starts the tests
set; the same gauge against Apache Kafka is in ``tests/integration/test_kafka_lag.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition

from resilient_task.adapters.kafka import consumer as consumer_module
from resilient_task.adapters.kafka.consumer import TriggerConsumer
from resilient_task.adapters.kafka.lag import LagMeter
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import TopicKeeper
from resilient_task.adapters.prometheus.observer import PrometheusObserver
from resilient_task.domain.task import BaseTask
from resilient_task.ports.observer import NULL_OBSERVER

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

TOPIC = "resilient-task.triggers"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
LAG = "resilient_task_kafka_consumer_lag"


class RecordingObserver(PrometheusObserver):
    """The Prometheus observer, also keeping every consumer_lag call in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int, int | None]] = []

    def consumer_lag(self, topic: str, partition: int, lag: int | None) -> None:
        self.calls.append((topic, partition, lag))
        super().consumer_lag(topic, partition, lag)

    def gauge(self, partition: int) -> float | None:
        return self.registry.get_sample_value(LAG, {"topic": TOPIC, "partition": str(partition)})


class FakeConsumer:
    """Offsets as a broker would answer them; ``gate`` holds ``end_offsets`` until set."""

    def __init__(self, ends: dict[Any, int], committed: dict[Any, int | None]) -> None:
        self.ends, self.group_committed = ends, committed
        self.starts = dict.fromkeys(ends, 0)
        self.assigned = set(ends)
        self.coordinator_calls = self.end_calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    async def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        self.end_calls += 1
        await self.gate.wait()
        return {p: self.ends[p] for p in partitions}

    async def committed(self, partition: Any) -> int | None:
        self.coordinator_calls += 1
        return self.group_committed[partition]

    async def beginning_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        return {p: self.starts[p] for p in partitions}


def meter(observer: RecordingObserver, *, from_start: bool = True) -> LagMeter:
    return LagMeter(observer=observer, interval=0.01, timeout=1.0, from_start=from_start)


async def test_lag_is_the_log_end_minus_the_committed_offset_per_partition() -> None:
    observer = RecordingObserver()
    fake = FakeConsumer({P0: 10, P1: 5}, {P0: 3, P1: None})
    fake.starts[P1] = 2  # never committed: the group would start at the log start
    lags = meter(observer)

    assert await lags.measure(fake) == {P0: 7, P1: 3}
    assert (observer.gauge(0), observer.gauge(1)) == (7.0, 3.0)

    # Our own commits are followed without asking the coordinator again.
    lags.committed({P0: 8, P1: 5})
    fake.ends[P0] = 12
    assert await lags.measure(fake) == {P0: 4, P1: 0}
    assert fake.coordinator_calls == 2


async def test_without_auto_offset_reset_earliest_an_uncommitted_partition_is_not_reported() -> (
    None
):
    observer = RecordingObserver()
    fake = FakeConsumer({P0: 10, P1: 5}, {P0: 3, P1: None})
    assert await meter(observer, from_start=False).measure(fake) == {P0: 7}
    assert observer.gauge(1) is None


async def test_a_revoked_partition_loses_its_series_and_a_stopped_meter_all_of_them() -> None:
    observer = RecordingObserver()
    fake = FakeConsumer({P0: 10, P1: 5}, {P0: 3, P1: 1})
    lags = meter(observer)
    await lags.measure(fake)

    fake.assigned.discard(P1)
    lags.forget([P1])
    assert observer.gauge(1) is None
    assert observer.gauge(0) == 7.0
    await lags.stop()
    assert observer.gauge(0) is None
    assert observer.calls[-2:] == [(TOPIC, 1, None), (TOPIC, 0, None)]


async def test_a_measurement_overtaken_by_a_revocation_reports_nothing() -> None:
    observer = RecordingObserver()
    fake = FakeConsumer({P0: 10}, {P0: 3})
    lags = meter(observer)
    fake.gate.clear()
    measuring = asyncio.create_task(lags.measure(fake))
    await asyncio.sleep(0.01)  # waiting for the log ends
    fake.assigned.clear()
    lags.forget([P0])
    fake.gate.set()

    assert await measuring == {}
    assert observer.calls == []
    assert observer.gauge(0) is None
    # Re-assigned later, it asks the coordinator again rather than trust an old number.
    fake.assigned.add(P0)
    fake.group_committed[P0] = 9
    assert await lags.measure(fake) == {P0: 1}


async def test_nothing_is_measured_for_the_null_observer() -> None:
    fake = FakeConsumer({P0: 10}, {P0: 3})
    lags = LagMeter(observer=NULL_OBSERVER, interval=0.0, timeout=1.0)
    lags.tick(fake)
    await asyncio.sleep(0.02)
    assert fake.end_calls == fake.coordinator_calls == 0
    await lags.stop()


async def test_a_failing_broker_leaves_the_gauge_as_it_was_and_consuming_alone() -> None:
    observer = RecordingObserver()
    fake = FakeConsumer({P0: 10}, {P0: 3})
    lags = meter(observer)
    lags.tick(fake)
    await _until(lambda: observer.gauge(0) == 7.0)

    async def refuse(partitions: list[Any]) -> dict[Any, int]:
        raise ConnectionError("broker down")

    fake.end_offsets = refuse  # type: ignore[method-assign]
    await asyncio.sleep(0.02)
    lags.tick(fake)
    await asyncio.sleep(0.02)
    assert observer.gauge(0) == 7.0
    await lags.stop()


# -- through the consumer ----------------------------------------------------------------------


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


class ConsumingFake(FakeConsumer):
    """One partition whose records are fetched, handled and committed by TriggerConsumer."""

    def __init__(self, values: list[bytes]) -> None:
        super().__init__({P0: len(values)}, {P0: None})
        self._values, self._next = values, 0
        self.listener: Any = None

    async def start(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def paused(self) -> set[Any]:
        return set()

    def pause(self, *partitions: Any) -> None:
        return None

    def resume(self, *partitions: Any) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def highwater(self, partition: Any) -> int:
        return len(self._values)

    async def position(self, partition: Any) -> int:
        return self._next

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if self._next < len(self._values):
            self._next += 1
            return {P0: [Record(self._next - 1, self._values[self._next - 1])]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.group_committed.update(offsets)

    async def stop(self) -> None:
        return None


class Keeper(TopicKeeper):
    async def ensure(self, time_limit: float) -> None:
        self.partitions = 1


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_the_consumer_reports_its_lag_falling_as_it_handles_and_commits_triggers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_task.adapters.kafka.messages import encode_trigger
    from resilient_task.testing.triggerer_contract import make_tasks

    fake = ConsumingFake([encode_trigger(t) for t in make_tasks(6)])
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", lambda **_: fake)
    release = asyncio.Event()
    handled: list[BaseTask] = []

    async def slow(task: BaseTask) -> None:
        await release.wait()
        handled.append(task)

    observer = RecordingObserver()
    properties = KafkaProperties()
    consumer = TriggerConsumer(
        properties=properties,
        options={"auto_offset_reset": "earliest"},
        on_trigger=slow,
        max_in_flight=100,
        stop_timeout=0.5,
        commit_interval=0.02,
        connect_timeout=1.0,
        topic=Keeper(properties),
        observer=observer,
        lag_interval=0.02,
    )
    await consumer.start()
    try:
        await fake.listener.on_partitions_assigned({P0})
        # All six fetched, none handled: nothing committed, all six wait.
        await _until(lambda: observer.gauge(0) == 6.0)
        release.set()
        await _until(lambda: observer.gauge(0) == 0.0)
        assert len(handled) == 6
        assert fake.group_committed[P0] == 6
    finally:
        await consumer.stop()
    assert observer.gauge(0) is None  # stopped: not this node's partition any more

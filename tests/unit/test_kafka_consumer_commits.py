"""The consumer's offset commits against a fake aiokafka consumer: they never hold up fetching.

A broker that lost the topic (or its group coordinator) answers commits with errors, or not at
all, while fetches still work. Fetching must go on, a failed commit must be retried later, and
stopping must stay within its bound (``stop_timeout`` plus three seconds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from resilient_task.adapters.kafka import consumer as consumer_module
from resilient_task.adapters.kafka.consumer import TriggerConsumer
from resilient_task.adapters.kafka.messages import encode_trigger
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import TopicKeeper
from resilient_task.domain.task import BaseTask
from resilient_task.testing.triggerer_contract import make_tasks

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

P0 = TopicPartition("resilient-task.triggers", 0)
STOP_TIMEOUT = 0.5
STOP_BOUND = STOP_TIMEOUT + 3.0


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


class FakeConsumer:
    """One partition holding ``values``; commits behave as ``commit_behaviour`` says."""

    def __init__(self, values: list[bytes], commit_behaviour: str, failures: int = 0) -> None:
        self._values = values
        self._next = 0
        self._behaviour, self._failures = commit_behaviour, failures
        self.commit_calls = 0
        self.committed: dict[TopicPartition, int] = {}
        self.listener: Any = None

    async def start(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return {P0}

    def paused(self) -> set[TopicPartition]:
        return set()

    def pause(self, *partitions: TopicPartition) -> None:
        return None

    def resume(self, *partitions: TopicPartition) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def highwater(self, partition: TopicPartition) -> int:
        return len(self._values)

    async def position(self, partition: TopicPartition) -> int:
        return self._next

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if self._next < len(self._values):
            await asyncio.sleep(0.02)  # one trigger per 20 ms: commits fall due meanwhile
            offset = self._next
            self._next += 1
            return {P0: [Record(offset, self._values[offset])]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commit_calls += 1
        if self._behaviour == "hang":
            await asyncio.Event().wait()  # a broker that never answers
        if self.commit_calls <= self._failures:
            raise KafkaConnectionError("commit refused")
        self.committed.update(offsets)

    async def stop(self) -> None:
        return None


class Keeper(TopicKeeper):
    """The topic exists: nothing to ensure."""

    async def ensure(self, time_limit: float) -> None:
        self.partitions = 1


async def _start(
    monkeypatch: pytest.MonkeyPatch, fake: FakeConsumer, received: list[BaseTask]
) -> TriggerConsumer:
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", lambda **_: fake)

    async def record(task: BaseTask) -> None:
        received.append(task)

    properties = KafkaProperties()
    consumer = TriggerConsumer(
        properties=properties,
        options={},
        on_trigger=record,
        max_in_flight=100,
        stop_timeout=STOP_TIMEOUT,
        commit_interval=0.05,
        connect_timeout=1.0,
        topic=Keeper(properties),
    )
    await consumer.start()
    await fake.listener.on_partitions_assigned({P0})
    return consumer


async def _wait_for(condition: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_fetching_goes_on_while_a_commit_hangs_and_stop_keeps_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = make_tasks(40)
    fake = FakeConsumer([encode_trigger(t) for t in tasks], "hang")
    received: list[BaseTask] = []
    consumer = await _start(monkeypatch, fake, received)

    delivered = await _wait_for(lambda: len(received) == len(tasks), 3.0)
    began = time.monotonic()
    await consumer.stop()
    took = time.monotonic() - began

    assert fake.commit_calls >= 1, "no commit was attempted"
    assert delivered, (
        f"only {len(received)} of {len(tasks)} triggers delivered in 3 s while a commit hung "
        f"({fake.commit_calls} commit call(s))"
    )
    assert fake.committed == {}
    assert took <= STOP_BOUND, f"stop took {took:.1f} s with a hanging commit (bound {STOP_BOUND})"


async def test_a_failed_commit_is_retried_later_until_its_offsets_are_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = make_tasks(5)
    fake = FakeConsumer([encode_trigger(t) for t in tasks], "fail", failures=2)
    received: list[BaseTask] = []
    consumer = await _start(monkeypatch, fake, received)
    try:
        committed = await _wait_for(lambda: fake.committed.get(P0) == len(tasks), 10.0)
    finally:
        await consumer.stop()

    assert [t.id for t in received] == [t.id for t in tasks]
    assert committed, f"offsets never committed after failures: {fake.committed}"
    assert consumer.failed_commits == 2
    assert fake.commit_calls == 3

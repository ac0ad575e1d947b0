"""TopicKeeper: a lost topic is checked again in the background, at most once per interval."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilient_task.adapters.kafka import topics as topics_module
from resilient_task.adapters.kafka.topics import TopicKeeper
from resilient_task.errors import BackendError
from resilient_task.properties import KafkaProperties

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


class Broker:
    """Answers ensure_topic: the topic's partition count, and whether the call changed it."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bool]] = []
        self.calls: list[int] = []

    async def ensure_topic(
        self, properties: KafkaProperties, *, time_limit: float, restore_partitions: int
    ) -> tuple[int, bool]:
        self.calls.append(restore_partitions)
        return self.answers.pop(0)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    fake = Broker()
    monkeypatch.setattr(topics_module, "ensure_topic", fake.ensure_topic)
    return fake


async def _settle(keeper: TopicKeeper) -> None:
    for _ in range(10):
        await asyncio.sleep(0)
    await keeper.close()


async def test_many_suspicions_within_the_interval_make_one_check(broker: Broker) -> None:
    keeper = TopicKeeper(KafkaProperties(), min_interval=60.0)
    broker.answers = [(6, True), (6, False)]
    await keeper.ensure(time_limit=1.0)

    for n in range(100):  # every failed send and commit of an outage suspects the topic
        keeper.suspect(f"failure {n}")
    await _settle(keeper)

    assert keeper.checks == 1
    assert broker.calls == [0, 6]  # the check asks to restore the 6 partitions seen
    assert keeper.generation == 0  # the topic was there all along


async def test_a_topic_found_lost_and_repaired_bumps_the_generation(broker: Broker) -> None:
    keeper = TopicKeeper(KafkaProperties(), min_interval=0.0)
    broker.answers = [(6, True), (6, True), (6, False)]
    await keeper.ensure(time_limit=1.0)  # created at first use: not a loss
    assert keeper.generation == 0

    keeper.suspect("a commit failed")  # re-created (or partitions added back)
    await _settle(keeper)
    assert keeper.generation == 1
    assert keeper.partitions == 6

    keeper.suspect("a send failed")  # there: nothing to repair
    await _settle(keeper)
    assert keeper.generation == 1
    assert keeper.checks == 2


async def test_a_failing_check_is_swallowed_and_retried_on_the_next_suspicion(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = TopicKeeper(KafkaProperties(), min_interval=0.0)
    attempts: list[Any] = []

    async def down(*_: Any, **__: Any) -> tuple[int, bool]:
        attempts.append(1)
        raise BackendError("broker down", transient=True)

    monkeypatch.setattr(topics_module, "ensure_topic", down)
    keeper.suspect("a send failed")
    await _settle(keeper)
    keeper.suspect("a send failed again")
    await _settle(keeper)

    assert len(attempts) == 2
    assert keeper.partitions == 0

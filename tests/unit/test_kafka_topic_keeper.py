"""TopicKeeper: a lost topic is checked again in the background, at most once per interval;
its lost partitions are added back where the broker can."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import IncompatibleBrokerVersion, KafkaConnectionError

from resilient_task.adapters.kafka import topics as topics_module
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import TopicKeeper
from resilient_task.errors import BackendError

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


class Admin:
    """An admin client over a topic with ``partitions``; adding partitions fails with ``error``."""

    def __init__(self, partitions: int, error: BaseException | None = None) -> None:
        self.partitions, self.error = partitions, error
        self.added: list[int] = []

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [{"topic": topics[0], "partitions": [{}] * self.partitions}]

    async def create_partitions(self, request: dict[str, Any]) -> None:
        if self.error is not None:
            raise self.error
        (new,) = request.values()
        self.added.append(new.total_count)
        self.partitions = new.total_count


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, (6, True)),  # added back
        (IncompatibleBrokerVersion("no CreatePartitions"), (1, False)),  # accepted as it is
    ],
)
async def test_a_topic_with_fewer_partitions_than_seen_gets_them_back_where_possible(
    error: BaseException | None, expected: tuple[int, bool]
) -> None:
    admin = Admin(1, error)

    result = await topics_module._check_partitions(admin, KafkaProperties(), 6)

    assert result == expected


async def test_a_transient_failure_to_add_partitions_is_raised_for_the_next_check() -> None:
    admin = Admin(1, KafkaConnectionError("broker restarting"))

    with pytest.raises(KafkaConnectionError):
        await topics_module._check_partitions(admin, KafkaProperties(), 6)


async def test_a_topic_with_as_many_partitions_as_seen_is_left_alone() -> None:
    admin = Admin(3)

    assert await topics_module._check_partitions(admin, KafkaProperties(), 3) == (3, False)
    assert admin.added == []


async def test_a_topic_listed_without_partitions_yet_is_checked_again_later() -> None:
    """Right after auto-creation the broker may describe the topic without its partitions."""
    with pytest.raises(BackendError) as caught:
        await topics_module._check_partitions(Admin(0), KafkaProperties(), 6)
    assert caught.value.transient


async def test_a_client_seeing_fewer_partitions_than_the_topic_has_is_told_to_reconnect(
    broker: Broker,
) -> None:
    """Another node repaired the topic: this node's clients still have the old metadata."""
    keeper = TopicKeeper(KafkaProperties(), min_interval=0.0)
    broker.answers = [(6, True), (6, False), (6, False)]
    await keeper.ensure(time_limit=1.0)

    keeper.suspect("the consumer's metadata shows partitions {0}", seen=1)
    await _settle(keeper)
    assert keeper.generation == 1

    keeper.suspect("a commit failed")  # no partition count seen: nothing to reconnect for
    await _settle(keeper)
    assert keeper.generation == 1

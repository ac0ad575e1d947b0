"""The consumer's check for partitions whose log the broker lost, against a fake consumer."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka import TopicPartition

from resilient_task.adapters.kafka.consumer import TriggerConsumer
from resilient_task.adapters.kafka.properties import KafkaProperties

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

P0, P1 = TopicPartition("triggers", 0), TopicPartition("triggers", 1)


class RebalancingConsumer:
    """Owns P0 and P1; a rebalance revokes P1 while the position of P0 is being read."""

    def __init__(self, *, end: int, position: int) -> None:
        self.assigned = {P0, P1}
        self.end, self.at = end, position
        self.rewound: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, partition: TopicPartition) -> int:
        assert partition in self.assigned, "Partition is not assigned"  # as aiokafka does
        return self.end

    async def position(self, partition: TopicPartition) -> int:
        assert partition in self.assigned, "Partition is not assigned"
        self.assigned.discard(P1)  # the rebalance runs while we await
        return self.at

    async def seek_to_beginning(self, partition: TopicPartition) -> None:
        assert partition in self.assigned, "Partition is not assigned"
        self.rewound.append(partition)


def _consumer() -> TriggerConsumer:
    async def ignore(_task: Any) -> None:
        return None

    return TriggerConsumer(
        properties=KafkaProperties(),
        options={},
        on_trigger=ignore,
        max_in_flight=1,
        stop_timeout=1,
        commit_interval=1,
        connect_timeout=1,
    )


@pytest.mark.parametrize(("end", "position", "rewound"), [(1, 192, [P0]), (200, 192, [])])
async def test_a_partition_revoked_during_the_check_is_skipped(
    end: int, position: int, rewound: list[TopicPartition]
) -> None:
    fake = RebalancingConsumer(end=end, position=position)
    await _consumer()._rewind_past_log_end(fake)
    assert fake.rewound == rewound


class InconsistentConsumer:
    """Owns P0, whose reported end stays below our position however often we rewind."""

    def __init__(self) -> None:
        self.end = 1
        self.rewound = 0

    def assignment(self) -> set[TopicPartition]:
        return {P0}

    def highwater(self, partition: TopicPartition) -> int:
        return self.end

    async def position(self, partition: TopicPartition) -> int:
        return 192

    async def seek_to_beginning(self, partition: TopicPartition) -> None:
        self.rewound += 1


async def test_rewinds_of_a_partition_are_damped_counted_and_logged_once_per_episode(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_task.adapters.kafka")
    clock = [1000.0]
    monkeypatch.setattr(TriggerConsumer, "_now", staticmethod(lambda: clock[0]), raising=False)
    fake, consumer = InconsistentConsumer(), _consumer()

    for _ in range(50):  # fifty checks (commit intervals) within one instant
        await consumer._rewind_past_log_end(fake)
    assert fake.rewound == 1

    for _ in range(60):  # a minute of checks, one per second: backoff 1 s doubling to 30 s
        clock[0] += 1.0
        await consumer._rewind_past_log_end(fake)
    # Delays double from 1 s to 30 s, each jittered down to half: with the shortest ones the
    # rewinds come at +1, +2, +4, +8, +16, +31, +46 s (8 with the first), with the longest at
    # +1, +3, +7, +15, +31 s (6). Undamped, it would be 61.
    assert 6 <= fake.rewound <= 8, fake.rewound
    assert consumer.rewinds == fake.rewound
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]

    fake.end = 500  # consistent again; after a quiet minute the episode is over
    clock[0] += 61.0
    await consumer._rewind_past_log_end(fake)
    fake.end = 1
    before = fake.rewound
    await consumer._rewind_past_log_end(fake)
    assert fake.rewound == before + 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, "a new episode is logged as a warning again"

"""KafkaTriggerer against a real Kafka-protocol broker: the contract plus Kafka's own promises.

Every test gets its own topic namespace and consumer group. The consumer's session timeout is
lowered (through ``KafkaProperties.extra``) so group joins and restarts take about a second.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from aiokafka import AIOKafkaProducer

from resilient_task.adapters.kafka import KafkaTriggerer
from resilient_task.adapters.kafka.messages import decode_trigger, encode_trigger
from resilient_task.adapters.kafka.offsets import PartitionOffsets
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import ensure_topic
from resilient_task.domain.task import BaseTask
from resilient_task.errors import ConfigurationError, TriggerError
from resilient_task.testing.triggerer_contract import (
    DurableTriggererContract,
    Recorder,
    make_tasks,
    running,
)

pytestmark = pytest.mark.integration

FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300}
DELIVERY_TIMEOUT = 15.0


def make_properties(bootstrap: str, *, partitions: int = 3) -> KafkaProperties:
    namespace = f"rt-test-{uuid.uuid4().hex[:12]}"
    return KafkaProperties(
        bootstrap_servers=bootstrap,
        topics_namespace=namespace,
        consumer_group_id=f"{namespace}-group",
        partitions=partitions,
        client_id="resilient-task-tests",
        extra=dict(FAST_GROUP),
    )


def make_triggerer(properties: KafkaProperties, **options: float) -> KafkaTriggerer:
    defaults: dict[str, float] = {"stop_timeout": 0.5, "send_timeout": 5.0, "connect_timeout": 5}
    return KafkaTriggerer(properties=properties, **{**defaults, **options})  # type: ignore[arg-type]


async def produce_raw(properties: KafkaProperties, values: list[bytes | None]) -> None:
    await ensure_topic(properties)
    producer = AIOKafkaProducer(bootstrap_servers=properties.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(properties.triggers_topic, value, key=b"raw", partition=0)
    finally:
        await producer.stop()


class TestKafkaTriggererContract(DurableTriggererContract):
    delivery_timeout = DELIVERY_TIMEOUT
    quiet_period = 0.5

    @pytest.fixture
    async def triggerer(self, kafka_bootstrap: str) -> AsyncIterator[KafkaTriggerer]:
        triggerer = make_triggerer(
            make_properties(kafka_bootstrap),
            max_in_flight=self.max_in_flight,
            stop_timeout=self.stop_timeout,
        )
        yield triggerer
        await triggerer.stop()


@pytest.mark.anyio
class TestKafkaTriggerer:
    async def test_malformed_messages_are_skipped_and_later_triggers_delivered(
        self, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        properties = make_properties(kafka_bootstrap, partitions=1)
        garbage: list[bytes | None] = [None, b"", b"not json", b"null", b'{"v":2}', b"[1]"]
        await produce_raw(properties, garbage)
        tasks = make_tasks(3)
        caplog.set_level(logging.WARNING, logger="resilient_task.adapters.kafka")
        async with make_triggerer(properties) as triggerer:
            await triggerer.trigger(tasks)
            async with running(triggerer, Recorder()) as recorder:
                await recorder.wait_for_tasks(tasks, DELIVERY_TIMEOUT)
        skipped = [r for r in caplog.records if "malformed" in r.getMessage()]
        assert [f"offset {n}" in r.getMessage() for n, r in enumerate(skipped)] == [True] * 6
        assert recorder.ids == {task.id for task in tasks}

        caplog.clear()
        marker = make_tasks(1)
        async with make_triggerer(properties) as again:
            await again.trigger(marker)
            async with running(again, Recorder()) as second:
                await second.wait_for_tasks(marker, DELIVERY_TIMEOUT)
        assert second.ids == {marker[0].id}
        assert not [r for r in caplog.records if "malformed" in r.getMessage()]

    async def test_duplicate_trigger_messages_are_each_delivered(
        self, kafka_bootstrap: str
    ) -> None:
        task = make_tasks(1)[0]
        async with make_triggerer(make_properties(kafka_bootstrap)) as triggerer:
            await triggerer.trigger([task, task])
            async with running(triggerer, Recorder()) as recorder:
                await recorder.wait_for(lambda: len(recorder.received) == 2, DELIVERY_TIMEOUT)
        assert recorder.received == [task, task]

    async def test_a_new_consumer_in_the_group_gets_only_what_was_not_handled(
        self, kafka_bootstrap: str
    ) -> None:
        properties = make_properties(kafka_bootstrap, partitions=1)
        *handled, stuck = make_tasks(3)

        async def hang_on_stuck(task: BaseTask) -> None:
            if task.id == stuck.id:
                await anyio.sleep_forever()

        async with make_triggerer(properties) as first:
            await first.trigger(handled)
            await first.trigger([stuck])
            async with running(first, Recorder(hang_on_stuck)) as first_run:
                await first_run.wait_for_tasks([*handled, stuck], DELIVERY_TIMEOUT)
        second = make_triggerer(properties)
        async with second, running(second, Recorder()) as second_run:
            await second_run.wait_for_tasks([stuck], DELIVERY_TIMEOUT)
            await anyio.sleep(0.5)
        assert second_run.received == [stuck]

    async def test_fetching_pauses_at_max_in_flight_and_resumes_when_drained(
        self, kafka_bootstrap: str
    ) -> None:
        release = anyio.Event()

        async def wait_for_release(_: BaseTask) -> None:
            await release.wait()

        tasks = make_tasks(6)
        triggerer = make_triggerer(make_properties(kafka_bootstrap), max_in_flight=2)
        async with triggerer, running(triggerer, Recorder(wait_for_release)) as recorder:
            await triggerer.trigger(tasks)
            await recorder.wait_for(lambda: triggerer.paused, DELIVERY_TIMEOUT)
            await anyio.sleep(0.3)
            assert len(recorder.received) == 2
            release.set()
            await recorder.wait_for_tasks(tasks, DELIVERY_TIMEOUT)
            await recorder.wait_for(lambda: not triggerer.paused, DELIVERY_TIMEOUT)
        assert recorder.max_running == 2

    async def test_two_nodes_in_one_group_share_the_triggers(self, kafka_bootstrap: str) -> None:
        properties = make_properties(kafka_bootstrap, partitions=4)
        before, after = make_tasks(8), make_tasks(8)
        node_a, node_b = make_triggerer(properties), make_triggerer(properties)
        async with node_a, node_b, running(node_a, Recorder()) as recorder_a:
            await node_a.trigger(before)
            await recorder_a.wait_for_tasks(before, DELIVERY_TIMEOUT)
            async with running(node_b, Recorder()) as recorder_b:
                await node_b.trigger(after)
                await recorder_a.wait_for(
                    lambda: {t.id for t in after} <= recorder_a.ids | recorder_b.ids,
                    DELIVERY_TIMEOUT * 2,
                )
        assert not {t.id for t in before} & recorder_b.ids  # handled before: committed

    async def test_the_partition_key_chooses_each_message_key(self, kafka_bootstrap: str) -> None:
        keyed: list[BaseTask] = []

        def key(task: BaseTask) -> bytes:
            keyed.append(task)
            return task.type.encode()

        tasks = make_tasks(3)
        properties = make_properties(kafka_bootstrap)
        async with KafkaTriggerer(properties=properties, partition_key=key) as triggerer:
            await triggerer.trigger(tasks)
            async with running(triggerer, Recorder()) as recorder:
                await recorder.wait_for_tasks(tasks, DELIVERY_TIMEOUT)
        assert keyed == tasks


@pytest.mark.anyio
async def test_a_session_timeout_the_broker_refuses_is_logged_once_and_retried_with_backoff(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer setting only a configuration change fixes: one ERROR, no tight retry loop.

    The test brokers refuse sessions below 500 ms (group.min.session.timeout.ms).
    """
    caplog.set_level(logging.DEBUG, logger="resilient_task.adapters.kafka")
    properties = make_properties(kafka_bootstrap)
    properties = KafkaProperties(
        bootstrap_servers=properties.bootstrap_servers,
        topics_namespace=properties.topics_namespace,
        consumer_group_id=properties.consumer_group_id,
        partitions=1,
        extra={"session_timeout_ms": 100, "heartbeat_interval_ms": 30},
    )
    triggerer = make_triggerer(properties, connect_timeout=2)
    await triggerer.start(Recorder())
    try:
        await anyio.sleep(5.0)
    finally:
        await triggerer.stop()

    ours = [r for r in caplog.records if r.name.startswith("resilient_task")]
    errors = [r.getMessage() for r in ours if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    attempts = [r for r in ours if "InvalidSessionTimeout" in r.getMessage()]  # one per join
    assert len(errors) == 1, errors
    assert "session_timeout_ms=100" in errors[0]
    assert "group.min.session.timeout.ms" in errors[0]
    assert not [w for w in warnings if "unavailable" in w], warnings
    # Backoff from 0.1 s doubling to 5 s allows at most 7 attempts in 5 s; a loop that retries
    # every 100 ms makes dozens.
    assert 2 <= len(attempts) <= 8, [f"{r.created:.2f} {r.getMessage()}" for r in attempts]


@pytest.mark.anyio
class TestKafkaTriggererWithoutBroker:
    async def test_trigger_raises_a_transient_trigger_error_when_the_broker_is_unreachable(
        self,
    ) -> None:
        properties = KafkaProperties(bootstrap_servers="127.0.0.1:1")
        async with make_triggerer(properties, send_timeout=1.0) as triggerer:
            with pytest.raises(TriggerError, match="could not send triggers") as caught:
                await triggerer.trigger(make_tasks(1))
        assert caught.value.transient
        assert caught.value.__cause__ is not None

    async def test_start_returns_while_the_broker_is_unreachable_and_stop_still_works(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="resilient_task.adapters.kafka")
        properties = KafkaProperties(bootstrap_servers="127.0.0.1:1")
        triggerer = make_triggerer(properties, connect_timeout=0.5)
        started = time.monotonic()
        await triggerer.start(Recorder())
        await anyio.sleep(1.0)
        await triggerer.stop()
        assert time.monotonic() - started < 5
        ours = [r for r in caplog.records if r.name.startswith("resilient_task")]
        assert sum("unavailable" in r.getMessage() for r in ours) == 1

    def test_an_option_no_aiokafka_client_accepts_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="no_such_option"):
            KafkaTriggerer(properties=KafkaProperties(extra={"no_such_option": 1}))


def test_a_trigger_message_round_trips() -> None:
    for task in [*make_tasks(4), BaseTask(uuid.uuid4(), 0, "tÿpe", None, 0)]:
        assert decode_trigger(encode_trigger(task)) == task


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"v":2,"id":"00000000-0000-0000-0000-000000000001","version":1,"type":"t"}',
        b'{"v":1,"id":"not-a-uuid","version":1,"type":"t"}',
        b'{"v":1,"id":"00000000-0000-0000-0000-000000000001","version":true,"type":"t"}',
        b'{"v":1,"id":"00000000-0000-0000-0000-000000000001","version":1,"type":""}',
        b'{"v":1,"id":"00000000-0000-0000-0000-000000000001","version":1,"type":"t","sub_type":3}',
    ],
)
def test_a_malformed_trigger_message_decodes_to_none(value: bytes | None) -> None:
    assert decode_trigger(value) is None


def test_only_the_contiguous_handled_prefix_of_a_partition_is_committable() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12, 14):
        offsets.fetched(offset)
    offsets.handled(11)
    offsets.handled(14)
    assert offsets.to_commit() is None
    offsets.handled(10)
    assert offsets.to_commit() == 12
    offsets.committed(12)
    assert offsets.to_commit() is None
    offsets.handled(12)
    assert offsets.to_commit() == 15
    assert offsets.unhandled == 0

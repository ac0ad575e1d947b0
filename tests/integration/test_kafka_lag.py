"""The consumer lag gauge against Apache Kafka equals the lag the broker itself reports.

A consumer of a two-partition topic whose trigger callbacks wait: the gauge must show every
trigger produced (nothing is committed), then zero once they are handled and committed, then
the new triggers of one partition. Each time it is compared with what the broker says,
read independently: the log end offsets (a consumer without a group) minus the group's
committed offsets (the admin client), as ``kafka-consumer-groups --describe`` computes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from resilient_task import (
    AddTaskRequest,
    KafkaTriggers,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
)
from resilient_task.adapters.kafka.clients import client_options
from resilient_task.adapters.kafka.consumer import TriggerConsumer
from resilient_task.adapters.kafka.messages import encode_trigger
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.topics import TopicKeeper, ensure_topic
from resilient_task.adapters.prometheus.observer import PrometheusObserver
from resilient_task.domain.task import BaseTask
from resilient_task.testing.triggerer_contract import make_tasks
from tests.integration.test_kafka_triggerer import make_properties

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

LAG = "resilient_task_kafka_consumer_lag"


async def produce(properties: KafkaProperties, partition: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=properties.bootstrap_servers)
    await producer.start()
    try:
        for task in make_tasks(count):
            await producer.send_and_wait(
                properties.triggers_topic, encode_trigger(task), partition=partition
            )
    finally:
        await producer.stop()


async def broker_lag(properties: KafkaProperties, partitions: list[TopicPartition]) -> list[int]:
    """Log end minus the group's committed offset (the log start when it never committed)."""
    reader = AIOKafkaConsumer(bootstrap_servers=properties.bootstrap_servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=properties.bootstrap_servers)
    await reader.start()
    await admin.start()
    try:
        ends = await reader.end_offsets(partitions)
        starts = await reader.beginning_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(properties.consumer_group_id)
    finally:
        await reader.stop()
        await admin.close()
    lags = []
    for p in partitions:
        offset = committed[p].offset if p in committed and committed[p].offset >= 0 else starts[p]
        lags.append(ends[p] - offset)
    return lags


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_the_lag_gauge_equals_the_brokers_lag_per_partition(kafka_bootstrap: str) -> None:
    properties = make_properties(kafka_bootstrap, partitions=2)
    await ensure_topic(properties)
    topic = properties.triggers_topic
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    await produce(properties, 0, 5)
    await produce(properties, 1, 3)

    observer = PrometheusObserver()

    def gauges() -> list[float | None]:
        return [
            observer.registry.get_sample_value(LAG, {"topic": topic, "partition": str(p)})
            for p in (0, 1)
        ]

    gate = asyncio.Event()

    async def waits(task: BaseTask) -> None:
        await gate.wait()

    options: dict[str, Any] = client_options(
        properties, AIOKafkaConsumer, auto_offset_reset="earliest", fetch_max_wait_ms=5
    )
    options.update(group_id=properties.consumer_group_id, enable_auto_commit=False)
    consumer = TriggerConsumer(
        properties=properties,
        options=options,
        on_trigger=waits,
        max_in_flight=2,  # fetches two, then pauses: the rest stays unfetched
        stop_timeout=0.5,
        commit_interval=0.1,
        connect_timeout=10.0,
        topic=TopicKeeper(properties),
        observer=observer,
        lag_interval=0.2,
    )
    await consumer.start()
    try:
        await until(lambda: gauges() == [5.0, 3.0])
        assert await broker_lag(properties, partitions) == [5, 3]

        gate.set()
        await until(lambda: gauges() == [0.0, 0.0])
        assert await broker_lag(properties, partitions) == [0, 0]

        gate.clear()
        await produce(properties, 1, 4)
        await until(lambda: gauges() == [0.0, 4.0])
        assert await broker_lag(properties, partitions) == [0, 4]
        gate.set()
        await until(lambda: gauges() == [0.0, 0.0])
    finally:
        await consumer.stop()
    assert gauges() == [None, None]


async def test_a_kafka_node_exports_its_consumers_lag(kafka_bootstrap: str) -> None:
    """The node wires its observer into the Kafka consumer: the gauge appears without set-up."""
    properties = make_properties(kafka_bootstrap, partitions=2)
    observer = PrometheusObserver(task_types={"lagged"})
    topic = properties.triggers_topic
    ran = asyncio.Event()

    async def done(task: Task) -> ProcessResult:
        ran.set()
        return ProcessResult.DONE

    handler = TaskHandler(types={"lagged"}, processor=done)
    node = ResilientTask(
        handlers=[handler], triggers=KafkaTriggers(properties=properties), observer=observer
    )
    async with node as app:
        await app.service.add_task(AddTaskRequest(type="lagged", data=b""))
        await asyncio.wait_for(ran.wait(), 20)

        def gauges() -> list[float | None]:
            return [
                observer.registry.get_sample_value(LAG, {"topic": topic, "partition": str(p)})
                for p in (0, 1)
            ]

        # Measured every 5 s by default: once handled and committed, both partitions show 0.
        await until(lambda: gauges() == [0.0, 0.0], within=30.0)

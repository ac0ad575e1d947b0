"""The broker's own trigger latency, without resilient-task: a floor for the latency section.

A bare aiokafka producer (``acks="all"``, ``linger_ms=0``, like ``KafkaTriggerer``) sends
``n`` small messages ``interval`` apart; a bare consumer (``fetch_max_wait_ms=5``,
``fetch_min_bytes=1``, assigned the partition directly, no group) records when each arrives.
Reported: receive - send-acknowledged (what the latency section's clock also starts from) and
receive - send-called, p50/p99/max in ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench.common import Config, percentiles


async def measure(cfg: Config, *, n: int = 200, interval: float = 0.02) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench{cfg.run_id}.kafka-floor"
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=cfg.kafka_bootstrap, acks="all", linger_ms=0,
            enable_idempotence=False,
        )  # fmt: skip
        consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.kafka_bootstrap, fetch_max_wait_ms=5, fetch_min_bytes=1,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await producer.start()
        await consumer.start()
        received: dict[int, float] = {}
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.seek_to_end(TopicPartition(topic, 0))

            async def consume() -> None:
                async for msg in consumer:
                    received[int(msg.value)] = time.time()

            reader = asyncio.create_task(consume())
            for i in range(-5, 0):  # warm-up (metadata, connections)
                await producer.send_and_wait(topic, str(i).encode())
            await asyncio.sleep(0.5)
            called: dict[int, float] = {}
            acked: dict[int, float] = {}
            tick = time.monotonic()
            for i in range(n):
                called[i] = time.time()
                await producer.send_and_wait(topic, str(i).encode())
                acked[i] = time.time()
                tick += interval
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
            async with asyncio.timeout(10):
                while len([i for i in range(n) if i in received]) < n:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        finally:
            await consumer.stop()
            await producer.stop()
        return {
            "from_ack_ms": percentiles([(received[i] - acked[i]) * 1000 for i in range(n)]),
            "from_send_ms": percentiles([(received[i] - called[i]) * 1000 for i in range(n)]),
            "send_ack_ms": percentiles([(acked[i] - called[i]) * 1000 for i in range(n)]),
        }
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_topics([topic])
        await admin.close()


def run(cfg: Config) -> dict[str, Any]:
    return asyncio.run(measure(cfg))


async def _delete_run_topics(cfg: Config) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(f"bench{cfg.run_id}.")]
        if mine:
            await admin.delete_topics(mine)
        return mine
    finally:
        await admin.close()


def delete_run_topics(cfg: Config) -> list[str]:
    """Best effort: remove this run's topics (``bench<run_id>.*``) from the broker."""
    try:
        return asyncio.run(asyncio.wait_for(_delete_run_topics(cfg), 30))
    except Exception:
        return []

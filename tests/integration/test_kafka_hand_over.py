"""The broker dies after the commit: add_task does not wait for it, polling runs the task at once.

With ``KafkaTriggers()`` (``wait_for_ack=False``) ``add_task`` returns once the task is committed
and its trigger is with the producer. Here the broker (a private one, on a free port) is killed
between two adds: the second trigger is never acknowledged, so within the send timeout its
task's pick-up deadline is pulled to now and the node's polling runs it -- long before its
expected queue time.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from resilient_task import (
    AddTaskRequest,
    KafkaProperties,
    KafkaTriggers,
    PostgresOptions,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    TaskProperties,
    TaskResumerProperties,
)
from resilient_task.adapters.postgres import PostgresSettings
from tests.integration.kafka_broker import ApacheKafka

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

QUEUE_TIME = timedelta(seconds=120)  # a task run before this came by trigger or hurried poll
SEND_TIMEOUT = 3.0  # the node's KafkaTriggerer default


async def test_a_trigger_lost_after_the_commit_runs_its_task_at_once_through_polling(
    database_url: str, settings: PostgresSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    del kafka_bootstrap  # the shared broker must be there (CI), but this test kills its own
    broker = ApacheKafka(tmp_path / "kafka")
    started: dict[uuid.UUID, float] = {}

    async def record(task: Task) -> ProcessResult:
        started[task.id] = time.monotonic()
        return ProcessResult.DONE

    unique = uuid.uuid4().hex[:8]
    node = ResilientTask(
        handlers=[TaskHandler(types={"work"}, processor=record)],
        properties=TaskProperties(
            expected_queue_time=QUEUE_TIME,
            resumer=TaskResumerProperties(polling_interval=timedelta(seconds=0.2)),
            shutdown_grace=timedelta(seconds=2),
            kafka=KafkaProperties(
                bootstrap_servers=broker.bootstrap,
                topics_namespace=f"handover{unique}",
                consumer_group_id=f"handover-{unique}",
                partitions=1,
            ),
        ),
        database_url=database_url,
        postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix),
        triggers=KafkaTriggers(),
    )
    with anyio.fail_after(180):
        await anyio.to_thread.run_sync(broker.spawn)
        try:
            await anyio.to_thread.run_sync(broker.wait_ready, 120.0)
            async with node:
                first = await node.service.add_task(AddTaskRequest(type="work"))
                while first.task_id not in started:  # noqa: ASYNC110 - polls the handler's record
                    await anyio.sleep(0.05)  # through Kafka: the producer is connected

                await anyio.to_thread.run_sync(broker.kill)
                before = time.monotonic()
                second = await node.service.add_task(AddTaskRequest(type="work"))
                added = time.monotonic() - before
                with anyio.fail_after(SEND_TIMEOUT + 10):
                    while second.task_id not in started:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
        finally:
            await anyio.to_thread.run_sync(broker.kill)
    assert added < 1.0, f"add_task took {added:.2f} s: it waited for the dead broker"
    ran_after = started[second.task_id] - before
    assert ran_after < SEND_TIMEOUT + 5, f"ran {ran_after:.1f} s after the add"

"""Nodes configured with the typed settings, on the real PostgreSQL and Kafka."""

from __future__ import annotations

import uuid
from datetime import timedelta

import anyio
import pytest

from resilient_task import (
    AddTaskRequest,
    KafkaProperties,
    KafkaTriggers,
    NotifyTriggers,
    PostgresOptions,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    TaskProperties,
    TaskResumerProperties,
    TaskStatus,
)
from resilient_task.adapters.kafka import KafkaTriggerer
from resilient_task.adapters.postgres import (
    PostgresNotifyTriggerer,
    PostgresSettings,
    PostgresTaskDAO,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SLOW_POLL = TaskProperties(  # a task run within seconds came through the triggers
    resumer=TaskResumerProperties(polling_interval=timedelta(seconds=30)),
    shutdown_grace=timedelta(seconds=5),
)


async def _done(task: Task) -> ProcessResult:
    return ProcessResult.DONE


async def _run_one_task(worker: ResilientTask, producer: ResilientTask) -> None:
    async with worker, producer:
        await producer.service.add_task(AddTaskRequest(type="work"))
        with anyio.fail_after(10):
            while (await worker.service.count_by_status()).get(TaskStatus.DONE) != 1:  # noqa: ASYNC110 - polls the database
                await anyio.sleep(0.05)
        counts = await producer.operator.count()
        assert counts.by_status[TaskStatus.DONE] == 1


async def test_notify_triggers_and_postgres_options_configure_the_nodes(
    database_url: str, settings: PostgresSettings
) -> None:
    options = PostgresOptions(
        schema=settings.schema, prefix=settings.prefix, pool_size=2, application_name="typed"
    )

    def node(*, run_workers: bool) -> ResilientTask:
        return ResilientTask(
            handlers=[TaskHandler(types={"work"}, processor=_done)],
            properties=SLOW_POLL,
            database_url=database_url,
            postgres=options,
            triggers=NotifyTriggers(send_timeout=2.0),
            run_workers=run_workers,
        )

    worker, producer = node(run_workers=True), node(run_workers=False)
    await _run_one_task(worker, producer)
    assert isinstance(worker.dao, PostgresTaskDAO)
    assert worker.dao.settings.schema == settings.schema
    assert isinstance(worker.triggerer, PostgresNotifyTriggerer)


async def test_kafka_triggers_take_their_own_kafka_properties(
    database_url: str, settings: PostgresSettings, kafka_bootstrap: str
) -> None:
    unique = uuid.uuid4().hex[:8]
    kafka = KafkaProperties(
        bootstrap_servers=kafka_bootstrap,
        topics_namespace=f"typed{unique}",
        consumer_group_id=f"typed-{unique}",
        partitions=1,
    )

    def node(*, run_workers: bool) -> ResilientTask:
        return ResilientTask(
            handlers=[TaskHandler(types={"work"}, processor=_done)],
            properties=SLOW_POLL,
            database_url=database_url,
            postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix),
            triggers=KafkaTriggers(properties=kafka),
            run_workers=run_workers,
        )

    worker, producer = node(run_workers=True), node(run_workers=False)
    await _run_one_task(worker, producer)
    assert isinstance(producer.triggerer, KafkaTriggerer)

"""Whole nodes on PostgreSQL: sharing one database, transactional work, database outages."""

from __future__ import annotations

import logging
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from resilient_task import (
    AddTaskRequest,
    PostgresOptions,
    ProcessResult,
    ResilientTask,
    SimpleConcurrencyPolicy,
    Task,
    TaskHandler,
    TaskProperties,
    TaskResumerProperties,
    TaskStatus,
    current_transaction,
)
from resilient_task.adapters.postgres import PostgresSettings
from resilient_task.errors import BackendUnavailableError
from tests.integration.postgres_env import require_restart_allowed, terminate_backends

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FAST = TaskProperties(
    resumer=TaskResumerProperties(polling_interval=timedelta(milliseconds=200)),
    expected_queue_time=timedelta(seconds=2),
    processing_grace=timedelta(seconds=1),
    shutdown_grace=timedelta(seconds=5),
)


def node(
    database_url: str,
    settings: PostgresSettings,
    *handlers: TaskHandler,
    name: str = "node",
    properties: TaskProperties = FAST,
    run_workers: bool = True,
    **pool: Any,
) -> ResilientTask:
    return ResilientTask(
        handlers=handlers,
        properties=replace(properties, node_id=f"{name}-{uuid.uuid4().hex[:6]}"),
        database_url=database_url,
        run_workers=run_workers,
        postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix, **pool),
    )


async def wait_until(condition: Callable[[], Any], *, seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110 - polls the database
            await anyio.sleep(0.05)


async def count(app: ResilientTask, status: TaskStatus) -> int:
    return (await app.service.count_by_status()).get(status, 0)


class Recorder:
    """A processor counting executions per task id and per node."""

    def __init__(self, delay: float = 0.0, concurrency: int | None = None) -> None:
        self.runs: Counter[uuid.UUID] = Counter()
        self.by_node: Counter[str] = Counter()
        self.delay = delay
        self.concurrency = concurrency

    def handler(self, node_name: str) -> TaskHandler:
        async def process(task: Task) -> ProcessResult:
            self.runs[task.id] += 1
            self.by_node[node_name] += 1
            if self.delay:
                await anyio.sleep(self.delay)
            return ProcessResult.DONE

        if self.concurrency is None:
            return TaskHandler(types={"work"}, processor=process)
        limit = SimpleConcurrencyPolicy(self.concurrency)
        return TaskHandler(types={"work"}, processor=process, concurrency_policy=limit)


async def test_two_nodes_on_one_database_execute_every_task_exactly_once(
    database_url: str, settings: PostgresSettings
) -> None:
    recorder = Recorder(delay=0.002)
    a = node(database_url, settings, recorder.handler("a"), name="a")
    b = node(database_url, settings, recorder.handler("b"), name="b")
    async with a, b:
        soon = datetime.now(UTC) + timedelta(milliseconds=500)
        # Scheduled tasks are claimed by whichever resumer polls first (SKIP LOCKED).
        scheduled = [AddTaskRequest(type="work", run_after_time=soon) for _ in range(600)]
        added = await a.service.add_tasks(scheduled)
        added += await a.service.add_tasks([AddTaskRequest(type="work") for _ in range(200)])
        added += await b.service.add_tasks([AddTaskRequest(type="work") for _ in range(200)])
        await wait_until(lambda: _all_done(a, 1000))

    assert len(added) == 1000
    assert set(recorder.runs) == {r.task_id for r in added}
    assert max(recorder.runs.values()) == 1, "a task ran twice"
    assert recorder.by_node["a"] > 0
    assert recorder.by_node["b"] > 0


async def _all_done(app: ResilientTask, n: int) -> bool:
    try:
        return await count(app, TaskStatus.DONE) == n
    except BackendUnavailableError:
        # The fault tests below kill connections; this check may meet one whose session
        # ends right as it is checked out. What they assert is that no task is lost.
        return False


def business_table(settings: PostgresSettings) -> str:
    return f'"{settings.schema}".orders_shipped'


async def create_business_table(database_url: str, settings: PostgresSettings) -> None:
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            f"CREATE TABLE {business_table(settings)} (task_id uuid PRIMARY KEY)"
        )
    await engine.dispose()


async def shipped(database_url: str, settings: PostgresSettings) -> set[uuid.UUID]:
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(f"SELECT task_id FROM {business_table(settings)}")
        result = {row[0] for row in rows}
    await engine.dispose()
    return result


def shipping_handler(
    settings: PostgresSettings, before_finish: Callable[[Task], Any] | None = None
) -> TaskHandler:
    async def ship(task: Task) -> ProcessResult:
        conn: AsyncConnection = current_transaction()
        await conn.execute(
            sa.text(f"INSERT INTO {business_table(settings)} (task_id) VALUES (:id)"),
            {"id": task.id},
        )
        if before_finish is not None:
            await before_finish(task)
        return ProcessResult.DONE

    return TaskHandler(types={"ship"}, processor=ship, transactional=True)


async def test_transactional_handler_writes_commit_with_the_completion(
    database_url: str, settings: PostgresSettings
) -> None:
    await create_business_table(database_url, settings)
    async with node(database_url, settings, shipping_handler(settings)) as app:
        added = await app.service.add_task(AddTaskRequest(type="ship"))
        await wait_until(lambda: _all_done(app, 1))
    assert await shipped(database_url, settings) == {added.task_id}


async def test_fenced_completion_rolls_back_the_transactional_handlers_writes(
    database_url: str, settings: PostgresSettings
) -> None:
    """The task is taken away (resumed by an operator) while the handler runs."""
    await create_business_table(database_url, settings)
    operator = node(database_url, settings, name="operator", run_workers=False)
    taken: list[Task] = []

    async def take_away(task: Task) -> None:
        if not taken:
            taken.append(await operator.service.resume_task(task.id))

    worker = node(database_url, settings, shipping_handler(settings, take_away))
    async with operator, worker:
        added = await worker.service.add_task(AddTaskRequest(type="ship"))
        await wait_until(lambda: _all_done(worker, 1))
        assert worker.executor.stats["fenced"] == 1
    # The first run's insert rolled back; the resumed run shipped exactly once.
    assert await shipped(database_url, settings) == {added.task_id}


async def test_task_added_in_a_rolled_back_transaction_never_runs(
    database_url: str, settings: PostgresSettings
) -> None:
    recorder = Recorder()
    async with node(database_url, settings, recorder.handler("n")) as app:
        engine = create_async_engine(database_url)
        try:

            async def add_then_fail() -> None:
                async with engine.begin() as conn:
                    await app.service.add_task(AddTaskRequest(type="work"), transaction=conn)
                    raise RuntimeError("business failure")

            with pytest.raises(RuntimeError, match="business failure"):
                await add_then_fail()
            async with engine.begin() as conn:
                kept = await app.service.add_task(AddTaskRequest(type="work"), transaction=conn)
        finally:
            await engine.dispose()
        await wait_until(lambda: _all_done(app, 1))
        assert sum((await app.service.count_by_status()).values()) == 1
    assert list(recorder.runs) == [kept.task_id]


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "unavailable while" in r.getMessage()]


async def test_killed_database_connections_lose_no_task_and_log_once_per_outage(
    database_url: str, settings: PostgresSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    recorder = Recorder(delay=0.005, concurrency=10)  # 400 x 5 ms: still running at each kill
    async with node(database_url, settings, recorder.handler("n")) as app:
        added = await app.service.add_tasks([AddTaskRequest(type="work") for _ in range(400)])
        for _ in range(3):
            await anyio.sleep(0.1)
            assert await terminate_backends(database_url, "resilient-task", prefix=True) >= 1
        await wait_until(lambda: _all_done(app, 400), seconds=60)
    assert set(recorder.runs) == {r.task_id for r in added}
    # Warnings are per outage (a few), never per task.
    assert len(outage_warnings(caplog)) <= 12


def _local_cluster() -> list[str] | None:
    ctl = shutil.which("pg_ctlcluster")
    if ctl is None:
        return None
    versions = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True)
    version = sorted(versions.stdout.split(), key=lambda v: float(v) if v else 0)
    return [ctl, "--skip-systemctl-redirect", version[-1], "main"] if version else None


async def test_database_restart_mid_run_loses_no_task(
    database_url: str, settings: PostgresSettings, caplog: pytest.LogCaptureFixture
) -> None:
    require_restart_allowed()
    cluster = _local_cluster()
    if cluster is None or "127.0.0.1" not in database_url:
        pytest.skip("needs the local PostgreSQL cluster (pg_ctlcluster) to restart it")
    caplog.set_level(logging.WARNING)
    recorder = Recorder(delay=0.005, concurrency=10)  # still running when the database stops
    async with node(database_url, settings, recorder.handler("n"), pool_timeout=2) as app:
        added = await app.service.add_tasks([AddTaskRequest(type="work") for _ in range(500)])
        await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(
            lambda: subprocess.run([*cluster, "restart", "-m", "fast"], check=True)
        )
        await wait_until(lambda: _all_done(app, 500), seconds=90)
    assert set(recorder.runs) == {r.task_id for r in added}
    assert len(outage_warnings(caplog)) <= 12

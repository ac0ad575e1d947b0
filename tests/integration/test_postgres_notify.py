"""PostgresNotifyTriggerer against a real PostgreSQL: the contract, NOTIFY's own promises and
limits, a killed listener, and whole nodes that reach each other in milliseconds.

Every test gets its own channel (a fresh schema name in the settings; the channel needs no
tables) and its own ``application_name``, so it can find and kill exactly its own connections.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_task import (
    AddTaskRequest,
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
from resilient_task.adapters.postgres import PostgresNotifyTriggerer, PostgresSettings
from resilient_task.domain.task import BaseTask
from resilient_task.testing.triggerer_contract import (
    Recorder,
    TriggererContract,
    make_tasks,
    running,
)
from tests.integration.postgres_env import terminate_backends

pytestmark = pytest.mark.integration


def fresh_settings() -> PostgresSettings:
    return PostgresSettings(schema=f"rt_notify_{uuid.uuid4().hex[:12]}")


def make_triggerer(
    database_url: str, settings: PostgresSettings | None = None, **options: Any
) -> PostgresNotifyTriggerer:
    defaults: dict[str, Any] = {
        "stop_timeout": 0.5,
        "connect_timeout": 5,
        "application_name": f"rt-notify-test-{uuid.uuid4().hex[:8]}",
    }
    return PostgresNotifyTriggerer(
        url=database_url, settings=settings or fresh_settings(), **{**defaults, **options}
    )


class TestPostgresNotifyTriggererContract(TriggererContract):
    """The shared contract (not the durable one: triggers do not outlive a listener).

    The NOTIFY counterparts of the durability tests are in :class:`TestPostgresNotifyTriggerer`:
    triggers sent while nobody listens are lost, and a restarted listener gets only what is sent
    after it restarted.
    """

    @pytest.fixture
    async def triggerer(self, database_url: str) -> AsyncIterator[PostgresNotifyTriggerer]:
        triggerer = make_triggerer(
            database_url, max_in_flight=self.max_in_flight, stop_timeout=self.stop_timeout
        )
        yield triggerer
        await triggerer.stop()


async def sql(database_url: str, statement: str, **params: Any) -> Any:
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(statement), params)
            value = result.scalar()
            await conn.commit()
            return value
    finally:
        await engine.dispose()


async def backend_pid(database_url: str, application_name: str) -> int | None:
    pid = await sql(
        database_url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = :name",
        name=application_name,
    )
    return None if pid is None else int(pid)


async def eventually(condition: Callable[[], Any], *, seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110 - polls the database
            await anyio.sleep(0.02)


@pytest.mark.anyio
class TestPostgresNotifyTriggerer:
    async def test_triggers_sent_while_nobody_listens_are_lost(self, database_url: str) -> None:
        async with make_triggerer(database_url) as triggerer:
            unheard, heard = make_tasks(3), make_tasks(1)
            await triggerer.trigger(unheard)
            async with running(triggerer, Recorder()) as recorder:
                await triggerer.trigger(heard)
                await recorder.wait_for_tasks(heard, 5)
                await anyio.sleep(0.3)
            assert recorder.ids == {heard[0].id}

    async def test_a_restarted_listener_gets_only_triggers_sent_after_it_restarted(
        self, database_url: str
    ) -> None:
        handled, while_stopped, marker = make_tasks(5), make_tasks(2), make_tasks(1)
        async with make_triggerer(database_url) as triggerer:
            async with running(triggerer, Recorder()) as first_run:
                await triggerer.trigger(handled)
                await first_run.wait_for_tasks(handled, 5)
            await triggerer.trigger(while_stopped)
            async with running(triggerer, Recorder()) as second_run:
                await triggerer.trigger(marker)
                await second_run.wait_for_tasks(marker, 5)
                await anyio.sleep(0.3)
        assert second_run.ids == {marker[0].id}

    async def test_many_tasks_in_one_call_arrive_in_order_over_several_payloads(
        self, database_url: str
    ) -> None:
        tasks = make_tasks(3000, type_="a-rather-long-task-type-name-" * 3)
        triggerer = make_triggerer(database_url, max_in_flight=10_000)
        async with triggerer, running(triggerer, Recorder()) as recorder:
            await triggerer.trigger(tasks)
            await recorder.wait_for_tasks(tasks, 10)
        assert recorder.received == tasks

    async def test_every_listener_receives_every_trigger(self, database_url: str) -> None:
        settings = fresh_settings()
        tasks = make_tasks(5)
        async with (
            make_triggerer(database_url, settings) as first,
            make_triggerer(database_url, settings) as second,
            running(first, Recorder()) as one,
            running(second, Recorder()) as other,
        ):
            await first.trigger(tasks)
            await one.wait_for_tasks(tasks, 5)
            await other.wait_for_tasks(tasks, 5)

    async def test_deployments_with_other_schemas_do_not_see_each_others_triggers(
        self, database_url: str
    ) -> None:
        ours, theirs = make_tasks(2), make_tasks(2)
        async with (
            make_triggerer(database_url) as a,
            make_triggerer(database_url) as b,
            running(a, Recorder()) as on_a,
            running(b, Recorder()) as on_b,
        ):
            await a.trigger(ours)
            await b.trigger(theirs)
            await on_a.wait_for_tasks(ours, 5)
            await on_b.wait_for_tasks(theirs, 5)
            await anyio.sleep(0.3)
        assert on_a.ids == {t.id for t in ours}
        assert on_b.ids == {t.id for t in theirs}

    async def test_a_malformed_notification_is_skipped_and_later_triggers_delivered(
        self, database_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING)
        tasks = make_tasks(2)
        triggerer = make_triggerer(database_url)
        async with triggerer, running(triggerer, Recorder()) as recorder:
            await sql(database_url, "SELECT pg_notify(:c, 'garbage')", c=triggerer.channel)
            await triggerer.trigger(tasks)
            await recorder.wait_for_tasks(tasks, 5)
        assert any("malformed notification" in r.getMessage() for r in caplog.records)

    async def test_a_failing_catch_up_is_logged_and_notifications_still_arrive(
        self, database_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING)

        async def broken(_conn: psycopg.AsyncConnection[Any]) -> list[BaseTask]:
            raise psycopg.OperationalError("catch-up query failed")

        tasks = make_tasks(2)
        triggerer = make_triggerer(database_url)
        triggerer._catch_up = broken  # the read of SUBMITTED tasks fails
        async with triggerer, running(triggerer, Recorder()) as recorder:
            await triggerer.trigger(tasks)
            await recorder.wait_for_tasks(tasks, 5)
        assert [r.getMessage() for r in caplog.records if "could not read SUBMITTED" in r.msg]

    async def test_a_schema_without_tables_needs_no_catch_up_and_warns_nothing(
        self, database_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        # A triggerer used on its own, on a schema that holds no task store.
        caplog.set_level(logging.WARNING)
        tasks = make_tasks(1)
        triggerer = make_triggerer(database_url)
        async with triggerer, running(triggerer, Recorder()) as recorder:
            await triggerer.trigger(tasks)
            await recorder.wait_for_tasks(tasks, 5)
        assert not [r for r in caplog.records if r.name.startswith("resilient_task")]

    async def test_the_listener_survives_its_connection_being_killed_and_delivers_again(
        self, database_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING)
        name = f"rt-notify-test-{uuid.uuid4().hex[:8]}"
        before, after = make_tasks(2), make_tasks(2)
        triggerer = make_triggerer(database_url, application_name=name)
        async with triggerer, running(triggerer, Recorder()) as recorder:
            await triggerer.trigger(before)
            await recorder.wait_for_tasks(before, 5)
            old_pid = await backend_pid(database_url, f"{name}-listen")
            assert old_pid is not None
            assert await terminate_backends(database_url, f"{name}-listen") == 1

            async def listening_again() -> bool:
                pid = await backend_pid(database_url, f"{name}-listen")
                return triggerer.listening and pid not in (None, old_pid)

            await eventually(listening_again)
            await triggerer.trigger(after)  # the sender's connection was not touched
            await recorder.wait_for_tasks(after, 5)
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("unavailable while listening" in m for m in messages) == 1
        assert sum("reachable again" in m for m in messages) == 1

    async def test_a_killed_sending_connection_is_replaced_without_an_error(
        self, database_url: str
    ) -> None:
        name = f"rt-notify-test-{uuid.uuid4().hex[:8]}"
        first, second = make_tasks(1), make_tasks(1)
        triggerer = make_triggerer(database_url, application_name=name)
        async with triggerer, running(triggerer, Recorder()) as recorder:
            await triggerer.trigger(first)
            await recorder.wait_for_tasks(first, 5)
            assert await terminate_backends(database_url, f"{name}-notify") == 1
            await anyio.sleep(0.1)
            await triggerer.trigger(second)
            await recorder.wait_for_tasks(second, 5)

    async def test_stop_closes_both_connections(self, database_url: str) -> None:
        name = f"rt-notify-test-{uuid.uuid4().hex[:8]}"
        triggerer = make_triggerer(database_url, application_name=name)
        await triggerer.start(Recorder())
        await triggerer.trigger(make_tasks(1))
        assert await backend_pid(database_url, f"{name}-listen") is not None
        assert await backend_pid(database_url, f"{name}-notify") is not None
        await triggerer.stop()

        async def gone() -> bool:
            pids = [
                await backend_pid(database_url, f"{name}-{role}") for role in ("listen", "notify")
            ]
            return pids == [None, None]

        await eventually(gone)


# --- whole nodes -------------------------------------------------------------------------------

SLOW_POLL = TaskProperties(
    # Nothing but a trigger can start a task within the test: the resumer polls every 30 s
    # and the pick-up deadline of a new task is a minute away.
    resumer=TaskResumerProperties(polling_interval=timedelta(seconds=30)),
    expected_queue_time=timedelta(minutes=1),
    shutdown_grace=timedelta(seconds=5),
)


def node(
    database_url: str,
    settings: PostgresSettings,
    *handlers: TaskHandler,
    run_workers: bool = True,
    notify: bool = True,
) -> ResilientTask:
    return ResilientTask(
        handlers=handlers,
        properties=replace(SLOW_POLL, node_id=f"notify-{uuid.uuid4().hex[:6]}"),
        database_url=database_url,
        triggers=NotifyTriggers() if notify else None,
        run_workers=run_workers,
        postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix),
    )


class Starts:
    """A processor recording when each task started (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.at: dict[uuid.UUID, float] = {}

    def handler(self) -> TaskHandler:
        async def process(task: Task) -> ProcessResult:
            self.at[task.id] = time.monotonic()
            return ProcessResult.DONE

        return TaskHandler(types={"work"}, processor=process)

    async def wait_for(self, ids: set[uuid.UUID], seconds: float) -> None:
        with anyio.fail_after(seconds):
            while not ids <= set(self.at):  # noqa: ASYNC110 - the processor records starts
                await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_a_producer_node_reaches_a_worker_node_well_within_the_polling_interval(
    database_url: str, settings: PostgresSettings
) -> None:
    starts = Starts()
    worker = node(database_url, settings, starts.handler())
    producer = node(database_url, settings, run_workers=False)
    async with worker, producer:
        latencies = []
        for _ in range(10):
            added_at = time.monotonic()
            result = await producer.service.add_task(AddTaskRequest(type="work"))
            await starts.wait_for({result.task_id}, seconds=5)
            latencies.append(starts.at[result.task_id] - added_at)
        batch = await producer.service.add_tasks([AddTaskRequest(type="work")] * 200)
        added_at = time.monotonic()
        await starts.wait_for({r.task_id for r in batch}, seconds=5)
        batch_seconds = max(starts.at[r.task_id] for r in batch) - added_at
    assert max(latencies) < 1.0, latencies
    assert batch_seconds < 1.0


@pytest.mark.anyio
async def test_tasks_added_while_no_worker_listens_start_as_soon_as_one_does(
    database_url: str, settings: PostgresSettings
) -> None:
    # Their notifications reached nobody; the new listener's catch-up reads them from the
    # store (the poll, every 30 s with a pick-up deadline a minute away, cannot be it).
    async with node(database_url, settings, run_workers=False) as producer:
        early = await producer.service.add_tasks([AddTaskRequest(type="work")] * 50)
        starts = Starts()
        began = time.monotonic()
        async with node(database_url, settings, starts.handler()):
            await starts.wait_for({r.task_id for r in early}, seconds=5)
            late = await producer.service.add_task(AddTaskRequest(type="work"))
            await starts.wait_for({late.task_id}, seconds=5)
        # Counted once the worker has stopped: its graceful stop writes the completions of the
        # tasks whose handlers had started (counting before could see the last one PROCESSING).
        done = await producer.service.count_by_status()
    assert max(starts.at.values()) - began < 3.0
    assert {status: n for status, n in done.items() if n} == {TaskStatus.DONE: 51}


@pytest.mark.anyio
async def test_with_notify_a_producer_node_triggers_instead_of_leaving_tasks_to_polling(
    database_url: str, settings: PostgresSettings
) -> None:
    async with (
        node(database_url, settings, run_workers=False) as notifying,
        node(database_url, settings, run_workers=False, notify=False) as polling_only,
    ):
        now = datetime.now(UTC)
        triggered = await notifying.service.add_task(AddTaskRequest(type="work"))
        polled = await polling_only.service.add_task(AddTaskRequest(type="work"))
        triggered_task = await notifying.service.get_task(triggered.task_id)
        polled_task = await notifying.service.get_task(polled.task_id)
    assert triggered_task is not None
    assert polled_task is not None
    # Triggered: the usual pick-up deadline. Not triggered: overdue at once, for the pollers.
    assert triggered_task.next_event_time > now + timedelta(seconds=50)
    assert polled_task.next_event_time < now + timedelta(seconds=5)


@pytest.mark.anyio
async def test_two_notify_workers_run_every_task_exactly_once(
    database_url: str, settings: PostgresSettings
) -> None:
    runs: dict[uuid.UUID, int] = {}

    async def count(task: Task) -> ProcessResult:
        runs[task.id] = runs.get(task.id, 0) + 1
        return ProcessResult.DONE

    handler = TaskHandler(types={"work"}, processor=count)
    async with (
        node(database_url, settings, handler),
        node(database_url, settings, handler),
        node(database_url, settings, run_workers=False) as producer,
    ):
        added = await producer.service.add_tasks([AddTaskRequest(type="work")] * 300)
        with anyio.fail_after(10):
            while len(runs) < 300:  # noqa: ASYNC110 - the processor counts runs
                await anyio.sleep(0.01)
        await anyio.sleep(0.3)  # time for a duplicate run to show up
    assert set(runs) == {r.task_id for r in added}
    assert set(runs.values()) == {1}

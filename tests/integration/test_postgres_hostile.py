"""PostgreSQL nodes against hostile processors and triggers, and frozen nodes' row locks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from resilient_task import (
    AddTaskRequest,
    BackendError,
    NoRetryPolicy,
    ProcessResult,
    SimpleConcurrencyPolicy,
    Task,
    TaskHandler,
    TaskStatus,
    current_transaction,
)
from resilient_task.adapters.postgres import (
    PostgresSettings,
    PostgresTaskDAO,
    async_session_for,
    open_postgres_dao,
)
from resilient_task.ids import uuid7
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from tests.integration.test_postgres_app import (
    business_table,
    create_business_table,
    node,
    shipped,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _status(app_dao: PostgresTaskDAO, task_id: uuid.UUID) -> TaskStatus | None:
    task = await app_dao.get_task(task_id)
    return None if task is None else task.status


# --- a transactional processor may not end the transaction it is handed -----------------


async def _commit(conn: AsyncConnection) -> None:
    await conn.commit()


async def _rollback(conn: AsyncConnection) -> None:
    await conn.rollback()


async def _close(conn: AsyncConnection) -> None:
    await conn.close()


async def _orm_rollback(conn: AsyncConnection) -> None:
    async with async_session_for(conn) as session:
        await session.execute(sa.text("SELECT 1"))  # the session joins the transaction
        await session.rollback()


ENDINGS: dict[str, Callable[[AsyncConnection], Awaitable[None]]] = {
    "commit": _commit,
    "rollback": _rollback,
    "close": _close,
    "orm_session_rollback": _orm_rollback,
}


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_processor_ending_its_transaction_fails_its_task_loudly_and_keeps_nothing(
    database_url: str, settings: PostgresSettings, ending: str, swallow: bool
) -> None:
    await create_business_table(database_url, settings)
    errors: list[BaseException] = []

    async def ship(task: Task) -> ProcessResult:
        conn: AsyncConnection = current_transaction()
        await conn.execute(
            sa.text(f"INSERT INTO {business_table(settings)} (task_id) VALUES (:id)"),
            {"id": task.id},
        )
        try:
            await ENDINGS[ending](conn)
        except Exception as exc:
            errors.append(exc)
            if not swallow:
                raise
        return ProcessResult.DONE

    handler = TaskHandler(
        types={"ship"}, processor=ship, transactional=True, retry_policy=NoRetryPolicy()
    )
    async with node(database_url, settings, handler) as app:
        added = await app.service.add_task(AddTaskRequest(type="ship"))

        async def failed() -> bool:
            return await _status(app.dao, added.task_id) is TaskStatus.ERROR  # type: ignore[arg-type]

        await wait_until(failed, seconds=10)
        task = await app.service.get_task(added.task_id)
    assert task is not None
    assert "ConfigurationError: a transactional processor must not" in (task.last_error or "")
    assert [type(e).__name__ for e in errors] == ["ConfigurationError"]
    assert await shipped(database_url, settings) == set()  # nothing committed


async def test_an_orm_session_commit_inside_a_processor_commits_with_the_completion(
    database_url: str, settings: PostgresSettings
) -> None:
    await create_business_table(database_url, settings)

    async def ship(task: Task) -> ProcessResult:
        async with async_session_for(current_transaction()) as session:
            await session.execute(
                sa.text(f"INSERT INTO {business_table(settings)} (task_id) VALUES (:id)"),
                {"id": task.id},
            )
            await session.commit()  # joins the outer transaction: does not end it
        return ProcessResult.DONE

    handler = TaskHandler(types={"ship"}, processor=ship, transactional=True)
    async with node(database_url, settings, handler) as app:
        added = await app.service.add_task(AddTaskRequest(type="ship"))

        async def done() -> bool:
            return await _status(app.dao, added.task_id) is TaskStatus.DONE  # type: ignore[arg-type]

        await wait_until(done, seconds=10)
    assert await shipped(database_url, settings) == {added.task_id}


# --- one bad trigger in a grab batch ------------------------------------------------------


def _submitted() -> Task:
    return Task(
        id=uuid7(),
        type="work",
        data=b"x",
        status=TaskStatus.SUBMITTED,
        next_event_time=datetime.now(UTC) + timedelta(hours=1),
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )


async def test_a_trigger_with_a_version_out_of_bigint_range_does_not_hold_back_its_batch(
    database_url: str, settings: PostgresSettings, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[uuid.UUID] = []

    async def process(task: Task) -> ProcessResult:
        ran.append(task.id)
        return ProcessResult.DONE

    handler = TaskHandler(types={"work"}, processor=process)
    async with node(database_url, settings, handler) as app:
        tasks = [_submitted() for _ in range(30)]
        await app.dao.insert_tasks(tasks)
        forged = replace(tasks[3].base, version=2**64)
        triggers = [*(t.base for t in tasks[:10]), forged, *(t.base for t in tasks[10:])]
        caplog.set_level(logging.WARNING, logger="resilient_task.executor")
        with anyio.fail_after(10):  # the others are grabbed at once, not after a re-trigger
            async with anyio.create_task_group() as tg:
                for trigger in triggers:
                    tg.start_soon(app.executor.on_trigger, trigger)
            while len(ran) < 30:  # noqa: ASYNC110 - the runs are the executor's
                await anyio.sleep(0.01)
        assert app.executor.stats["grab_failed"] == 1
    assert sorted(ran) == sorted(t.id for t in tasks)
    assert f"task {tasks[3].id} v{2**64}: trigger not grabbed" in caplog.text
    assert "out of range" in caplog.text


# --- row locks of a frozen node -----------------------------------------------------------


async def _stuck_tasks(dao: PostgresTaskDAO, n: int) -> list[Task]:
    """``n`` PROCESSING tasks whose node died (deadline in the past), stored."""
    tasks = [_submitted() for _ in range(n)]
    await dao.insert_tasks(tasks)
    grabbed = []
    for task in tasks:
        [got] = await dao.grab(
            [_grab_request(task, deadline=datetime.now(UTC) - timedelta(seconds=1))],
            now=datetime.now(UTC),
        )
        grabbed.append(got)
    return grabbed


def _grab_request(task: Task, *, deadline: datetime) -> GrabRequest:
    return GrabRequest(task.id, task.version, "frozen-node", deadline)


async def _hold_row_lock(
    database_url: str, settings: PostgresSettings, task_id: uuid.UUID
) -> tuple[AsyncEngine, AsyncConnection]:
    """A connection in a transaction that updated the task's row (as a frozen node's would)."""
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    conn = await engine.connect()
    await conn.begin()
    table = f'"{settings.schema}"."{settings.prefix}tasks"'
    await conn.exec_driver_sql(
        f"UPDATE {table} SET updated_at = now() WHERE id = %(id)s", {"id": task_id}
    )
    return engine, conn


async def test_the_resumer_skips_a_row_a_frozen_node_holds_locked(
    database_url: str, settings: PostgresSettings
) -> None:
    """A node frozen between its completion UPDATE and COMMIT; another node's resumer runs."""
    patient = replace(settings, lock_timeout=None)  # only SKIP LOCKED can keep it moving
    async with node(database_url, patient, run_workers=False) as app:  # no background poll
        stuck = await _stuck_tasks(app.dao, 3)  # type: ignore[arg-type]
        engine, frozen = await _hold_row_lock(database_url, settings, stuck[0].id)
        try:
            with anyio.fail_after(5):
                await app.resumer.run_once()
            statuses = [await _status(app.dao, t.id) for t in stuck]  # type: ignore[arg-type]
        finally:
            await frozen.rollback()
            await frozen.close()
            await engine.dispose()
    assert statuses[0] is TaskStatus.PROCESSING  # left for a later poll
    assert statuses[1:] != [TaskStatus.PROCESSING] * 2  # the others were resolved meanwhile


async def test_a_statement_waiting_for_a_row_lock_gives_up_after_lock_timeout(
    database_url: str, settings: PostgresSettings
) -> None:
    quick = replace(settings, lock_timeout=timedelta(milliseconds=200))
    dao = PostgresTaskDAO.from_url(database_url, settings=quick)
    try:
        [task] = await _stuck_tasks(dao, 1)
        engine, frozen = await _hold_row_lock(database_url, settings, task.id)
        try:
            change = TaskChange(task.mark_error(now=datetime.now(UTC), reason="test"), task.version)
            with anyio.fail_after(5), pytest.raises(BackendError) as raised:
                await dao.apply([change])
        finally:
            await frozen.rollback()
            await frozen.close()
            await engine.dispose()
    finally:
        await dao.close()
    assert raised.value.transient
    assert "55P03" in str(raised.value)


async def test_a_session_idle_in_transaction_is_ended_and_releases_its_locks(
    database_url: str, settings: PostgresSettings
) -> None:
    brief = replace(settings, idle_in_transaction_timeout=timedelta(milliseconds=300))
    dao = PostgresTaskDAO.from_url(database_url, settings=brief)
    other = PostgresTaskDAO.from_url(database_url, settings=settings)
    try:
        [task] = await _stuck_tasks(dao, 1)
        change = TaskChange(task.mark_error(now=datetime.now(UTC), reason="late"), task.version)

        async def frozen_before_commit() -> None:
            async with dao.transaction() as tx:
                await dao.apply([change], transaction=tx)
                await anyio.sleep(1)  # frozen between the UPDATE and the COMMIT

        with pytest.raises(BackendError):
            await frozen_before_commit()
        with anyio.fail_after(5):  # the row lock went with the session
            failed = TaskChange(task.mark_failed(now=datetime.now(UTC), reason="x"), task.version)
            assert await other.apply([failed]) == [True]
    finally:
        await dao.close()
        await other.close()


async def test_sessions_get_the_configured_timeouts(
    database_url: str, settings: PostgresSettings
) -> None:
    custom = replace(
        settings,
        lock_timeout=timedelta(seconds=3),
        idle_in_transaction_timeout=timedelta(minutes=2),
    )
    dao = PostgresTaskDAO.from_url(database_url, settings=custom)
    unset = replace(settings, lock_timeout=None, idle_in_transaction_timeout=None)
    off = PostgresTaskDAO.from_url(database_url, settings=unset)
    try:
        async with dao.engine.connect() as conn:
            lock = (await conn.exec_driver_sql("SHOW lock_timeout")).scalar()
            idle = (await conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout")).scalar()
        async with off.engine.connect() as conn:
            default = (await conn.exec_driver_sql("SHOW lock_timeout")).scalar()
    finally:
        await dao.close()
        await off.close()
    assert (lock, idle, default) == ("3s", "2min", "0")


# --- a pool smaller than the transactional handlers' concurrency ------------------------


async def test_transactional_tasks_beyond_the_pool_wait_for_a_connection_before_their_grab(
    database_url: str, settings: PostgresSettings, caplog: pytest.LogCaptureFixture
) -> None:
    await create_business_table(database_url, settings)
    running = {"now": 0, "peak": 0}

    async def ship(task: Task) -> ProcessResult:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await current_transaction().execute(
            sa.text(f"INSERT INTO {business_table(settings)} (task_id) VALUES (:id)"),
            {"id": task.id},
        )
        await anyio.sleep(0.3)
        running["now"] -= 1
        return ProcessResult.DONE

    handler = TaskHandler(
        types={"ship"},
        processor=ship,
        transactional=True,
        concurrency_policy=SimpleConcurrencyPolicy(10),
    )
    caplog.set_level(logging.WARNING, logger="resilient_task.executor")
    pool: dict[str, Any] = {"pool_size": 2, "max_overflow": 1, "pool_timeout": 1.0}
    async with node(database_url, settings, handler, **pool) as app:
        added = await app.service.add_tasks([AddTaskRequest(type="ship") for _ in range(6)])

        async def all_done() -> bool:
            return (await app.service.count_by_status())[TaskStatus.DONE] == 6

        await wait_until(all_done, seconds=20)
        assert app.executor.stats["retried"] == 0  # no pool timeout failed a run
    assert running["peak"] == 1  # 3 connections, 2 kept for grabs and completions
    assert await shipped(database_url, settings) == {r.task_id for r in added}
    assert "allow 10 task(s) at once but the database pool holds 3 connection(s)" in caplog.text


async def test_open_postgres_dao_passes_the_session_timeouts_through(
    database_url: str, settings: PostgresSettings
) -> None:
    # The path ResilientTask(postgres=PostgresOptions(...)) takes: the timeouts are settings,
    # not pool options (create_engine would refuse them with a TypeError).
    async with (
        open_postgres_dao(
            database_url,
            schema=settings.schema,
            prefix=settings.prefix,
            lock_timeout=timedelta(seconds=4),
            idle_in_transaction_timeout=None,
        ) as dao,
        dao.engine.connect() as conn,
    ):
        lock = (await conn.exec_driver_sql("SHOW lock_timeout")).scalar()
        idle = (await conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout")).scalar()
    assert (lock, idle) == ("4s", "0")

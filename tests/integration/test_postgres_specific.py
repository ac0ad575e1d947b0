"""PostgreSQL-specific behaviour: payload storage, awkward strings, caller transactions."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import nullcontext
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from resilient_task.adapters.postgres import (
    PostgresSettings,
    PostgresTaskDAO,
    async_session_for,
    create_engine,
)
from resilient_task.adapters.postgres.codec import RAW, ZLIB
from resilient_task.adapters.postgres.schema import Tables
from resilient_task.domain.requests import MAX_UNIQUE_KEY_LENGTH, AddTaskRequest
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import ValidationError
from resilient_task.ports.task_dao import InsertOutcome, TaskChange
from resilient_task.testing.task_dao_contract import NOW, make_task, processing
from tests.integration.postgres_env import isolated_schema

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NASTY = [
    "it's",
    'say "hi"',
    "x'; DROP TABLE tasks; --",
    "%s %(name)s $1 ? :param {0}",
    "back\\slash\\'",
    "tab\tnew\nline",
    "ünïcødé ✓ 🚀",
    "'' OR 1=1 /* */",
]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def dao(engine: AsyncEngine, settings: PostgresSettings) -> PostgresTaskDAO:
    dao = PostgresTaskDAO(engine=engine, settings=settings)
    await dao.open()
    return dao


async def _stored_payload(dao: PostgresTaskDAO, task_id: object) -> tuple[int, int] | None:
    """``(data_format, stored length)`` of a task's payload row, or None without one."""
    data = Tables.build(dao.settings).task_data
    async with dao.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(data.c.data_format, sa.func.length(data.c.data)).where(
                    data.c.task_id == task_id
                )
            )
        ).one_or_none()
    return None if row is None else (row[0], row[1])


# -- payloads ------------------------------------------------------------------------------


async def test_large_compressible_payload_is_stored_compressed_and_round_trips(
    dao: PostgresTaskDAO,
) -> None:
    data = (bytes(range(256)) + b"\xff\xfe\x00\xc3\x28") * 16_000  # ~4 MB, not UTF-8
    task = make_task(data=data)
    await dao.insert_tasks([task])
    data_format, length = await _stored_payload(dao, task.id) or (None, 0)
    assert data_format == ZLIB
    assert length < len(data) // 10
    assert await dao.get_task(task.id) == task


async def test_incompressible_payload_is_stored_raw(dao: PostgresTaskDAO) -> None:
    data = os.urandom(3 * 1024 * 1024)
    task = make_task(data=data)
    await dao.insert_tasks([task])
    assert await _stored_payload(dao, task.id) == (RAW, len(data))
    stored = await dao.get_task(task.id)
    assert stored is not None
    assert stored.data == data


async def test_small_payload_is_stored_raw_and_empty_payload_needs_no_row(
    dao: PostgresTaskDAO,
) -> None:
    # One task goes through the scalar statement, several through the unnest batch.
    small, empty = make_task(data=b"a" * 1024), make_task(data=b"")
    await dao.insert_tasks([empty])  # a batch without any payload row
    await dao.insert_tasks([small])
    assert await _stored_payload(dao, small.id) == (RAW, 1024)
    assert await _stored_payload(dao, empty.id) is None
    assert await dao.get_task(empty.id) == empty
    mixed = [make_task(data=b""), make_task(data=b"b" * 10), make_task(data=b"")]
    await dao.insert_tasks(mixed)
    assert [await _stored_payload(dao, t.id) for t in mixed] == [None, (RAW, 10), None]
    assert [await dao.get_task(t.id) for t in mixed] == mixed


async def test_compression_can_be_switched_off(engine: AsyncEngine, database_url: str) -> None:
    async with isolated_schema(database_url, compression_threshold=None) as settings:
        dao = PostgresTaskDAO(engine=engine, settings=settings)
        task = make_task(data=b"z" * 100_000)
        await dao.insert_tasks([task])
        assert await _stored_payload(dao, task.id) == (RAW, 100_000)


async def test_payload_is_deleted_with_its_task(dao: PostgresTaskDAO) -> None:
    task = await processing(dao, make_task(status=TaskStatus.SUBMITTED, data=b"x" * 5000))
    assert await dao.apply([TaskChange(task.complete(now=NOW), task.version, delete=True)]) == [
        True
    ]
    assert await _stored_payload(dao, task.id) is None


# -- strings -------------------------------------------------------------------------------


async def test_strings_with_quotes_and_sql_metacharacters_round_trip(
    dao: PostgresTaskDAO,
) -> None:
    tasks = [make_task(type=s, sub_type=s, unique_key=s, data=s.encode()) for s in NASTY]
    assert await dao.insert_tasks(tasks) == [InsertOutcome(t.id, True) for t in tasks]
    for task, text in zip(tasks, NASTY, strict=True):
        assert await dao.get_task(task.id) == task
        assert [t.id for t in await dao.find_tasks(type=text)] == [task.id]
        again = make_task(type=text, unique_key=text)
        assert await dao.insert_tasks([again]) == [InsertOutcome(task.id, created=False)]
    grabbed = await processing(dao, make_task(status=TaskStatus.SUBMITTED), node=NASTY[2])
    failed = grabbed.schedule(now=NOW, run_at=NOW, error=" | ".join(NASTY))
    assert await dao.apply([TaskChange(failed, grabbed.version)]) == [True]
    assert await dao.get_task(grabbed.id) == failed


async def test_unique_key_of_maximum_length_works(dao: PostgresTaskDAO) -> None:
    for char in ("k", "ü", "🚀"):  # 1, 2 and 4 bytes in UTF-8
        key = char * MAX_UNIQUE_KEY_LENGTH
        AddTaskRequest(type="t" * 250, unique_key=key)  # valid at request level
        task = make_task(type="t" * 250, unique_key=key)
        assert await dao.insert_tasks([task]) == [InsertOutcome(task.id, True)]
        duplicate = make_task(type="t" * 250, unique_key=key)
        assert await dao.insert_tasks([duplicate]) == [InsertOutcome(task.id, False)]


async def test_over_long_unique_key_is_a_clear_validation_error(dao: PostgresTaskDAO) -> None:
    key = "k" * (MAX_UNIQUE_KEY_LENGTH + 1)
    with pytest.raises(ValidationError, match=r"unique_key is 151 characters long; the maximum"):
        AddTaskRequest(type="t", unique_key=key)
    with pytest.raises(ValidationError, match=r"unique_key is 151 characters long"):
        await dao.insert_tasks([make_task(unique_key=key)])
    assert sum((await dao.count_by_status()).values()) == 0


async def test_values_the_database_rejects_are_validation_errors(dao: PostgresTaskDAO) -> None:
    with pytest.raises(ValidationError, match=r"PostgreSQL rejected a value"):
        await dao.insert_tasks([make_task(priority=70_000)])  # beyond smallint
    # A NUL is refused before the statement is sent (both stores refuse it the same way).
    with pytest.raises(ValidationError, match=r"type must not contain NUL characters"):
        await dao.insert_tasks([make_task(type="nul\x00byte")])
    assert sum((await dao.count_by_status()).values()) == 0


async def test_nul_in_an_error_message_never_fails_the_write(dao: PostgresTaskDAO) -> None:
    task = await processing(dao, make_task(status=TaskStatus.SUBMITTED))
    failed = task.schedule(now=NOW, run_at=NOW, error="bad\x00byte")
    assert await dao.apply([TaskChange(failed, task.version)]) == [True]
    stored = await dao.get_task(task.id)
    assert stored is not None
    assert stored.last_error == "bad\\x00byte"


async def test_times_are_utc_whatever_the_session_time_zone(
    database_url: str, settings: PostgresSettings
) -> None:
    engine = create_engine(database_url, connect_args={"options": "-c timezone=Asia/Kolkata"})
    async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
        task = make_task(next_event_time=NOW + timedelta(microseconds=1))
        await dao.insert_tasks([task])
        stored = await dao.get_task(task.id)
        assert stored == task
        assert stored is not None
        assert stored.next_event_time.utcoffset() == timedelta(0)


# -- caller transactions -------------------------------------------------------------------


class _Calls:
    def __init__(self, dao: PostgresTaskDAO, task_id: object) -> None:
        self.seen: list[bool] = []
        self._dao, self._task_id = dao, task_id

    async def __call__(self) -> None:
        # Runs after the commit: a separate connection must already see the task.
        self.seen.append(await self._dao.get_task(self._task_id) is not None)  # type: ignore[arg-type]


async def test_add_in_a_callers_connection_that_rolls_back_leaves_nothing(
    dao: PostgresTaskDAO,
) -> None:
    task = make_task()
    calls = _Calls(dao, task.id)
    async with dao.engine.connect() as conn:
        await conn.begin()
        await dao.insert_tasks([task], transaction=conn)
        dao.after_commit(conn, calls)
        await conn.rollback()
    assert await dao.get_task(task.id) is None
    assert calls.seen == []


async def test_add_in_a_callers_connection_runs_the_callback_after_commit(
    dao: PostgresTaskDAO,
) -> None:
    task = make_task()
    calls = _Calls(dao, task.id)
    async with dao.engine.begin() as conn:
        assert await dao.insert_tasks([task], transaction=conn) == [InsertOutcome(task.id, True)]
        dao.after_commit(conn, calls)
        dao.after_commit(conn, calls)
        assert calls.seen == []
    assert calls.seen == [True, True]
    async with dao.engine.begin() as conn:  # a later transaction on a connection runs nothing
        await conn.execute(sa.text("SELECT 1"))
    assert calls.seen == [True, True]


async def test_add_in_a_callers_session_that_rolls_back_leaves_nothing(
    dao: PostgresTaskDAO,
) -> None:
    task = make_task()
    calls = _Calls(dao, task.id)
    async with AsyncSession(dao.engine) as session:
        await dao.insert_tasks([task], transaction=session)
        dao.after_commit(session, calls)
        await session.rollback()
    assert await dao.get_task(task.id) is None
    assert calls.seen == []


async def test_add_in_a_callers_session_runs_the_callback_once_after_commit(
    dao: PostgresTaskDAO,
) -> None:
    task = make_task()
    calls = _Calls(dao, task.id)
    async with AsyncSession(dao.engine) as session:
        await dao.insert_tasks([task], transaction=session)
        dao.after_commit(session, calls)
        async with session.begin_nested():  # releasing a savepoint is not the commit
            await session.execute(sa.text("SELECT 1"))
        assert calls.seen == []
        await session.commit()
    assert calls.seen == [True]


async def test_failed_commit_of_a_callers_connection_runs_no_callback(
    dao: PostgresTaskDAO,
) -> None:
    scratch = f'"{dao.settings.schema}".deferred'
    async with dao.engine.begin() as conn:
        await conn.exec_driver_sql(
            f"CREATE TABLE {scratch} (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)"
        )
    task = make_task()
    calls = _Calls(dao, task.id)

    async def violating_a_deferred_constraint() -> None:
        async with dao.engine.begin() as conn:
            await dao.insert_tasks([task], transaction=conn)
            await conn.exec_driver_sql(f"INSERT INTO {scratch} VALUES (1), (1)")
            dao.after_commit(conn, calls)

    with pytest.raises(sa.exc.IntegrityError):
        await violating_a_deferred_constraint()
    assert calls.seen == []
    assert await dao.get_task(task.id) is None


async def test_session_for_a_transaction_commits_and_rolls_back_with_it(
    dao: PostgresTaskDAO,
) -> None:
    scratch = f'"{dao.settings.schema}".orders'
    async with dao.transaction() as tx:
        await tx.exec_driver_sql(f"CREATE TABLE {scratch} (id int)")
    for fail in (True, False):
        task = make_task()
        calls = _Calls(dao, task.id)
        with pytest.raises(RuntimeError) if fail else nullcontext():
            async with dao.transaction() as tx:
                async with async_session_for(tx) as session:
                    await session.execute(sa.text(f"INSERT INTO {scratch} VALUES (1)"))
                    await dao.insert_tasks([task], transaction=session)
                    dao.after_commit(session, calls)
                    await session.commit()  # does not end the task's transaction
                    assert calls.seen == []
                if fail:
                    raise RuntimeError("handler failed")
        async with dao.engine.connect() as conn:
            count = await conn.scalar(sa.text(f"SELECT count(*) FROM {scratch}"))
        assert count == (0 if fail else 1)
        assert calls.seen == ([] if fail else [True])


async def test_lost_cas_in_a_transaction_rolls_back_the_handlers_writes(
    dao: PostgresTaskDAO,
) -> None:
    scratch = f'"{dao.settings.schema}".business'
    async with dao.transaction() as tx:
        await tx.exec_driver_sql(f"CREATE TABLE {scratch} (note text)")
    task = await processing(dao, make_task(status=TaskStatus.SUBMITTED))
    recovered = task.recover(now=NOW, deadline=NOW)
    assert await dao.apply([TaskChange(recovered, task.version)]) == [True]

    follow_up = make_task()

    class FencedError(Exception):
        pass

    async def completing_with_a_stale_version() -> None:
        async with dao.transaction() as tx:
            await tx.execute(sa.text(f"INSERT INTO {scratch} VALUES ('charged the card')"))
            await dao.insert_tasks([follow_up], transaction=tx)
            done = task.complete(now=NOW)
            if await dao.apply([TaskChange(done, task.version)], transaction=tx) != [True]:
                raise FencedError

    with pytest.raises(FencedError):
        await completing_with_a_stale_version()
    async with dao.engine.connect() as conn:
        assert await conn.scalar(sa.text(f"SELECT count(*) FROM {scratch}")) == 0
    assert await dao.get_task(follow_up.id) is None
    assert await dao.get_task(task.id) == recovered


async def test_database_error_inside_a_transaction_is_translated_and_rolls_back(
    dao: PostgresTaskDAO,
) -> None:
    ok = make_task()

    async def writing_a_bad_value() -> None:
        async with dao.transaction() as tx:
            await dao.insert_tasks([ok], transaction=tx)
            await dao.insert_tasks([make_task(priority=70_000)], transaction=tx)

    with pytest.raises(ValidationError):
        await writing_a_bad_value()
    assert await dao.get_task(ok.id) is None


async def test_a_transaction_handle_must_be_a_sqlalchemy_one(dao: PostgresTaskDAO) -> None:
    with pytest.raises(ValidationError, match="AsyncConnection or AsyncSession"):
        await dao.insert_tasks([make_task()], transaction=object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="AsyncConnection or AsyncSession"):
        dao.after_commit("tx", _noop)  # type: ignore[arg-type]
    async with dao.engine.connect() as conn:
        with pytest.raises(ValidationError, match="no transaction in progress"):
            dao.after_commit(conn, _noop)


async def test_apply_of_several_changes_to_one_task_sees_each_in_turn(
    dao: PostgresTaskDAO,
) -> None:
    task = make_task()
    await dao.insert_tasks([task])
    submitted = task.submit(now=NOW, deadline=NOW)
    resubmitted = submitted.resubmit(now=NOW, deadline=NOW + timedelta(seconds=1))
    changes = [
        TaskChange(submitted, 0),
        TaskChange(resubmitted, 1),
        TaskChange(resubmitted, 1),  # stale by then
        TaskChange(resubmitted, 2, delete=True),
    ]
    assert await dao.apply(changes) == [True, True, False, True]
    assert await dao.get_task(task.id) is None


async def test_concurrent_claims_from_two_engines_never_share_a_task(
    database_url: str, settings: PostgresSettings
) -> None:
    daos = [PostgresTaskDAO.from_url(database_url, settings=settings) for _ in range(2)]
    tasks = [make_task(next_event_time=NOW - timedelta(seconds=i)) for i in range(300)]
    await daos[0].insert_tasks(tasks)
    claimed: list[list[object]] = [[], []]

    async def claim(n: int) -> None:
        while batch := await daos[n].claim_due(now=NOW, limit=7, deadline=NOW):
            claimed[n].extend(t.id for t in batch)
            await anyio.lowlevel.checkpoint()

    try:
        async with anyio.create_task_group() as tg:
            for n in (0, 0, 1, 1):
                tg.start_soon(claim, n)
    finally:
        for dao in daos:
            await dao.close()
    ids = claimed[0] + claimed[1]
    assert len(ids) == len(set(ids)) == len(tasks)
    assert claimed[0]
    assert claimed[1]


async def _noop() -> None:
    pass


@pytest.mark.parametrize("prepared", [True, False])
async def test_hot_statements_are_prepared_unless_switched_off(
    database_url: str, prepared: bool
) -> None:
    # Off for poolers that cannot keep prepared statements (PgBouncer transaction mode < 1.21).
    async with isolated_schema(database_url, prepared_statements=prepared) as settings:
        dao = PostgresTaskDAO.from_url(database_url, settings=settings, pool_size=1, max_overflow=0)
        async with dao:
            for _ in range(3):
                await dao.insert_tasks([make_task(), make_task()])
                grabbed = await processing(dao)  # a single insert, then the grab
                assert await dao.apply([TaskChange(grabbed.complete(now=NOW), grabbed.version)])
            async with dao.engine.connect() as conn:  # the pool's one connection
                count = await conn.scalar(sa.text("SELECT count(*) FROM pg_prepared_statements"))
        assert (count > 0) is prepared, count


async def test_the_grab_joins_its_batch_on_the_primary_key_not_the_poll_index(
    dao: PostgresTaskDAO, settings: PostgresSettings
) -> None:
    # Statistics that say few tasks are SUBMITTED invite the poll index (status, ...), whose
    # entries on a busy queue are mostly dead; the grab must look its batch up by id.
    tasks = f'"{settings.schema}".{settings.prefix}tasks'
    for _ in range(10):
        await dao.insert_tasks([make_task(status=TaskStatus.SUBMITTED) for _ in range(1000)])
    async with dao.engine.begin() as conn:
        await conn.exec_driver_sql(f"UPDATE {tasks} SET status = 'DONE'")
        await conn.exec_driver_sql(
            f"UPDATE {tasks} SET status = 'SUBMITTED' WHERE id IN (SELECT id FROM {tasks} LIMIT 10)"
        )
    async with dao.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(f"ANALYZE {tasks}")
        ids = list((await conn.execute(sa.text(f"SELECT id FROM {tasks} LIMIT 10"))).scalars())
        grab = dao._sql.grab
        values = {"g_id": ids, "g_version": [0] * 10, "g_node": ["n"] * 10,
                  "g_deadline": [NOW] * 10, "now": NOW}  # fmt: skip
        # Planned with these values (an unprepared statement: a custom plan).
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        cursor = await driver.execute("EXPLAIN " + grab.sql, grab.params(values))
        plan = "\n".join(row[0] for row in await cursor.fetchall())
    assert "poll" not in plan, plan
    assert "_pkey" in plan, plan

"""The traceback of the last failure on PostgreSQL: migration 2, written with the completion.

Migration 2 adds ``tasks.last_traceback`` to tables migration 1 created (rows already there
read as no traceback); the DAO writes it with the change that records the failure, reads it
back with the task, and listings leave it out like the payload.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO
from resilient_task.adapters.postgres.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    _Names,
    current_version,
    upgrade_steps,
)
from resilient_task.adapters.postgres.queries import PostgresTaskQueries
from resilient_task.adapters.postgres.schema_check import schema_differences
from resilient_task.domain.task import MAX_TRACEBACK_LENGTH, TaskStatus
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from resilient_task.ports.task_queries import TaskQuery
from resilient_task.testing.task_dao_contract import make_task
from tests.integration.postgres_env import isolated_schema

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOW = datetime.now(UTC).replace(microsecond=0)
TRACE = (
    "Traceback (most recent call last):\n"
    '  File "/app/pay.py", line 3, in charge\n'
    "    bank.charge()\n"
    "ValueError: declined \x00 \ud800 ünïcode\n"
)


async def test_migration_2_adds_the_column_to_tables_of_version_1_keeping_their_rows(
    database_url: str,
) -> None:
    async with isolated_schema(database_url, migrate=False) as s:
        n = _Names(s.schema, s.prefix)
        engine = create_async_engine(database_url, poolclass=sa.NullPool)
        try:
            # The tables as version 1 left them, with one task in them.
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f'CREATE SCHEMA "{s.schema}"')
                await conn.exec_driver_sql(
                    f"CREATE TABLE {n.table('schema_version')} (version integer PRIMARY KEY, "
                    "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                for statement in MIGRATIONS[0].statements(n):
                    await conn.exec_driver_sql(statement)
                await conn.exec_driver_sql(
                    f"INSERT INTO {n.table('schema_version')} (version, description) "
                    "VALUES (1, 'v1')"
                )
                await conn.exec_driver_sql(
                    f"INSERT INTO {n.table('tasks')} (id, type, status, next_event_time, "
                    "last_error, created_at, updated_at) VALUES (gen_random_uuid(), 'old', "
                    "'ERROR', now(), 'from version 1', now(), now())"
                )
            assert await current_version(engine, schema=s.schema, prefix=s.prefix) == 1

            version, applied = await upgrade_steps(engine, schema=s.schema, prefix=s.prefix)

            assert version == SCHEMA_VERSION == 2
            assert [m.version for m in applied] == [2]
            assert await schema_differences(engine, schema=s.schema, prefix=s.prefix) == []
        finally:
            await engine.dispose()
        async with PostgresTaskDAO.from_url(database_url, settings=s) as dao:
            [old] = await PostgresTaskQueries(dao=dao).list_tasks(TaskQuery())
            stored = await dao.get_task(old.id)
            assert stored is not None
            assert (stored.last_error, stored.last_traceback) == ("from version 1", None)


async def test_the_traceback_is_written_with_the_failure_and_read_back_with_the_task(
    database_url: str, settings: PostgresSettings
) -> None:
    async with PostgresTaskDAO.from_url(database_url, settings=settings) as dao:
        task = make_task(status=TaskStatus.SUBMITTED, next_event_time=NOW)
        await dao.insert_tasks([task])
        [grabbed] = await dao.grab([GrabRequest(task.id, 0, "node", NOW + timedelta(1))], now=NOW)
        retried = grabbed.schedule(now=NOW, run_at=NOW, error="declined", traceback=TRACE)
        assert await dao.apply([TaskChange(retried, grabbed.version)]) == [True]

        stored = await dao.get_task(task.id)
        assert stored is not None
        assert stored.last_traceback == retried.last_traceback
        assert stored.last_traceback is not None
        assert stored.last_traceback.endswith("ValueError: declined \\x00 \\ud800 ünïcode\n")
        # The grab returns it too, and the next failure replaces it (bounded).
        submitted = stored.submit(now=NOW, deadline=NOW + timedelta(1))
        assert await dao.apply([TaskChange(submitted, stored.version)]) == [True]
        [again] = await dao.grab(
            [GrabRequest(task.id, submitted.version, "node", NOW + timedelta(1))], now=NOW
        )
        assert again.last_traceback == retried.last_traceback
        huge = "  frame\n" * 10_000 + "KeyError: 'x'\n"
        errored = again.mark_error(now=NOW, reason="gave up", traceback=huge)
        assert await dao.apply([TaskChange(errored, again.version)]) == [True]
        stored = await dao.get_task(task.id)
        assert stored is not None
        assert stored.last_traceback is not None
        assert len(stored.last_traceback) <= MAX_TRACEBACK_LENGTH
        assert stored.last_traceback.endswith("KeyError: 'x'\n")

        [listed] = await PostgresTaskQueries(dao=dao).list_tasks(TaskQuery())
        assert listed.last_error == "gave up"
        assert listed.last_traceback is None

"""Hot connections: the DAO's one-statement operations on connections it keeps checked out."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, create_engine
from resilient_task.adapters.postgres.hot import HotConnections
from resilient_task.errors import ValidationError
from resilient_task.testing.task_dao_contract import make_task
from tests.integration.postgres_env import terminate_backends

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _dao(database_url: str, settings: PostgresSettings, **pool: Any) -> tuple[PostgresTaskDAO, str]:
    name = f"rt-hot-{uuid.uuid4().hex[:8]}"
    dao = PostgresTaskDAO.from_url(database_url, settings=settings, application_name=name, **pool)
    return dao, name


def _hot(dao: PostgresTaskDAO) -> HotConnections:
    hot = dao._hot
    assert hot is not None
    return hot


async def _backends(database_url: str, name: str) -> int:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def test_sequential_operations_reuse_one_hot_connection(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, _ = _dao(database_url, settings)
    async with dao:
        for _ in range(20):
            task = make_task()
            await dao.insert_tasks([task])
            assert await dao.get_task(task.id) == task
        assert _hot(dao).idle == 1
        assert dao.engine.sync_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert dao.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_concurrent_operations_keep_at_most_the_hot_size(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, _ = _dao(database_url, settings, pool_size=5, max_overflow=0)
    async with dao:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(dao.insert_tasks, [make_task()])
        assert _hot(dao).idle == _hot(dao).size == 2
        assert dao.engine.sync_engine.pool.checkedout() == 2  # type: ignore[attr-defined]


async def test_a_failed_statement_leaves_the_hot_connection_usable(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, _ = _dao(database_url, settings)
    async with dao:
        await dao.insert_tasks([make_task()])
        with pytest.raises(ValidationError):
            await dao.insert_tasks([make_task(priority=2**40)])
        assert _hot(dao).idle == 1
        task = make_task()
        await dao.insert_tasks([task])
        assert await dao.get_task(task.id) == task


async def test_a_statement_cancelled_mid_flight_discards_its_connection(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, name = _dao(database_url, settings)
    task = make_task()
    async with dao:
        await dao.insert_tasks([make_task()])
        async with dao.transaction() as tx:  # holds the id: a second insert of it waits
            await dao.insert_tasks([task], transaction=tx)
            with anyio.move_on_after(0.3) as scope:
                await dao.insert_tasks([task])
            assert scope.cancelled_caught
            assert _hot(dao).idle == 0  # not given back busy
        outcomes = await dao.insert_tasks([task, make_task()])
        assert [o.created for o in outcomes] == [False, True]
        assert await _backends(database_url, name) >= 1


async def test_hot_connections_killed_by_the_server_are_replaced(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, name = _dao(database_url, settings)
    async with dao:
        task = make_task()
        await dao.insert_tasks([task])
        assert await terminate_backends(database_url, name, wait=True) >= 1
        assert await dao.get_task(task.id) == task
        other = make_task()
        await dao.insert_tasks([other])
        assert await dao.get_task(other.id) == other


async def test_a_dao_on_your_engine_keeps_none_unless_asked(
    database_url: str, settings: PostgresSettings
) -> None:
    engine = create_engine(database_url, pool_size=3, max_overflow=0)
    try:
        plain = PostgresTaskDAO(engine=engine, settings=settings)
        await plain.insert_tasks([make_task()])
        assert plain._hot is None
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        hot = PostgresTaskDAO(engine=engine, settings=settings, hot_connections=1)
        await hot.insert_tasks([make_task()])
        assert engine.sync_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        await hot.close()
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_an_operation_cancelled_while_its_connection_is_pinged_returns_it(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, _ = _dao(database_url, settings, ping_after_idle=0.0)
    async with dao:
        task = make_task()
        await dao.insert_tasks([task])
        pool = dao.engine.sync_engine.pool
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        with anyio.CancelScope() as scope:
            scope.cancel()
            await dao.get_task(task.id)  # cancelled inside the ping
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        assert await dao.get_task(task.id) == task

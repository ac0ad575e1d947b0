"""Database failures surface as resilient-task errors, and the store recovers afterwards."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest
import sqlalchemy.exc as sa_exc

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO
from resilient_task.adapters.postgres import engine as engine_module
from resilient_task.adapters.postgres.errors import translate
from resilient_task.errors import (
    BackendError,
    BackendUnavailableError,
    ResilientTaskError,
    ValidationError,
)
from resilient_task.ports.task_dao import GrabRequest
from resilient_task.testing.task_dao_contract import make_submitted, make_task
from tests.integration.postgres_env import terminate_backends

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _terminate(database_url: str, application_name: str) -> int:
    return await terminate_backends(database_url, application_name, wait=True)


def _dao(database_url: str, settings: PostgresSettings, **pool: Any) -> tuple[PostgresTaskDAO, str]:
    name = f"rt-test-{uuid.uuid4().hex[:8]}"
    dao = PostgresTaskDAO.from_url(database_url, settings=settings, application_name=name, **pool)
    return dao, name


@pytest.mark.parametrize("pool", [{}, {"pool_pre_ping": True}], ids=["liveness", "pre_ping"])
async def test_killed_connections_are_replaced_on_checkout(
    database_url: str, settings: PostgresSettings, pool: dict[str, Any]
) -> None:
    dao, name = _dao(database_url, settings, pool_size=3, **pool)
    async with dao:
        task = make_submitted()
        async with anyio.create_task_group() as tg:  # three pooled connections in use
            for _ in range(3):
                tg.start_soon(dao.insert_tasks, [make_task()])
        await dao.insert_tasks([task])
        assert await _terminate(database_url, name) >= 1
        assert await dao.get_task(task.id) == task
        request = GrabRequest(task.id, task.version, "node-1", task.next_event_time)
        grabbed = await dao.grab([request], now=task.created_at)
        assert [t.id for t in grabbed] == [task.id]


async def test_a_connection_idle_past_ping_after_idle_is_pinged_even_without_unread_input(
    database_url: str, settings: PostgresSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A silent network drop leaves nothing to read on the socket: only the idle ping finds it.
    monkeypatch.setattr(engine_module, "has_input", lambda _connection: False)
    dao, name = _dao(database_url, settings, ping_after_idle=0.0, pool_size=1, max_overflow=0)
    async with dao:
        task = make_task()
        await dao.insert_tasks([task])
        assert await _terminate(database_url, name) == 1
        assert await dao.get_task(task.id) == task


async def test_killed_connection_without_liveness_check_is_a_transient_error_then_recovers(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, name = _dao(database_url, settings, ping_after_idle=None, pool_size=1)
    async with dao:
        task = make_task()
        await dao.insert_tasks([task])
        assert await _terminate(database_url, name) == 1
        with pytest.raises(BackendUnavailableError) as caught:
            await dao.get_task(task.id)
        assert caught.value.transient
        assert isinstance(caught.value.__cause__, sa_exc.DBAPIError)
        assert await dao.get_task(task.id) == task


async def test_killed_connection_on_the_driver_path_is_a_transient_error_then_recovers(
    database_url: str, settings: PostgresSettings, caplog: pytest.LogCaptureFixture
) -> None:
    # insert, grab and apply run on psycopg directly (adapters/postgres/driver.py): their
    # errors must be translated, and the broken connection must not go back into the pool.
    dao, name = _dao(database_url, settings, ping_after_idle=None, pool_size=1, max_overflow=0)
    async with dao:
        await dao.insert_tasks([make_task()])
        assert await _terminate(database_url, name) == 1
        task = make_task()
        with pytest.raises(BackendUnavailableError) as caught:
            await dao.insert_tasks([task])
        assert caught.value.transient
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)
        assert [o.created for o in await dao.insert_tasks([task])] == [True]
        assert await dao.get_task(task.id) == task
    # discarded, not returned to the pool (where the failing reset would log a traceback)
    assert not [r for r in caplog.records if r.name.startswith("sqlalchemy")]


async def test_connection_killed_inside_a_transaction_is_a_transient_error(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, name = _dao(database_url, settings)
    async with dao:
        task = make_task()

        async def unit_of_work_losing_its_connection() -> None:
            async with dao.transaction() as tx:
                await dao.insert_tasks([make_task()], transaction=tx)
                await _terminate(database_url, name)
                await dao.insert_tasks([task], transaction=tx)

        with pytest.raises(BackendUnavailableError):
            await unit_of_work_losing_its_connection()
        assert await dao.get_task(task.id) is None
        await dao.insert_tasks([task])
        assert await dao.get_task(task.id) == task


async def test_unreachable_database_is_a_transient_error(settings: PostgresSettings) -> None:
    dao = PostgresTaskDAO.from_url(
        "postgresql+psycopg://postgres:pw@127.0.0.1:1/test", settings=settings, connect_timeout=2
    )
    try:
        with pytest.raises(BackendUnavailableError, match="PostgreSQL unavailable") as caught:
            await dao.open()
        assert caught.value.transient
        assert "pw" not in str(caught.value)
    finally:
        await dao.close()


async def test_exhausted_pool_is_a_transient_error(
    database_url: str, settings: PostgresSettings
) -> None:
    dao, _ = _dao(database_url, settings, pool_size=1, max_overflow=0, pool_timeout=0.2)
    async with dao, dao.transaction():
        with pytest.raises(BackendUnavailableError, match="no pooled connection"):
            await dao.count_by_status()


async def test_statement_timeout_is_a_transient_backend_error(
    database_url: str, settings: PostgresSettings
) -> None:
    locker, _ = _dao(database_url, settings)
    impatient, _ = _dao(
        database_url, settings, connect_args={"options": "-c statement_timeout=100"}
    )
    tasks = f'"{settings.schema}"."{settings.prefix}tasks"'
    async with locker, impatient:
        async with locker.transaction() as tx:
            await tx.exec_driver_sql(f"LOCK TABLE {tasks} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(BackendError, match="statement timeout") as caught:
                await impatient.count_by_status()
        assert caught.value.transient
        assert not isinstance(caught.value, BackendUnavailableError)
        assert sum((await impatient.count_by_status()).values()) == 0


def test_translation_keeps_the_cause_and_classifies_by_sqlstate() -> None:
    def db_error(cls: type[psycopg.Error], message: str = "boom") -> sa_exc.DBAPIError:
        wrapped = sa_exc.DBAPIError.instance("SELECT secret", {"p": "secret"}, cls(message),
                                             psycopg.Error)  # fmt: skip
        assert isinstance(wrapped, sa_exc.DBAPIError)
        return wrapped

    cases: list[tuple[BaseException, type[ResilientTaskError], bool]] = [
        (db_error(psycopg.errors.StringDataRightTruncation), ValidationError, False),
        (db_error(psycopg.errors.NumericValueOutOfRange), ValidationError, False),
        (db_error(psycopg.errors.ProgramLimitExceeded), ValidationError, False),
        (db_error(psycopg.errors.SerializationFailure), BackendError, True),
        (db_error(psycopg.errors.DeadlockDetected), BackendError, True),
        (db_error(psycopg.errors.LockNotAvailable), BackendError, True),  # lock_timeout
        (db_error(psycopg.errors.AdminShutdown), BackendUnavailableError, True),
        (db_error(psycopg.errors.TooManyConnections), BackendUnavailableError, True),
        (db_error(psycopg.OperationalError), BackendUnavailableError, True),
        (db_error(psycopg.InterfaceError), BackendUnavailableError, True),
        (db_error(psycopg.errors.UndefinedTable), BackendError, False),
        (db_error(psycopg.errors.SyntaxError), BackendError, False),
        (sa_exc.TimeoutError("QueuePool limit"), BackendUnavailableError, True),
        (sa_exc.ResourceClosedError("closed"), BackendError, False),
        (ConnectionRefusedError("refused"), BackendUnavailableError, True),
    ]
    for exc, expected, transient in cases:
        error = translate(exc, "do things")
        assert type(error) is expected, (exc, error)
        assert getattr(error, "transient", False) is transient, (exc, error)
        assert "cannot do things" in str(error)
        assert "secret" not in str(error)

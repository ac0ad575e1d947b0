"""NOTIFY in the insert: the PostgreSQL store triggers the due tasks it creates itself.

The payloads are built in SQL (``Statements.notifying_inserts``); the listener reads them with
``decode_payload``. They must carry exactly the references ``encode_payloads`` would, for any
type and sub-type a task can have, in payloads PostgreSQL accepts -- and be delivered when the
insert commits: at once outside a transaction, at the caller's COMMIT inside one, never after
a rollback.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_task import AddTaskRequest, NotifyTriggers, PostgresOptions, ResilientTask
from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, create_engine
from resilient_task.adapters.postgres.notify_payloads import (
    MAX_PAYLOAD_BYTES,
    channel_name,
    decode_payload,
    encode_payloads,
)
from resilient_task.domain.task import BaseTask, Task, TaskStatus
from resilient_task.testing.task_dao_contract import make_task
from tests.unit.hostile import FUZZ_EXAMPLES, valid_text

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

_db_examples = settings(
    max_examples=max(20, FUZZ_EXAMPLES // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_END = "end-of-test"


def _libpq(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


class Listener:
    """A LISTEN connection that reads everything notified up to now (by commit order)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], channel: str) -> None:
        self._conn, self.channel = conn, channel

    async def received(self) -> list[str]:
        """The payloads delivered so far: NOTIFYs of earlier commits come before our own."""
        await self._conn.execute("SELECT pg_notify(%s, %s)", (self.channel, _END))
        payloads: list[str] = []
        with anyio.fail_after(10):
            async for note in self._conn.notifies():
                if note.payload == _END and note.pid == self._conn.info.backend_pid:
                    return payloads
                payloads.append(note.payload)
        raise AssertionError("unreachable")


@pytest.fixture
async def listener(database_url: str, settings: PostgresSettings) -> AsyncIterator[Listener]:
    channel = channel_name(settings)
    async with await psycopg.AsyncConnection.connect(_libpq(database_url), autocommit=True) as conn:
        await conn.execute(f'LISTEN "{channel}"')
        yield Listener(conn, channel)


@pytest.fixture
async def dao(database_url: str, settings: PostgresSettings) -> AsyncIterator[PostgresTaskDAO]:
    engine = create_engine(database_url, pool_size=3, max_overflow=0)
    async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
        dao.notify_on_insert(channel_name(settings))
        yield dao


def _ref(task: Task) -> BaseTask:
    return BaseTask(task.id, task.version, task.type, task.sub_type, task.priority)


def _references(payloads: list[str]) -> list[BaseTask]:
    found: list[BaseTask] = []
    for payload in payloads:
        assert len(payload.encode()) <= MAX_PAYLOAD_BYTES
        decoded = decode_payload(payload)
        assert decoded is not None, payload
        found.extend(decoded)
    return sorted(found, key=lambda t: t.id)


_hostile = st.text(
    alphabet=st.one_of(
        st.sampled_from(['"', "\\", "'", "\n", "\x01", "\x1f", "\x7f", "é", "✓", "🚀", "\u2028"]),
        st.characters(codec="utf-8", exclude_characters="\x00"),
    ),
    min_size=1,
    max_size=250,
).filter(valid_text)
_tasks = st.builds(
    lambda type_, sub_type, priority, due: make_task(
        type=type_,
        sub_type=sub_type,
        priority=priority,
        status=TaskStatus.SUBMITTED if due else TaskStatus.WAITING,
    ),
    _hostile | st.sampled_from(["x" * 250, "\\" * 250, '"' * 250, "\x01" * 250, "🚀" * 250]),
    st.none() | _hostile,
    st.integers(0, 9),
    st.booleans(),
)


@_db_examples
@given(tasks=st.lists(_tasks, min_size=1, max_size=40))
async def test_the_payloads_built_in_sql_carry_what_encode_payloads_would(
    dao: PostgresTaskDAO, listener: Listener, tasks: list[Task]
) -> None:
    outcomes = await dao.insert_tasks(tasks)
    assert all(o.created for o in outcomes)
    due = [t for t in tasks if t.status is TaskStatus.SUBMITTED]
    assert [o.triggered for o in outcomes] == [t.status is TaskStatus.SUBMITTED for t in tasks]
    expected = _references(encode_payloads([_ref(t) for t in due]))
    assert _references(await listener.received()) == expected


async def test_many_long_references_are_split_into_payloads_under_the_limit(
    dao: PostgresTaskDAO, listener: Listener
) -> None:
    tasks = [
        make_task(type="\x01" * 250, sub_type='"' * 250, status=TaskStatus.SUBMITTED)
        for _ in range(300)
    ]
    await dao.insert_tasks(tasks)
    payloads = await listener.received()
    assert len(payloads) > 100  # about 3 KB each: two per payload
    assert _references(payloads) == sorted(map(_ref, tasks), key=lambda t: t.id)


async def test_duplicates_and_waiting_tasks_are_not_notified(
    dao: PostgresTaskDAO, listener: Listener
) -> None:
    first = make_task(status=TaskStatus.SUBMITTED, unique_key="k")
    await dao.insert_tasks([first])
    again = make_task(status=TaskStatus.SUBMITTED, unique_key="k")
    later = make_task(status=TaskStatus.WAITING)
    outcomes = await dao.insert_tasks([again, later, first])
    expected = [(False, False), (True, False), (False, False)]
    assert [(o.created, o.triggered) for o in outcomes] == expected
    assert _references(await listener.received()) == [_ref(first)]


async def test_inside_a_transaction_the_notification_comes_with_the_commit_only(
    dao: PostgresTaskDAO, listener: Listener
) -> None:
    kept, dropped = (make_task(status=TaskStatus.SUBMITTED) for _ in range(2))
    async with dao.transaction() as tx:
        (outcome,) = await dao.insert_tasks([kept], transaction=tx)
        assert outcome.triggered
        assert await listener.received() == []
    assert _references(await listener.received()) == [_ref(kept)]

    async def rolled_back() -> None:
        async with dao.transaction() as tx:
            await dao.insert_tasks([dropped], transaction=tx)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert await listener.received() == []
    assert await dao.get_task(dropped.id) is None


async def test_a_notify_node_triggers_in_the_insert_and_never_opens_its_sending_connection(
    database_url: str, settings: PostgresSettings, listener: Listener
) -> None:
    name = f"rt-insert-notify-{uuid.uuid4().hex[:8]}"
    app = ResilientTask(
        database_url=database_url,
        triggers=NotifyTriggers(application_name=name),
        run_workers=False,
        postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix),
    )
    engine = create_async_engine(database_url)
    try:
        async with app:
            added = await app.service.add_task(AddTaskRequest(type="work"))
            batch = await app.service.add_tasks([AddTaskRequest(type="work")] * 30)
            assert [t.id for t in _references(await listener.received())] == sorted(
                [added.task_id, *(r.task_id for r in batch)]
            )
            async with engine.connect() as conn:
                await conn.begin()
                inside = await app.service.add_task(AddTaskRequest(type="work"), transaction=conn)
                assert await listener.received() == []
                await conn.commit()
            assert [t.id for t in _references(await listener.received())] == [inside.task_id]
            async with engine.connect() as conn:
                await conn.begin()
                await app.service.add_task(AddTaskRequest(type="work"), transaction=conn)
                await conn.rollback()
            assert await listener.received() == []
            async with engine.connect() as conn:
                found = await conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s",
                    {"name": f"{name}-notify"},
                )
                assert found.scalar() == 0
    finally:
        await engine.dispose()

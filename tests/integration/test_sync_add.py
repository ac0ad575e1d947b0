"""resilient_task.sync against a real PostgreSQL, for each kind of caller's connection.

The caller is the test's own thread (as a WSGI request thread would be); the workers are whole
``ResilientTask`` nodes running in an event loop on another thread (a blocking portal).
"""

from __future__ import annotations

import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from anyio.from_thread import BlockingPortal, start_blocking_portal
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from resilient_task import (
    AddTaskRequest,
    AddTaskResultCode,
    BackendError,
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
    ValidationError,
)
from resilient_task.adapters.postgres import PostgresSettings
from resilient_task.sync import TaskAdder, add_task, add_tasks
from tests.integration.postgres_env import isolated_schema
from tests.integration.test_kafka_triggerer import make_properties

pytestmark = pytest.mark.integration

KINDS = ["psycopg", "psycopg-as-django-sets-it-up", "sqlalchemy-connection", "sqlalchemy-session"]
SLOW_POLL = TaskProperties(
    # Only a trigger can start a task within a test: the resumer polls every 30 s and the
    # pick-up deadline of a new task is a minute away.
    resumer=TaskResumerProperties(polling_interval=timedelta(seconds=30)),
    expected_queue_time=timedelta(minutes=1),
    shutdown_grace=timedelta(seconds=2),
)
FAST_POLL = replace(
    SLOW_POLL, resumer=TaskResumerProperties(polling_interval=timedelta(seconds=0.2))
)
WAIT = 15.0  # seconds a test waits for a worker on a shared, busy machine


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    """An event loop on another thread, for the workers and the async side of comparisons."""
    with start_blocking_portal("asyncio") as running:
        yield running


@pytest.fixture
def schema(portal: BlockingPortal, database_url: str) -> Iterator[PostgresSettings]:
    """A migrated schema of the test's own, with a business table ``orders``."""
    with portal.wrap_async_context_manager(isolated_schema(database_url)) as settings:
        with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{settings.schema}".orders (id text PRIMARY KEY)')
        yield settings


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A synchronous SQLAlchemy engine, as a Flask application would have."""
    created = sa.create_engine(database_url, poolclass=sa.NullPool)
    yield created
    created.dispose()


def conninfo(url: str) -> str:
    """The libpq connection string of a ``postgresql+psycopg://`` URL."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Txn:
    """The caller's open transaction, whatever kind of handle it is."""

    handle: Any
    execute: Callable[[str, dict[str, Any]], None]
    commit: Callable[[], None]
    rollback: Callable[[], None]


@contextmanager
def transaction(kind: str, url: str, engine: sa.Engine) -> Iterator[Txn]:
    """A transaction on a new connection of ``kind``; closed (rolled back unless committed)."""
    if kind.startswith("psycopg"):
        # Django's psycopg 3 connections bind parameters client-side; a dict row factory is a
        # common choice. Neither may change what the store sends or reads.
        options: dict[str, Any] = (
            {"cursor_factory": psycopg.ClientCursor, "row_factory": dict_row}
            if kind == "psycopg-as-django-sets-it-up"
            else {}
        )
        with psycopg.connect(conninfo(url), **options) as conn:

            def run(sql: str, params: dict[str, Any]) -> None:
                conn.execute(sql.replace(":id", "%(id)s"), params)

            yield Txn(conn, run, conn.commit, conn.rollback)
    elif kind == "sqlalchemy-connection":
        with engine.connect() as connection:

            def run(sql: str, params: dict[str, Any]) -> None:
                connection.execute(sa.text(sql), params)

            yield Txn(connection, run, connection.commit, connection.rollback)
    else:
        with Session(engine) as session:

            def run(sql: str, params: dict[str, Any]) -> None:
                session.execute(sa.text(sql), params)

            yield Txn(session, run, session.commit, session.rollback)


def insert_order(txn: Txn, settings: PostgresSettings, order_id: str) -> None:
    txn.execute(f'INSERT INTO "{settings.schema}".orders (id) VALUES (:id)', {"id": order_id})


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(url)) as conn:
        return conn.execute(sql, params).fetchall()


def tasks_table(settings: PostgresSettings) -> str:
    return f'"{settings.schema}".{settings.prefix}tasks'


class Ran:
    """Task ids the workers' processor saw, waited for across threads."""

    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []
        self._changed = threading.Condition()

    async def process(self, task: Task) -> ProcessResult:
        with self._changed:
            self.ids.append(task.id)
            self._changed.notify_all()
        return ProcessResult.DONE

    def wait_for(self, task_id: uuid.UUID, timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: task_id in self.ids, timeout)


@contextmanager
def worker(
    portal: BlockingPortal,
    url: str,
    settings: PostgresSettings,
    *,
    notify: bool,
    properties: TaskProperties = SLOW_POLL,
    kafka: KafkaProperties | None = None,
) -> Iterator[Ran]:
    """A running node with a handler for type ``ship``; triggered by Kafka if ``kafka``."""
    ran = Ran()
    properties = replace(properties, node_id=f"sync-{uuid.uuid4().hex[:6]}")
    app = ResilientTask(
        handlers=[TaskHandler(types={"ship"}, processor=ran.process)],
        properties=properties if kafka is None else replace(properties, kafka=kafka),
        database_url=url,
        triggers=KafkaTriggers() if kafka is not None else NotifyTriggers() if notify else None,
        postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix),
    )
    with portal.wrap_async_context_manager(app):
        yield ran


@pytest.mark.parametrize("kind", KINDS)
def test_a_committed_add_runs_on_a_notify_worker_within_seconds(
    kind: str, portal: BlockingPortal, database_url: str, engine: sa.Engine, schema: Any
) -> None:
    adder = TaskAdder(triggers="notify", settings=schema, properties=SLOW_POLL)
    with worker(portal, database_url, schema, notify=True) as ran:
        with transaction(kind, database_url, engine) as txn:
            insert_order(txn, schema, "order-1")
            result = adder.add_task(txn.handle, AddTaskRequest(type="ship", data=b"order-1"))
            assert result.result is AddTaskResultCode.OK
            txn.commit()
        # The resumer would wait 30 s and the deadline is a minute away: only NOTIFY is this fast.
        assert ran.wait_for(result.task_id)
    assert rows(database_url, f'SELECT id FROM "{schema.schema}".orders') == [("order-1",)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_rolled_back_add_leaves_no_task_and_sends_no_trigger(
    kind: str, portal: BlockingPortal, database_url: str, engine: sa.Engine, schema: Any
) -> None:
    adder = TaskAdder(triggers="notify", settings=schema, properties=SLOW_POLL)
    with worker(portal, database_url, schema, notify=True) as ran:
        with transaction(kind, database_url, engine) as txn:
            insert_order(txn, schema, "order-1")
            result = adder.add_task(txn.handle, AddTaskRequest(type="ship"))
            txn.rollback()
        assert not ran.wait_for(result.task_id, timeout=1.0)
    assert rows(database_url, f"SELECT id FROM {tasks_table(schema)}") == []
    assert rows(database_url, f'SELECT id FROM "{schema.schema}".orders') == []


@pytest.mark.parametrize("kind", KINDS)
def test_poll_mode_stores_due_tasks_overdue_for_the_workers_poll(
    kind: str, portal: BlockingPortal, database_url: str, engine: sa.Engine, schema: Any
) -> None:
    before = datetime.now(UTC)
    with transaction(kind, database_url, engine) as txn:
        result = add_task(txn.handle, AddTaskRequest(type="ship"), triggers="poll", settings=schema)
        txn.commit()
    [(status, deadline)] = rows(
        database_url, f"SELECT status, next_event_time FROM {tasks_table(schema)}"
    )
    assert status == "SUBMITTED"
    assert before <= deadline <= datetime.now(UTC)  # overdue at once, not in a minute
    # A worker without any trigger transport (Kafka's stand-in) finds it on its poll.
    with worker(portal, database_url, schema, notify=False, properties=FAST_POLL) as ran:
        assert ran.wait_for(result.task_id)


def test_poll_mode_reaches_a_kafka_triggered_worker(
    portal: BlockingPortal,
    database_url: str,
    kafka_bootstrap: str,
    engine: sa.Engine,
    schema: Any,
) -> None:
    kafka = make_properties(kafka_bootstrap, partitions=1)
    with worker(
        portal, database_url, schema, notify=False, properties=FAST_POLL, kafka=kafka
    ) as ran:
        with Session(engine) as session, session.begin():
            result = add_task(
                session, AddTaskRequest(type="ship"), triggers="poll", settings=schema
            )
        assert ran.wait_for(result.task_id)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_ids_and_unique_keys_report_the_existing_task(
    kind: str, database_url: str, engine: sa.Engine, schema: Any
) -> None:
    adder = TaskAdder(triggers="notify", settings=schema)
    own_id = uuid.uuid4()
    with transaction(kind, database_url, engine) as txn:
        first = adder.add_tasks(
            txn.handle,
            [
                AddTaskRequest(type="ship", task_id=own_id),
                AddTaskRequest(type="ship", unique_key="order-7"),
                AddTaskRequest(type="ship", unique_key="order-7"),  # the same batch
            ],
        )
        txn.commit()
    assert [r.result for r in first] == [
        AddTaskResultCode.OK,
        AddTaskResultCode.OK,
        AddTaskResultCode.ALREADY_EXISTS,
    ]
    assert first[0].task_id == own_id
    assert first[2].task_id == first[1].task_id
    with transaction(kind, database_url, engine) as txn:
        again = adder.add_tasks(
            txn.handle,
            [
                AddTaskRequest(type="ship", task_id=own_id, unique_key="other"),
                AddTaskRequest(type="ship", unique_key="order-7"),
                AddTaskRequest(type="other-type", unique_key="order-7"),  # keys are per type
            ],
        )
        txn.commit()
    assert [(r.task_id, r.result) for r in again[:2]] == [
        (own_id, AddTaskResultCode.ALREADY_EXISTS),
        (first[1].task_id, AddTaskResultCode.ALREADY_EXISTS),
    ]
    assert again[2].result is AddTaskResultCode.OK
    assert len(rows(database_url, f"SELECT id FROM {tasks_table(schema)}")) == 3


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_batch_of_hundreds_deduplicates_like_a_small_one_in_every_transaction_mode(
    autocommit: bool, database_url: str, schema: Any
) -> None:
    adder = TaskAdder(triggers="notify", settings=schema)
    batch = [
        AddTaskRequest(type="ship", unique_key=f"k{i % 150}", data=b"%d" % i * (i % 3) * 400)
        for i in range(300)
    ]
    with psycopg.connect(conninfo(database_url), autocommit=autocommit) as conn:
        with conn.transaction(force_rollback=True):
            adder.add_tasks(conn, batch)  # rolled back: the next adds start afresh
        with conn.transaction():
            first = adder.add_tasks(conn, batch)
        with conn.transaction():
            again = adder.add_tasks(conn, batch[100:250])
        if autocommit:  # outside any transaction block: commits on its own
            alone = adder.add_tasks(conn, [AddTaskRequest(type="ship")] * 2 + batch[:120])
            assert [r.result for r in alone[:2]] == [AddTaskResultCode.OK] * 2
    assert [r.result for r in first] == [AddTaskResultCode.OK] * 150 + [
        AddTaskResultCode.ALREADY_EXISTS
    ] * 150
    assert [r.task_id for r in first[150:]] == [r.task_id for r in first[:150]]
    assert again == [replace(r, result=AddTaskResultCode.ALREADY_EXISTS) for r in first[100:250]]
    stored = dict(
        (key, zlib.decompress(data) if data_format == 1 else data)
        for key, data_format, data in rows(
            database_url,
            f"SELECT t.unique_key, d.data_format, d.data FROM {tasks_table(schema)} t "
            f'LEFT JOIN "{schema.schema}".{schema.prefix}task_data d ON d.task_id = t.id '
            "WHERE t.unique_key IS NOT NULL",
        )
    )
    assert len(stored) == 150
    assert all(stored[f"k{i}"] == (b"%d" % i * (i % 3) * 400 or None) for i in range(150))


def test_a_concurrent_add_of_the_same_key_waits_for_the_first_and_reports_it(
    database_url: str, engine: sa.Engine, schema: Any
) -> None:
    adder = TaskAdder(triggers="notify", settings=schema)
    request = AddTaskRequest(type="ship", unique_key="order-9")
    second: list[Any] = []
    with transaction("psycopg", database_url, engine) as first_txn:
        first = adder.add_task(first_txn.handle, request)

        def add_second() -> None:
            with transaction("sqlalchemy-session", database_url, engine) as txn:
                second.append(adder.add_task(txn.handle, request))
                txn.commit()

        thread = threading.Thread(target=add_second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting on the first transaction's uncommitted key
        first_txn.commit()
        thread.join(WAIT)
    assert second == [replace(first, result=AddTaskResultCode.ALREADY_EXISTS)]


def test_an_add_in_a_failed_transaction_raises_backend_error(
    database_url: str, engine: sa.Engine, schema: Any
) -> None:
    with transaction("psycopg", database_url, engine) as txn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            txn.execute("SELECT * FROM no_such_table", {})
        with pytest.raises(BackendError, match="current transaction is aborted"):
            add_task(txn.handle, AddTaskRequest(type="ship"), triggers="notify", settings=schema)


def test_async_and_foreign_handles_are_refused_with_validation_error(
    database_url: str, schema: Any
) -> None:
    request = AddTaskRequest(type="ship")
    with pytest.raises(ValidationError, match="synchronous connection"):
        add_task(create_async_engine(database_url), request, triggers="notify")
    with pytest.raises(ValidationError, match="not the Engine"):
        add_task(sa.create_engine(database_url), request, triggers="notify")
    with pytest.raises(ValidationError, match="got str"):
        add_tasks("postgresql://", [request], triggers="notify", settings=schema)
    with (
        psycopg.connect(conninfo(database_url)) as conn,
        pytest.raises(ValidationError, match="use add_task"),
    ):
        add_tasks(conn, request, triggers="notify", settings=schema)  # type: ignore[arg-type]


def test_a_large_payload_is_compressed_in_the_callers_thread(
    database_url: str, engine: sa.Engine, schema: Any
) -> None:
    data = b"payload " * 100_000  # 800 kB: the async codec would use a worker thread
    with transaction("sqlalchemy-connection", database_url, engine) as txn:
        add_task(
            txn.handle, AddTaskRequest(type="ship", data=data), triggers="poll", settings=schema
        )
        txn.commit()
    [(data_format, size)] = rows(
        database_url,
        f'SELECT data_format, length(data) FROM "{schema.schema}".{schema.prefix}task_data',
    )
    assert data_format == 1
    assert size < len(data) // 10

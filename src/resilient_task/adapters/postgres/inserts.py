"""Inserting a batch of tasks: one statement for rows and payloads, then the duplicates' owners.

A batch is first deduplicated in order (a later task with an id or ``(type, unique_key)``
already taken by an earlier one reports that one's outcome). The rest goes out in ONE
statement: ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` into ``tasks`` with the payloads
inserted in a data-modifying CTE for the rows that were actually created. Tasks not created
collided with a stored task; a second query finds its id. If that task vanished in between
(deleted by the cleaner), the insert is simply tried again.

Rows go in sorted by ``(type, unique_key, id)``, not in the caller's order. An insert that
meets a key another uncommitted insert has just written waits for that transaction; two
batches taking overlapping keys in opposite orders would wait for each other, and PostgreSQL
would abort one as a deadlock (about one concurrent ``add_tasks`` in five did). In one order
the later batch just waits. (A caller's own ``transaction=`` may already hold other rows; the
order of its statements is the caller's to keep.)

A large batch (``COPY_THRESHOLD`` tasks or more) takes another road to the same statement:
the rows are streamed with binary ``COPY`` into a per-session temporary staging table, and
one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING id`` moves them, payloads
included, from there (deleting them from the stage in the same statement, in the staged
order). Outcomes, deduplication and errors are the same; the client no longer dumps one
array per column element by element (psycopg's array dumper is Python), and the server
parses no arrays. On a pooled (autocommit) connection the COPY and the insert run in one
transaction, so nothing is committed half-way; in a caller's transaction they are part of
it. The staging table (``ON COMMIT DELETE ROWS``) is created once per connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.ext.asyncio import AsyncConnection

from resilient_task.adapters.postgres.codec import PayloadCodec, task_columns, task_values
from resilient_task.adapters.postgres.driver import fetch_scalars
from resilient_task.adapters.postgres.statements import (
    BATCH_INSERT_COLUMNS,
    INSERT_COLUMNS,
    NEW_TASK_CONSTANTS,
    Statements,
)
from resilient_task.domain.task import Task
from resilient_task.errors import BackendError
from resilient_task.ports.task_dao import InsertOutcome

__all__ = ["COPY_THRESHOLD", "insert_batch"]

COPY_THRESHOLD = 100
"""Batches of at least this many tasks are inserted through ``COPY`` (see the module doc)."""

_ATTEMPTS = 3
_Key = tuple[str, str]


def _key(task: Task) -> _Key | None:
    return None if task.unique_key is None else (task.type, task.unique_key)


def _lock_order(task: Task) -> tuple[str, str, int]:
    """The order rows are inserted in: the same in every batch, so batches never deadlock."""
    return task.type, task.unique_key or "", task.id.int


def _leaders(tasks: Sequence[Task]) -> list[int]:
    """For each task, the index of the first earlier task it duplicates (or its own)."""
    by_id: dict[UUID, int] = {}
    by_key: dict[_Key, int] = {}
    leaders = []
    for i, task in enumerate(tasks):
        key = _key(task)
        leader = by_id.get(task.id)
        if leader is None and key is not None:
            leader = by_key.get(key)
        if leader is None:
            leader = by_id[task.id] = i
            if key is not None:
                by_key[key] = i
        leaders.append(leader)
    return leaders


async def _insert(
    conn: AsyncConnection, sql: Statements, codec: PayloadCodec, tasks: list[Task]
) -> set[UUID]:
    if len(tasks) == 1:
        return await _insert_one(conn, sql, codec, tasks[0])
    if len(tasks) >= COPY_THRESHOLD:
        return await _insert_copy(conn, sql, codec, tasks)
    columns = task_columns(tasks, BATCH_INSERT_COLUMNS)
    params: dict[str, list[object]] = {f"t_{c}": v for c, v in columns.items()}
    payloads = [(t.id, *await codec.encode(t.data)) for t in tasks if t.data]
    params["d_task_id"] = [p[0] for p in payloads]
    params["d_data_format"] = [p[1] for p in payloads]
    params["d_data"] = [p[2] for p in payloads]
    return set(await fetch_scalars(conn, sql.insert, params))


async def _insert_one(
    conn: AsyncConnection, sql: Statements, codec: PayloadCodec, task: Task
) -> set[UUID]:
    params: dict[str, object] = {f"t_{c}": v for c, v in task_values(task).items()}
    params["d_data_format"], params["d_data"] = (
        await codec.encode(task.data) if task.data else (None, None)
    )
    return set(await fetch_scalars(conn, sql.insert_one, params))


_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]
_STAGE = "resilient_task_insert_stage"
_STAGED = (*(c for c in INSERT_COLUMNS if c not in NEW_TASK_CONSTANTS), "data_format", "data")
"""The staging table's columns after ``ord`` (the staged order): what varies per task."""
_STAGE_READY = "resilient_task.insert_stage"
"""Marks a pooled connection (its pool record's ``info``) whose session has the stage."""


class _CopyStatements:
    """The SQL of the COPY road for one :class:`Statements` (cached on it)."""

    def __init__(self, sql: Statements) -> None:
        t, d = sql.tables.tasks, sql.tables.task_data
        quote = _DIALECT.identifier_preparer.quote
        columns = {
            **{c: t.c[c] for c in INSERT_COLUMNS},
            "data_format": d.c.data_format,
            "data": d.c.data,
        }
        types = {name: _stage_type(columns[name]) for name in _STAGED}
        self.types = ["integer", *(kind.lower() for kind in types.values())]  # psycopg's names
        definitions = ", ".join(f"{quote(c)} {types[c]}" for c in _STAGED)
        self.create = f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (ord integer, " + (
            f"{definitions}) ON COMMIT DELETE ROWS"
        )
        self.copy = f"COPY {_STAGE} (ord, {', '.join(map(quote, _STAGED))}) FROM STDIN BINARY"
        tasks = _DIALECT.identifier_preparer.format_table(t)
        data = _DIALECT.identifier_preparer.format_table(d)
        values = [
            f"s.{quote(c)}" if c not in NEW_TASK_CONSTANTS else _literal(t.c[c], c)
            for c in INSERT_COLUMNS
        ]
        self.insert = (
            f"WITH s AS (DELETE FROM {_STAGE} RETURNING *), "
            f"inserted AS (INSERT INTO {tasks} ({', '.join(map(quote, INSERT_COLUMNS))}) "
            f"SELECT {', '.join(values)} FROM s ORDER BY s.ord "
            f"ON CONFLICT DO NOTHING RETURNING {quote('id')}), "
            f"inserted_data AS (INSERT INTO {data} (task_id, data_format, data) "
            f"SELECT s.id, s.data_format, s.data FROM s JOIN inserted ON inserted.id = s.id "
            f"WHERE s.data IS NOT NULL ORDER BY s.ord) "
            f"SELECT id FROM inserted"
        )


def _stage_type(column: sa.Column[Any]) -> str:
    """The staging column's type: the table's, except for integers.

    Integers are staged as ``numeric``: binary COPY would wrap a value too large for a
    ``smallint`` silently (psycopg packs the low bytes), where the insert must refuse it as
    the array statement does ("smallint out of range", a ValidationError). The assignment
    from ``numeric`` to the table's column checks the range.
    """
    if isinstance(column.type, sa.Integer):
        return "numeric"
    if isinstance(column.type, sa.LargeBinary):
        return "bytea"
    return str(column.type.compile(dialect=_DIALECT))


def _literal(column: sa.Column[Any], name: str) -> str:
    value = NEW_TASK_CONSTANTS[name]
    kind = column.type.compile(dialect=_DIALECT)
    return f"CAST(NULL AS {kind})" if value is None else f"CAST({int(value)} AS {kind})"


_copy_statements: dict[int, tuple[Statements, _CopyStatements]] = {}


def _copy_sql(sql: Statements) -> _CopyStatements:
    cached = _copy_statements.get(id(sql))
    if cached is None or cached[0] is not sql:
        cached = _copy_statements[id(sql)] = (sql, _CopyStatements(sql))
    return cached[1]


@contextlib.asynccontextmanager
async def _own_transaction(driver: Any) -> AsyncIterator[None]:
    """A transaction around the block on an autocommit connection; the caller's otherwise."""
    if not driver.autocommit:
        yield
        return
    async with driver.transaction():
        yield


async def _insert_copy(
    conn: AsyncConnection, sql: Statements, codec: PayloadCodec, tasks: list[Task]
) -> set[UUID]:
    """The batch through COPY into the session's stage, then one INSERT ... SELECT."""
    statements = _copy_sql(sql)
    columns = task_columns(tasks, _STAGED[:-2])
    rows: list[tuple[Any, ...]] = []
    for n, task in enumerate(tasks):
        fmt, data = await codec.encode(task.data) if task.data else (None, None)
        rows.append((n, *(columns[c][n] for c in _STAGED[:-2]), fmt, data))
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    if driver.autocommit and not raw.info.get(_STAGE_READY):
        # Created on its own, committed: the mark is true for the session's life.
        await driver.execute(statements.create)
        raw.info[_STAGE_READY] = True
    async with _own_transaction(driver), driver.cursor(binary=True) as cursor:
        if not raw.info.get(_STAGE_READY):
            # In the caller's transaction: gone again if it rolls back, so no mark.
            await cursor.execute(statements.create)
        async with cursor.copy(statements.copy) as copy:
            copy.set_types(statements.types)
            for row in rows:
                await copy.write_row(row)
        await cursor.execute(statements.insert)
        return {row[0] for row in await cursor.fetchall()}


async def _owners(
    conn: AsyncConnection, sql: Statements, tasks: list[Task]
) -> tuple[set[UUID], dict[_Key, UUID]]:
    keys = [k for k in map(_key, tasks) if k is not None]
    params = {
        "ids": [t.id for t in tasks],
        "k_type": [k[0] for k in keys],
        "k_key": [k[1] for k in keys],
    }
    ids: set[UUID] = set()
    owners: dict[_Key, UUID] = {}
    for task_id, type_, unique_key in (await conn.execute(sql.existing, params)).all():
        ids.add(task_id)
        if unique_key is not None:
            owners[(type_, unique_key)] = task_id
    return ids, owners


async def insert_batch(
    conn: AsyncConnection, sql: Statements, codec: PayloadCodec, tasks: Sequence[Task]
) -> list[InsertOutcome]:
    """Insert validated ``tasks`` on ``conn`` (not committed); outcomes in the same order."""
    leaders = _leaders(tasks)
    outcomes: dict[int, InsertOutcome] = {}
    pending = sorted(set(leaders), key=lambda i: _lock_order(tasks[i]))
    for _ in range(_ATTEMPTS):
        created = await _insert(conn, sql, codec, [tasks[i] for i in pending])
        for i in pending:
            if tasks[i].id in created:
                outcomes[i] = InsertOutcome(tasks[i].id, created=True)
        missing = [i for i in pending if i not in outcomes]
        if not missing:
            break
        ids, owners = await _owners(conn, sql, [tasks[i] for i in missing])
        for i in missing:
            task, key = tasks[i], _key(tasks[i])
            owner = task.id if task.id in ids else owners.get(key) if key else None
            if owner is not None:
                outcomes[i] = InsertOutcome(owner, created=False)
        pending = [i for i in missing if i not in outcomes]
        if not pending:
            break
    else:
        raise BackendError(
            f"{len(pending)} task(s) kept colliding with tasks deleted meanwhile; try again",
            transient=True,
        )
    return [
        outcomes[leader] if leader == i else InsertOutcome(outcomes[leader].task_id, False)
        for i, leader in enumerate(leaders)
    ]

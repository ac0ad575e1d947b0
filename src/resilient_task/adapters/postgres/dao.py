"""PostgresTaskDAO: the TaskDAO port on PostgreSQL through SQLAlchemy Core and psycopg 3."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Self
from uuid import UUID

import anyio
import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from resilient_task.adapters.postgres.changes import apply_batch
from resilient_task.adapters.postgres.codec import PayloadCodec, task_from_row
from resilient_task.adapters.postgres.driver import Connection, fetch_dicts
from resilient_task.adapters.postgres.engine import create_engine, liveness
from resilient_task.adapters.postgres.errors import translate, translate_errors
from resilient_task.adapters.postgres.hot import HotConnections
from resilient_task.adapters.postgres.inserts import insert_batch
from resilient_task.adapters.postgres.migrations import check_schema
from resilient_task.adapters.postgres.schema import PostgresSettings, Tables
from resilient_task.adapters.postgres.statements import Statements
from resilient_task.adapters.postgres.transactions import (
    AfterCommit,
    Callback,
    Lending,
    Transaction,
    connection_of,
    misuse_error,
)
from resilient_task.adapters.validation import (
    check_change,
    check_deadlines,
    check_filters,
    check_limit,
    check_new,
    check_time,
)
from resilient_task.domain.task import Task, TaskStatus, status_of
from resilient_task.ports.task_dao import (
    Grabbed,
    GrabLimit,
    GrabRequest,
    InsertOutcome,
    LimitedGrab,
    TaskChange,
)

__all__ = ["PostgresTaskDAO"]

log = logging.getLogger("resilient_task.postgres")

_BROKEN_CONNECTION = (psycopg.OperationalError, psycopg.InterfaceError)
_HOT_CONNECTIONS = 2
"""Connections an engine-owning DAO keeps checked out for its one-statement operations."""
_EXECUTOR_HEADROOM = 2
"""Pool connections the executor leaves to grabs and completions (``ports.task_dao``)."""


class PostgresTaskDAO:
    """The task store on PostgreSQL; see :mod:`resilient_task.ports.task_dao` for the contract.

    Build it on your engine (``PostgresTaskDAO(engine=...)``) or let it own one
    (:meth:`from_url`; then :meth:`close` disposes of it). The schema must have been created
    with ``resilient-task db upgrade`` (or :func:`~resilient_task.adapters.postgres.upgrade`);
    :meth:`open`, or else the first call, checks its version and raises
    :class:`~resilient_task.errors.SchemaVersionError` when it does not match.

    Transaction handles (``transaction=`` and :meth:`after_commit`) are SQLAlchemy
    ``AsyncConnection`` objects (what :meth:`transaction` yields, or your own) or
    ``AsyncSession`` objects; writes made through them are never committed by the DAO.

    Operations outside a caller's transaction run on ``hot_connections`` connections the DAO
    keeps checked out of the engine's pool, in autocommit (see
    :mod:`~resilient_task.adapters.postgres.hot`): counted in the pool's size, returned by
    :meth:`close`. By default 2 when the DAO owns its engine, else 0 (every operation checks
    a connection out of your engine, so a DAO you never close holds none).
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        settings: PostgresSettings | None = None,
        owns_engine: bool = False,
        hot_connections: int | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or PostgresSettings()
        self._owns_engine = owns_engine
        self._sql = Statements(
            Tables.build(self.settings), prepare=self.settings.prepared_statements
        )
        self._inserts = self._sql.inserts
        self._codec = PayloadCodec(
            threshold=self.settings.compression_threshold, level=self.settings.compression_level
        )
        self._after_commit = AfterCommit()
        self._lending = Lending(engine)
        self._checked = False
        self._hot = self._hot_connections(
            _HOT_CONNECTIONS if hot_connections is None and owns_engine else hot_connections or 0
        )
        options = self.settings.session_options()
        if options:
            event.listen(engine.sync_engine, "connect", _SessionOptions(options))

    def _hot_connections(self, wanted: int) -> HotConnections | None:
        """At most ``wanted``, leaving a bounded pool at least one for transactions."""
        total = self._pool_bound()
        size = wanted if total is None else min(wanted, total - 1)
        if size <= 0:
            return None
        ping_after_idle, recycle = liveness(self.engine)
        return HotConnections(
            self.engine, size=size, ping_after_idle=ping_after_idle, recycle=recycle
        )

    def notify_on_insert(self, channel: str | None) -> None:
        """NOTIFY ``channel`` of every due task an insert creates, in the insert itself.

        For :class:`~resilient_task.adapters.postgres.PostgresNotifyTriggerer` (the node sets
        it for ``NotifyTriggers``): the trigger then costs no round trip and no connection of
        its own, and is delivered when the insert commits -- the caller's COMMIT inside a
        caller's transaction, never after a rollback. The outcomes of those tasks say
        ``triggered``, so the task service sends no trigger of its own. ``None`` turns it off.
        """
        self._inserts = (
            self._sql.inserts if channel is None else self._sql.notifying_inserts(channel)
        )

    @classmethod
    def from_url(
        cls,
        url: str | sa.URL,
        *,
        settings: PostgresSettings | None = None,
        hot_connections: int | None = None,
        **pool: Any,
    ) -> PostgresTaskDAO:
        """A DAO owning a new engine (liveness-checked, bounded pool; see ``create_engine``)."""
        return cls(
            engine=create_engine(url, **pool),
            settings=settings,
            owns_engine=True,
            hot_connections=hot_connections,
        )

    async def open(self) -> None:
        """Check that the schema exists at the version this code needs (once)."""
        if not self._checked:
            await check_schema(self.engine, self.settings)
            self._checked = True

    async def close(self) -> None:
        """Return the hot connections to the pool; dispose of the engine if this DAO made it."""
        if self._hot is not None:
            await self._hot.close()
        if self._owns_engine:
            await self.engine.dispose()

    @property
    def max_connections(self) -> int | None:
        """Most connections the engine's pool lends at once; ``None`` when unbounded.

        The executor lets no more transactional tasks (each holding a connection while it
        runs) run at once than this leaves room for. It leaves two for grabs and completions
        (``ports.task_dao``): the hot connections, or as many of them; more hot connections
        than two lower this by the excess.
        """
        total = self._pool_bound()
        if total is None or self._hot is None:
            return total
        return total - max(0, self._hot.size - _EXECUTOR_HEADROOM)

    def _pool_bound(self) -> int | None:
        pool = self.engine.sync_engine.pool
        if not isinstance(pool, sa.pool.QueuePool):
            return None
        overflow = getattr(pool, "_max_overflow", -1)  # no public accessor
        if not isinstance(overflow, int) or overflow < 0:
            return None
        return pool.size() + overflow

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _connect(
        self, transaction: Transaction | None, action: str
    ) -> AsyncIterator[Connection]:
        """One operation's connection: the caller's (not committed), a hot one, or a pooled one.

        Each is a :class:`~.driver.Connection`. Without a caller's transaction the connection
        runs in autocommit: every operation is one statement, or a sequence of statements each
        of which is a complete compare-and-set batch, so each commits on its own. That saves
        the BEGIN and COMMIT round trips of an explicit transaction -- a third of the latency
        of a single add.

        The single choke point: every driver error inside becomes a resilient-task error.
        """
        if not self._checked:
            await self.open()
        with translate_errors(action):
            if transaction is not None:
                yield await connection_of(transaction)
            elif self._hot is not None:
                hot = await self._hot.take()
                try:
                    yield hot
                finally:
                    await self._hot.give_back(hot)
            else:
                async with self.engine.connect() as conn:
                    try:
                        yield await conn.execution_options(isolation_level="AUTOCOMMIT")
                    except _BROKEN_CONNECTION:
                        # SQLAlchemy invalidates a connection after its own disconnect errors.
                        # The driver path (``driver``) does it here; otherwise the pool finds
                        # out when its reset fails, and logs that failure with a traceback.
                        if not conn.invalidated:
                            await conn.invalidate()
                        raise

    async def _tasks(self, rows: Sequence[sa.Row[Any]], *, with_data: bool) -> list[Task]:
        return await self._from_mappings([row._mapping for row in rows], with_data=with_data)

    async def _from_mappings(
        self, rows: Sequence[Mapping[Any, Any]], *, with_data: bool
    ) -> list[Task]:
        tasks = []
        for m in rows:
            data = await self._codec.decode(m["data_format"], m["data"]) if with_data else b""
            tasks.append(task_from_row(m, data))
        return tasks

    async def insert_tasks(
        self, tasks: Sequence[Task], *, transaction: Transaction | None = None
    ) -> list[InsertOutcome]:
        """Insert new tasks in one statement, deduplicating by id and ``(type, unique_key)``."""
        for task in tasks:
            check_new(task)
        if not tasks:
            return []
        async with self._connect(transaction, "insert tasks") as conn:
            return await insert_batch(conn, self._sql, self._codec, tasks, self._inserts)

    async def get_task(self, task_id: UUID) -> Task | None:
        """The task with its payload, or None."""
        async with self._connect(None, "read a task") as conn:
            rows = (await conn.execute(self._sql.get_task, {"id": task_id})).all()
        found = await self._tasks(rows, with_data=True)
        return found[0] if found else None

    async def grab(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Task]:
        """Grab every request's task (SUBMITTED at that version) in one UPDATE."""
        return [grabbed.task for grabbed in await self.grab_queued(requests, now=now)]

    async def grab_queued(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Grabbed]:
        """:meth:`grab`, with when each task became SUBMITTED (read in the same UPDATE)."""
        check_time("now", now)
        for r in requests:
            check_time("deadline", r.deadline)
        if not requests:
            return []
        async with self._connect(None, "grab tasks") as conn:
            rows = await self._grab(conn, requests, now)
        tasks = await self._from_mappings(rows, with_data=True)
        grabbed = {t.id: Grabbed(t, row["queued_at"]) for t, row in zip(tasks, rows, strict=True)}
        return [grabbed.pop(r.task_id) for r in requests if r.task_id in grabbed]

    async def _grab(
        self, conn: Connection, requests: Sequence[GrabRequest], now: datetime
    ) -> list[dict[str, Any]]:
        if len(requests) == 1:  # an idle worker's grab: scalar parameters, no arrays to dump
            r = requests[0]
            values = {"g_id": r.task_id, "g_version": r.version, "g_node": r.node_id,
                      "g_deadline": r.deadline, "now": now}  # fmt: skip
            return await fetch_dicts(conn, self._sql.grab_one, values)
        return await fetch_dicts(conn, self._sql.grab, _grab_params(requests, now))

    async def grab_limited(
        self,
        requests: Sequence[GrabRequest],
        *,
        now: datetime,
        limit: GrabLimit,
        hold_until: datetime,
    ) -> LimitedGrab:
        """:meth:`grab_queued` within ``limit``, in one transaction holding the key's lock.

        BEGIN; an advisory transaction lock on the key (limited grabs of the key wait for each
        other); the SUBMITTED requests and the count of PROCESSING tasks of the key's types
        (read after the lock: every grab before it is committed); the grab of as many as
        there are free slots (the usual version-checked UPDATE); the others' pick-up deadline
        held off to ``hold_until``; COMMIT. Completions and recoveries only lower the count,
        so they need no lock.
        """
        check_time("now", now)
        check_time("hold_until", hold_until)
        for r in requests:
            check_time("deadline", r.deadline)
        if not requests:
            return LimitedGrab([], frozenset())
        tables = self._sql.tables.tasks
        lock = f"resilient_task:global:{tables.schema}.{tables.name}:{limit.key}"
        wanted = {(r.task_id, r.version): r for r in requests}
        await self.open()
        with translate_errors("grab tasks within a global limit"):
            async with self.engine.begin() as conn:
                await conn.execute(self._sql.global_lock, {"lock": lock})
                eligible = (
                    await conn.execute(
                        self._sql.grab_eligible,
                        {"ids": list({r.task_id for r in requests}), "types": sorted(limit.types)},
                    )
                ).all()
                free = limit.limit - (eligible[0].running if eligible else 0)
                chosen: list[GrabRequest] = []
                over: set[UUID] = set()
                for row in eligible:
                    request = wanted.get((row.id, row.version))
                    if request is None:
                        continue  # stale: another version
                    if len(chosen) < free:
                        chosen.append(request)
                    else:
                        over.add(row.id)
                rows = await self._grab(conn, chosen, now)
                if over:
                    await conn.execute(
                        self._sql.hold_submitted, {"ids": list(over), "until": hold_until}
                    )
        tasks = await self._from_mappings(rows, with_data=True)
        grabbed = {t.id: Grabbed(t, row["queued_at"]) for t, row in zip(tasks, rows, strict=True)}
        ordered = [grabbed.pop(r.task_id) for r in requests if r.task_id in grabbed]
        return LimitedGrab(ordered, frozenset(over))

    async def apply(
        self, changes: Sequence[TaskChange], *, transaction: Transaction | None = None
    ) -> list[bool]:
        """Compare-and-set every change in one UPDATE and one DELETE (see ``changes``)."""
        for change in changes:
            check_change(change)
        if not changes:
            return []
        async with self._connect(transaction, "write task changes") as conn:
            return await apply_batch(conn, self._sql, changes)

    async def claim_due(self, *, now: datetime, limit: int, deadline: datetime) -> list[Task]:
        """Submit up to ``limit`` due WAITING tasks, oldest first (``FOR UPDATE SKIP LOCKED``)."""
        check_time("now", now)
        check_time("deadline", deadline)
        if check_limit(limit) == 0:
            return []
        params = {"now": now, "limit": limit, "deadline": deadline}
        async with self._connect(None, "claim due tasks") as conn:
            rows = (await conn.execute(self._sql.claim_due, params)).all()
        return await self._tasks(rows, with_data=False)

    async def resubmit_overdue(
        self,
        *,
        now: datetime,
        limit: int,
        deadline: datetime,
        deadlines: Mapping[str, datetime] | None = None,
    ) -> list[Task]:
        """Re-submit up to ``limit`` overdue SUBMITTED tasks in one statement, oldest first."""
        check_time("now", now)
        check_time("deadline", deadline)
        per_type = check_deadlines(deadlines)
        if check_limit(limit) == 0:
            return []
        params = {
            "now": now,
            "limit": limit,
            "deadline": deadline,
            "types": list(per_type),
            "deadlines": list(per_type.values()),
        }
        async with self._connect(None, "re-submit overdue tasks") as conn:
            rows = (await conn.execute(self._sql.resubmit_overdue, params)).all()
        return await self._tasks(rows, with_data=False)

    async def find_overdue(self, status: TaskStatus, *, now: datetime, limit: int) -> list[Task]:
        """Up to ``limit`` tasks in ``status`` due before ``now``, earliest first, no payload."""
        check_time("now", now)
        if check_limit(limit) == 0:
            return []
        params = {"status": status_of(status).value, "now": now, "limit": limit}
        async with self._connect(None, "find overdue tasks") as conn:
            rows = (await conn.execute(self._sql.find_overdue, params)).all()
        return await self._tasks(rows, with_data=False)

    async def find_tasks(
        self, *, status: TaskStatus | None = None, type: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks by status and type, earliest ``next_event_time`` first, with payloads."""
        status = check_filters(status, type)
        if check_limit(limit) == 0:
            return []
        t = self._sql.tables.tasks
        query = self._sql.with_data
        if status is not None:
            query = query.where(t.c.status == status.value)
        if type is not None:
            query = query.where(t.c.type == type)
        query = query.order_by(t.c.next_event_time, t.c.priority, t.c.id).limit(limit)
        async with self._connect(None, "find tasks") as conn:
            rows = (await conn.execute(query)).all()
        return await self._tasks(rows, with_data=True)

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status (every status present, zero when none)."""
        async with self._connect(None, "count tasks") as conn:
            rows = (await conn.execute(self._sql.count_by_status)).all()
        counts = dict.fromkeys(TaskStatus, 0)
        counts.update({TaskStatus(status): int(n) for status, n in rows})
        return counts

    async def delete_finished(self, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` DONE/FAILED/CANCELLED tasks finished before ``before``."""
        check_time("before", before)
        if check_limit(limit) == 0:
            return 0
        params = {"before": before, "limit": limit}
        async with self._connect(None, "delete finished tasks") as conn:
            result = await conn.execute(self._sql.delete_finished, params)
        return int(result.rowcount)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """An ``AsyncConnection`` in a transaction: committed on normal exit, else rolled back.

        Errors of the block itself propagate unchanged; errors of BEGIN and COMMIT are
        translated. After-commit callbacks run once the connection is back in the pool.

        The block may not end the transaction itself: the connection's ``commit()``,
        ``rollback()`` and ``close()`` raise :class:`~resilient_task.errors.ConfigurationError`
        inside it, and, should the block swallow that, leaving it rolls everything back and
        raises the same error (see :class:`~.transactions.Lending`).
        """
        await self.open()
        with translate_errors("begin a transaction"):
            conn = await self.engine.connect()
        try:
            with self._after_commit.own(conn) as callbacks:
                with translate_errors("begin a transaction"):
                    await conn.begin()
                try:
                    with self._lending.lend(conn) as misuse:
                        yield conn
                except BaseException as exc:
                    with anyio.CancelScope(shield=True):
                        await _quietly(conn.rollback(), "roll back")
                    if misuse and isinstance(exc, Exception):  # the misuse, not its sequel
                        raise misuse_error(misuse[0]) from exc
                    raise
                if misuse:  # the commit would send nothing: the block ended the transaction
                    with anyio.CancelScope(shield=True):
                        await _quietly(conn.rollback(), "roll back")
                    raise misuse_error(misuse[0])
                with translate_errors("commit a transaction"):
                    await conn.commit()
        finally:
            with anyio.CancelScope(shield=True):
                await _quietly(conn.close(), "release a connection")
        for callback in callbacks:
            await callback()

    def after_commit(self, transaction: Transaction, callback: Callback) -> None:
        """Run ``callback`` once ``transaction`` committed; never after a rollback.

        ``transaction`` is a handle from :meth:`transaction`, or the caller's own
        ``AsyncConnection`` or ``AsyncSession`` (see
        :mod:`resilient_task.adapters.postgres.transactions` for how each is tracked).
        """
        self._after_commit.register(transaction, callback)


class _SessionOptions:
    """A ``connect`` listener: the settings of ``PostgresSettings.session_options()``."""

    def __init__(self, options: dict[str, str]) -> None:
        names = ", ".join(f"set_config('{name}', %s, false)" for name in options)
        self._sql = f"SELECT {names}"
        self._values = tuple(options.values())

    def __call__(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self._sql, self._values)
        finally:
            cursor.close()
        dbapi_connection.commit()  # session-level settings made in a transaction need it


async def _quietly(operation: Awaitable[None], action: str) -> None:
    """Await a clean-up step whose failure must not hide the outcome being reported.

    A failed rollback or release leaves nothing to do: the server rolls back a broken
    connection's transaction itself and the pool discards the connection.
    """
    try:
        await operation
    except Exception as exc:
        log.warning("PostgreSQL: could not %s: %s", action, translate(exc, action))


def _grab_params(requests: Sequence[GrabRequest], now: datetime) -> dict[str, Any]:
    return {
        "g_id": [r.task_id for r in requests],
        "g_version": [r.version for r in requests],
        "g_node": [r.node_id for r in requests],
        "g_deadline": [r.deadline for r in requests],
        "now": now,
    }

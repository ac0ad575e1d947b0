"""The operators' read port on PostgreSQL: SQLAlchemy Core over the task store's tables.

Every listing is one index range per status: ``WHERE status = :s [AND type IN (...)]
[AND next_event_time < :due_before] ORDER BY next_event_time LIMIT :limit`` reads the
``(status, next_event_time)`` index in order and stops after ``limit`` matches; the ranges
are merged with ``UNION ALL`` and cut to ``limit`` again. (An ``IN`` list of statuses would
make PostgreSQL collect every match and sort them.) The oldest overdue task is the first
entry of one such range. Counts are ``GROUP BY`` scans of the table.

Listings never read ``task_data``, nor ``last_traceback`` (up to 8 KiB a task): payloads and
tracebacks stay where they are unless one task is asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from resilient_task.adapters.postgres.codec import task_from_row
from resilient_task.adapters.postgres.dao import PostgresTaskDAO
from resilient_task.adapters.postgres.errors import translate_errors
from resilient_task.adapters.postgres.schema import Tables
from resilient_task.domain.requests import require_time
from resilient_task.domain.task import Task, TaskStatus, status_of
from resilient_task.ports.task_queries import TaskQuery

__all__ = ["PostgresTaskQueries"]

_BROKEN_CONNECTION = (psycopg.OperationalError, psycopg.InterfaceError)


class PostgresTaskQueries:
    """:class:`~resilient_task.ports.task_queries.TaskQueries` on a PostgreSQL task store.

    Args:
        dao: the store whose engine and tables are read; its schema check runs first.
    """

    def __init__(self, *, dao: PostgresTaskDAO) -> None:
        self._dao = dao
        self._tasks = Tables.build(dao.settings).tasks
        self._listed = [c for c in self._tasks.c if c.name != "last_traceback"]

    @asynccontextmanager
    async def _connect(self, action: str) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; every driver error inside becomes a resilient-task error."""
        await self._dao.open()
        with translate_errors(action):
            async with self._dao.engine.connect() as conn:
                try:
                    yield conn
                except _BROKEN_CONNECTION:
                    if not conn.invalidated:
                        await conn.invalidate()
                    raise

    def _range(self, status: TaskStatus, query: TaskQuery) -> sa.Select[Any]:
        t = self._tasks
        select = sa.select(*self._listed).where(t.c.status == status.value)
        if query.types:
            select = select.where(t.c.type.in_(query.types))
        if query.due_before is not None:
            select = select.where(t.c.next_event_time < query.due_before)
        return select.order_by(t.c.next_event_time, t.c.priority, t.c.id).limit(query.limit)

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        """Tasks matching ``query``, earliest first, without payload or traceback."""
        if query.limit == 0:
            return []
        ranges = [self._range(status, query) for status in query.listed_statuses]
        if len(ranges) == 1:
            statement: sa.Select[Any] = ranges[0]
        else:
            merged = sa.union_all(*ranges).subquery("listed")
            statement = (
                sa.select(merged)
                .order_by(merged.c.next_event_time, merged.c.priority, merged.c.id)
                .limit(query.limit)
            )
        async with self._connect("list tasks") as conn:
            rows = (await conn.execute(statement)).all()
        return [task_from_row(row._mapping) for row in rows]

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status, every status present."""
        t = self._tasks
        statement = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        async with self._connect("count tasks") as conn:
            rows = (await conn.execute(statement)).all()
        counts = dict.fromkeys(TaskStatus, 0)
        counts.update({TaskStatus(status): int(n) for status, n in rows})
        return counts

    async def count_by_type(self) -> dict[tuple[TaskStatus, str], int]:
        """How many tasks of each type are in each status (only pairs that exist)."""
        t = self._tasks
        statement = sa.select(t.c.status, t.c.type, sa.func.count()).group_by(t.c.status, t.c.type)
        async with self._connect("count tasks by type") as conn:
            rows = (await conn.execute(statement)).all()
        return {(TaskStatus(row[0]), row[1]): int(row[2]) for row in rows}

    async def oldest_overdue(self, status: TaskStatus, *, now: datetime) -> datetime | None:
        """The earliest ``next_event_time`` before ``now`` in ``status``, or None."""
        status = status_of(status)
        require_time("now", now)
        t = self._tasks
        statement = (
            sa.select(t.c.next_event_time)
            .where(t.c.status == status.value, t.c.next_event_time < now)
            .order_by(t.c.next_event_time)
            .limit(1)
        )
        async with self._connect("find the oldest overdue task") as conn:
            found = await conn.scalar(statement)
        return None if found is None else found.astimezone(UTC)

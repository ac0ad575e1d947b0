"""The dashboard's bounded reads on PostgreSQL (SQLAlchemy Core; see :mod:`.stats`).

Every statement reads ranges of the ``(status, next_event_time)`` index with a ``LIMIT``:

- status counts: one ``count(*)`` over ``LIMIT cap + 1`` rows per status, in one statement;
  a status past the cap is estimated from the planner's statistics (``pg_class.reltuples``
  times the status's frequency in ``pg_stats``, as fresh as the last (auto)ANALYZE);
- type counts: per status, the types of the first ``cap`` tasks by ``next_event_time``;
- done per minute: per ten-second slot of the DONE range (one ``LATERAL`` over
  ``generate_series``), the count and the last finish time of its first ``cap`` tasks (exact
  below the cap, estimated from their rate at it);
- recent nodes: the newest ``cap`` PROCESSING tasks and the newest ``cap`` DONE tasks.

So the overview costs the same on a thousand tasks and on millions. Payloads are never read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from resilient_task.adapters.postgres.dao import PostgresTaskDAO
from resilient_task.adapters.postgres.errors import translate_errors
from resilient_task.adapters.postgres.schema import Tables
from resilient_task.dashboard.stats import (
    SLOT,
    MinuteCount,
    NodeSeen,
    StatusCount,
    TypeCounts,
    minute_totals,
    slot_count,
    slot_starts,
)
from resilient_task.domain.task import TaskStatus

__all__ = ["PostgresDashboardStats"]

_BROKEN_CONNECTION = (psycopg.OperationalError, psycopg.InterfaceError)

_PG_STATS = sa.table(
    "pg_stats",
    sa.column("schemaname", sa.Text),
    sa.column("tablename", sa.Text),
    sa.column("attname", sa.Text),
    sa.column("most_common_vals", sa.Text),
    sa.column("most_common_freqs", ARRAY(sa.Float)),
    schema="pg_catalog",
)
_PG_CLASS = sa.table(
    "pg_class",
    sa.column("oid", sa.Integer),
    sa.column("reltuples", sa.Float),
    schema="pg_catalog",
)


class PostgresDashboardStats:
    """:class:`~resilient_task.dashboard.stats.DashboardStats` on a PostgreSQL task store.

    Args:
        dao: the store whose engine and tables are read; its schema check runs first.
    """

    def __init__(self, *, dao: PostgresTaskDAO) -> None:
        self._dao = dao
        self._tasks = Tables.build(dao.settings).tasks
        self._built: dict[tuple[Any, ...], Any] = {}

    def _statement(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The statement for ``key``, built once: building one costs more than running it."""
        found = self._built.get(key)
        if found is None:
            found = self._built[key] = build()
        return found

    @asynccontextmanager
    async def _connect(self, action: str) -> AsyncIterator[AsyncConnection]:
        await self._dao.open()
        with translate_errors(action):
            async with self._dao.engine.connect() as conn:
                try:
                    yield conn
                except _BROKEN_CONNECTION:
                    if not conn.invalidated:
                        await conn.invalidate()
                    raise

    async def status_counts(self, *, cap: int) -> dict[TaskStatus, StatusCount]:
        """Exact counts up to ``cap``; above it the planner's estimate (at least ``cap + 1``)."""
        t = self._tasks

        def build() -> sa.Select[Any]:
            columns = []
            for status in TaskStatus:
                capped = sa.select(sa.literal(1)).where(t.c.status == status.value)
                inner = capped.limit(cap + 1).subquery()
                columns.append(sa.select(sa.func.count()).select_from(inner).scalar_subquery())
            return sa.select(*columns)

        statement = self._statement(("status", cap), build)
        async with self._connect("count tasks for the dashboard") as conn:
            row = (await conn.execute(statement)).one()
            exact = dict(zip(TaskStatus, (int(n) for n in row), strict=True))
            over = [status for status, n in exact.items() if n > cap]
            estimates = await self._estimates(conn) if over else {}
        counts = {status: StatusCount(n) for status, n in exact.items() if n <= cap}
        for status in over:
            estimate = estimates.get(status)
            if estimate is None:
                counts[status] = StatusCount(cap + 1, exact=False, estimated=False)
            else:
                counts[status] = StatusCount(max(estimate, cap + 1), exact=False, estimated=True)
        return {status: counts[status] for status in TaskStatus}

    async def _estimates(self, conn: AsyncConnection) -> dict[TaskStatus, int]:
        """Tasks per status from the statistics of the last ANALYZE (empty when there are none)."""
        t = self._tasks
        settings = self._dao.settings

        def build() -> sa.Select[Any]:
            qualified = f"{settings.schema}.{t.name}"
            reltuples = (
                sa.select(_PG_CLASS.c.reltuples)
                .where(_PG_CLASS.c.oid == sa.cast(sa.func.to_regclass(qualified), sa.Integer))
                .scalar_subquery()
            )
            return sa.select(
                sa.cast(_PG_STATS.c.most_common_vals, sa.Text).label("vals"),
                _PG_STATS.c.most_common_freqs,
                reltuples.label("reltuples"),
            ).where(
                _PG_STATS.c.schemaname == settings.schema,
                _PG_STATS.c.tablename == t.name,
                _PG_STATS.c.attname == "status",
            )

        row = (await conn.execute(self._statement(("estimates",), build))).first()
        if row is None or row.vals is None or row.reltuples is None or row.reltuples < 0:
            return {}
        names = row.vals.strip("{}").split(",") if row.vals.strip("{}") else []
        freqs = list(row.most_common_freqs or [])
        found: dict[TaskStatus, int] = {}
        for name, freq in zip(names, freqs, strict=False):
            if name.strip('"') in TaskStatus.__members__:
                found[TaskStatus[name.strip('"')]] = round(float(row.reltuples) * float(freq))
        return found

    async def type_counts(self, *, cap: int) -> TypeCounts:
        """Tasks per (status, type) among the first ``cap`` of each status."""
        t = self._tasks

        def build() -> sa.Select[Any]:
            ranges = []
            order = (t.c.next_event_time, t.c.id)
            for status in TaskStatus:
                rank = sa.func.row_number().over(order_by=order).label("rank")
                ranges.append(
                    sa.select(t.c.status, t.c.type, rank)
                    .where(t.c.status == status.value)
                    .order_by(*order)
                    .limit(cap + 1)
                )
            read = sa.union_all(*ranges).subquery("read")
            return sa.select(
                read.c.status,
                read.c.type,
                sa.func.count().filter(read.c.rank <= cap),
                sa.func.max(read.c.rank),
            ).group_by(read.c.status, read.c.type)

        statement = self._statement(("types", cap), build)
        async with self._connect("count tasks by type for the dashboard") as conn:
            rows = (await conn.execute(statement)).all()
        counts: dict[tuple[TaskStatus, str], int] = {}
        sampled: set[TaskStatus] = set()
        for status, task_type, n, top in rows:
            if n:
                counts[TaskStatus(status), task_type] = int(n)
            if top > cap:
                sampled.add(TaskStatus(status))
        return TypeCounts(counts, frozenset(sampled))

    async def done_per_minute(self, *, now: datetime, minutes: int, cap: int) -> list[MinuteCount]:
        """DONE tasks per minute over the last ``minutes`` minutes (exact up to ``cap``).

        One small statement whatever ``minutes``: ``generate_series`` of slot numbers, and for
        each (``LATERAL``) the count and last finish time of its first ``cap`` tasks.
        """
        t = self._tasks
        starts = slot_starts(now, minutes)

        def build() -> sa.Select[Any]:
            last = sa.bindparam("last_slot", type_=sa.Integer)
            minute = (
                sa.func.generate_series(0, last).table_valued("i").render_derived(name="minute")
            )
            base = sa.bindparam("base", type_=sa.DateTime(timezone=True))
            seconds = int(SLOT.total_seconds())
            begin = base + sa.func.make_interval(0, 0, 0, 0, 0, 0, minute.c.i * seconds)
            end = base + sa.func.make_interval(0, 0, 0, 0, 0, 0, (minute.c.i + 1) * seconds)
            first = (
                sa.select(t.c.next_event_time)
                .where(
                    t.c.status == TaskStatus.DONE.value,
                    t.c.next_event_time >= begin,
                    t.c.next_event_time < end,
                )
                .order_by(t.c.next_event_time)
                .limit(cap)
                .lateral("first")
            )
            return (
                sa.select(
                    minute.c.i,
                    sa.func.count(first.c.next_event_time).label("read"),
                    sa.func.max(first.c.next_event_time).label("last"),
                )
                .select_from(minute.outerjoin(first, sa.true()))
                .group_by(minute.c.i)
            )

        statement = self._statement(("done", cap), build)
        params = {"last_slot": len(starts) - 1, "base": starts[0] if starts else now}
        async with self._connect("count finished tasks for the dashboard") as conn:
            rows = {row.i: row for row in (await conn.execute(statement, params)).all()}
        return minute_totals(
            [
                slot_count(
                    int(rows[i].read),
                    cap,
                    start,
                    None if rows[i].last is None else rows[i].last.astimezone(UTC),
                )
                for i, start in enumerate(starts)
            ]
        )

    async def recent_nodes(self, *, now: datetime, within: timedelta, cap: int) -> list[NodeSeen]:
        """Nodes of the newest ``cap`` PROCESSING tasks and ``cap`` tasks DONE recently."""
        t = self._tasks
        node = t.c.processing_node

        def newest(status: TaskStatus, processing: bool, *conditions: Any) -> sa.Select[Any]:
            return (
                sa.select(node.label("node"), t.c.updated_at, sa.literal(processing).label("p"))
                .where(t.c.status == status.value, node.is_not(None), *conditions)
                .order_by(t.c.next_event_time.desc())
                .limit(cap)
            )

        def build() -> sa.Select[Any]:
            since = sa.bindparam("since", type_=sa.DateTime(timezone=True))
            until = sa.bindparam("until", type_=sa.DateTime(timezone=True))
            read = sa.union_all(
                newest(TaskStatus.PROCESSING, True),
                newest(
                    TaskStatus.DONE,
                    False,
                    t.c.next_event_time >= since,
                    t.c.next_event_time <= until,
                ),
            ).subquery("read")
            return (
                sa.select(
                    read.c.node,
                    sa.func.max(read.c.updated_at),
                    sa.func.count().filter(read.c.p),
                    sa.func.count().filter(sa.not_(read.c.p)),
                )
                .group_by(read.c.node)
                .order_by(read.c.node)
            )

        statement = self._statement(("nodes", cap), build)
        params = {"since": now - within, "until": now}
        async with self._connect("find recent nodes for the dashboard") as conn:
            rows = (await conn.execute(statement, params)).all()
        return [
            NodeSeen(name, last.astimezone(UTC), int(busy), int(done))
            for name, last, busy, done in rows
        ]

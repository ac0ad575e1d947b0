"""PostgresTaskQueries passes the TaskQueries contract, and its reads use the poll index."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_task.adapters.memory import InMemoryTaskDAO
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.adapters.postgres import PostgresTaskDAO, create_engine
from resilient_task.adapters.postgres.queries import PostgresTaskQueries
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from resilient_task.ports.task_queries import TaskQueries, TaskQuery
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.testing.task_dao_contract import NOW, make_task
from resilient_task.testing.task_queries_contract import TaskQueriesContract
from tests.integration.postgres_env import isolated_schema
from tests.unit.hostile import FUZZ_EXAMPLES

pytestmark = pytest.mark.integration

_db_examples = settings(
    max_examples=max(50, FUZZ_EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class TestPostgresTaskQueriesContract(TaskQueriesContract):
    @pytest.fixture
    async def stores(self, database_url: str) -> AsyncIterator[tuple[AnyTaskDAO, TaskQueries]]:
        async with isolated_schema(database_url) as settings:
            engine = create_engine(database_url, pool_size=2, max_overflow=2)
            async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
                yield dao, PostgresTaskQueries(dao=dao)


async def _plans(
    dao: PostgresTaskDAO, read: Callable[[], Awaitable[object]]
) -> list[dict[str, Any]]:
    """The plans PostgreSQL chooses for every statement ``read`` executes."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("EXPLAIN", "SELECT VERSION")):
            captured.append((statement, params))

    sa.event.listen(dao.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await read()
    finally:
        sa.event.remove(dao.engine.sync_engine, "before_cursor_execute", capture)
    plans = []
    async with dao.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        for statement, params in captured:
            if "schema_version" in statement:
                continue
            await cursor.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            [[plan]] = await cursor.fetchall()
            plans.append(plan[0]["Plan"])
    return plans


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


@pytest.fixture
async def big_store(database_url: str) -> AsyncIterator[PostgresTaskDAO]:
    """20,000 tasks spread over every status, analysed."""
    async with isolated_schema(database_url) as settings:
        engine = create_engine(database_url, pool_size=2, max_overflow=2)
        async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
            statuses = list(TaskStatus)
            for batch in range(20):
                await dao.insert_tasks(
                    [
                        make_task(next_event_time=NOW + timedelta(seconds=batch * 1000 + i))
                        for i in range(1000)
                    ]
                )
            table = f'"{settings.schema}"."{settings.prefix}tasks"'
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        f"UPDATE {table} SET status = (:statuses)[1 + abs(hashtext(id::text)) % 7]"
                    ),
                    {"statuses": [s.value for s in statuses]},
                )
                await conn.execute(sa.text(f"ANALYZE {table}"))
            yield dao


@pytest.mark.anyio
async def test_a_listing_reads_one_poll_index_range_per_status(
    big_store: PostgresTaskDAO,
) -> None:
    queries = PostgresTaskQueries(dao=big_store)

    [one] = await _plans(
        big_store, lambda: queries.list_tasks(TaskQuery(statuses=(TaskStatus.ERROR,), limit=50))
    )
    [every] = await _plans(big_store, lambda: queries.list_tasks(TaskQuery(limit=50)))

    # An incremental sort only orders ties of next_event_time by (priority, id): it reads the
    # index in order and stops at the limit. A full "Sort" would read every match first.
    assert {n["Node Type"] for n in _nodes(one)} <= {"Limit", "Index Scan", "Incremental Sort"}
    assert all(n["Index Name"].endswith("tasks_poll_idx") for n in _nodes(one) if "Index Name" in n)
    scans = [n for n in _nodes(every) if n["Node Type"] == "Index Scan"]
    assert len(scans) == len(TaskStatus)
    assert all(n["Index Name"].endswith("tasks_poll_idx") for n in scans)
    assert not {"Seq Scan", "Bitmap Heap Scan"} & {n["Node Type"] for n in _nodes(every)}


@pytest.mark.anyio
async def test_the_oldest_overdue_task_is_one_poll_index_entry(
    big_store: PostgresTaskDAO,
) -> None:
    queries = PostgresTaskQueries(dao=big_store)

    [plan] = await _plans(
        big_store,
        lambda: queries.oldest_overdue(TaskStatus.SUBMITTED, now=NOW + timedelta(days=1)),
    )

    types = {n["Node Type"] for n in _nodes(plan)}
    assert types <= {"Limit", "Index Scan", "Index Only Scan"}
    assert any(n.get("Index Name", "").endswith("tasks_poll_idx") for n in _nodes(plan))


# -- any query, compared with the documented rule ---------------------------------------------

_TYPES = ("charge", "refund", "payout")
_TIMES = [NOW + timedelta(seconds=s) for s in (-300, -60, -60, -1, 0, 0, 0, 1, 60, 300)]


async def _seed_everywhere(dao: PostgresTaskDAO, rng: random.Random, count: int) -> list[Task]:
    """``count`` tasks in random statuses, types, priorities and (often equal) times."""
    new = [
        make_task(
            type=rng.choice(_TYPES),
            status=TaskStatus.SUBMITTED,
            priority=rng.randint(0, 9),
            next_event_time=NOW,
        )
        for _ in range(count)
    ]
    await dao.insert_tasks(new)
    grabbed = await dao.grab([GrabRequest(t.id, 0, "n", NOW) for t in new], now=NOW)
    final: list[Task] = []
    changes: list[TaskChange] = []
    for task in grabbed:
        at = rng.choice(_TIMES)
        status = rng.choice(list(TaskStatus))
        moved = {
            TaskStatus.WAITING: lambda t, at=at: t.schedule(now=at, run_at=at),
            TaskStatus.SUBMITTED: lambda t, at=at: t.recover(now=at, deadline=at),
            TaskStatus.PROCESSING: lambda t, at=at: t.recover(now=at, deadline=at).grab(
                node_id="n", now=at, deadline=at
            ),
            TaskStatus.DONE: lambda t, at=at: t.complete(now=at),
            TaskStatus.ERROR: lambda t, at=at: t.mark_error(now=at, reason="x"),
            TaskStatus.FAILED: lambda t, at=at: t.mark_failed(now=at),
            TaskStatus.CANCELLED: lambda t, at=at: t.schedule(now=at, run_at=at).cancel(now=at),
        }[status](task)
        changes.append(TaskChange(moved, task.version))
        final.append(replace(moved, data=b""))
    assert all(await dao.apply(changes))
    return final


@pytest.fixture
async def seeded(database_url: str) -> AsyncIterator[tuple[PostgresTaskQueries, list[Task]]]:
    async with isolated_schema(database_url) as settings:
        engine = create_engine(database_url, pool_size=2, max_overflow=0)
        async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
            tasks = await _seed_everywhere(dao, random.Random(20261130), 300)
            yield PostgresTaskQueries(dao=dao), tasks


queries_strategy = st.builds(
    TaskQuery,
    statuses=st.lists(st.sampled_from(list(TaskStatus)), max_size=4).map(tuple),
    types=st.lists(st.sampled_from([*_TYPES, "absent"]), max_size=3).map(tuple),
    due_before=st.none() | st.sampled_from(_TIMES),
    limit=st.integers(min_value=0, max_value=320),
)


@pytest.mark.anyio
@_db_examples
@given(query=queries_strategy)
async def test_any_listing_is_the_documented_filter_and_order(
    seeded: tuple[PostgresTaskQueries, list[Task]], query: TaskQuery
) -> None:
    queries, tasks = seeded

    listed = await queries.list_tasks(query)

    expected = sorted(
        (
            t
            for t in tasks
            if (not query.statuses or t.status in query.statuses)
            and (not query.types or t.type in query.types)
            and (query.due_before is None or t.next_event_time < query.due_before)
        ),
        key=lambda t: (t.next_event_time, t.priority, t.id.int),
    )[: query.limit]
    # Ids first: a readable difference (a diff of 300 whole tasks takes pytest minutes).
    assert [t.id for t in listed] == [t.id for t in expected]
    same_fields = listed == expected
    assert same_fields
    memory = InMemoryTaskQueries(dao=InMemoryTaskDAO(tasks=tasks))
    same_in_memory = await memory.list_tasks(query) == expected
    assert same_in_memory

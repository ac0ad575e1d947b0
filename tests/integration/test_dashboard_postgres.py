"""The dashboard's route tests on PostgreSQL, and its bounded reads against exact answers.

The same :class:`DashboardRoutes` as on the in-memory store, each test in a fresh schema.
Everything async (schema, DAO, app) runs on the TestClient's own event loop (its portal),
so pooled connections never cross event loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.adapters.postgres import PostgresTaskDAO
from resilient_task.adapters.postgres.queries import PostgresTaskQueries
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.cli_tasks import build_operator
from resilient_task.dashboard import create_app
from resilient_task.dashboard.postgres_stats import PostgresDashboardStats
from resilient_task.dashboard.stats import InMemoryDashboardStats, StatusCount
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ports.task_queries import TaskQuery
from tests.integration.postgres_env import isolated_schema
from tests.unit.test_dashboard_routes import (
    SECRET,
    Board,
    BoardFactory,
    DashboardRoutes,
    ReadOnlyRoutes,
    TokenRoutes,
)

pytestmark = pytest.mark.integration


def postgres_board(url: str, **options: Any) -> AbstractContextManager[Board]:
    @contextmanager
    def opened() -> Iterator[Board]:
        with TestClient(Starlette()) as bootstrap:
            portal = bootstrap.portal
            assert portal is not None
            with portal.wrap_async_context_manager(isolated_schema(url)) as settings:
                dao = PostgresTaskDAO.from_url(url, settings=settings, pool_size=4)
                try:
                    operator = build_operator(
                        dao=dao, queries=PostgresTaskQueries(dao=dao), clock=SystemClock()
                    )
                    app = create_app(
                        operator=operator,
                        stats=PostgresDashboardStats(dao=dao),
                        secret=SECRET,
                        **options,
                    )
                    client = TestClient(app)
                    client.portal = portal  # every request on the loop that owns the pool
                    yield Board(client, dao, lambda fn, *args: portal.call(fn, *args))
                finally:
                    portal.call(dao.close)

    return opened()


@pytest.fixture
def make_board(database_url: str) -> BoardFactory:
    return lambda **options: postgres_board(database_url, **options)


class TestDashboardPostgres(DashboardRoutes):
    pass


class TestReadOnlyPostgres(ReadOnlyRoutes):
    pass


class TestTokenPostgres(TokenRoutes):
    pass


class TestBoundedReads:
    """PostgresDashboardStats agrees with the in-memory (exact) answers below the caps, and
    says when it estimates or samples above them."""

    @pytest.fixture
    def board(self, make_board: BoardFactory) -> Iterator[Board]:
        with make_board() as board:
            yield board

    def test_counts_types_chart_and_nodes_match_an_exact_count(self, board: Board) -> None:
        now = datetime.now(UTC)
        for i in range(7):
            board.seed(
                status=TaskStatus.DONE,
                type=f"t{i % 3}",
                node=f"n{i % 2}",
                at=now - timedelta(minutes=i * 9, seconds=5),
            )
        for i in range(4):
            board.seed(status=TaskStatus.ERROR, type=f"t{i % 2}")
        board.seed(status=TaskStatus.WAITING)
        board.seed(status=TaskStatus.PROCESSING, node="n9")
        tasks = board.call(_all_tasks, board.dao)
        exact = InMemoryDashboardStats(dao=InMemoryTaskDAO(tasks=tasks))
        ours = PostgresDashboardStats(dao=board.dao)  # type: ignore[arg-type]
        for cap in (2, 100):
            got = board.call(lambda c=cap: ours.status_counts(cap=c))
            want = board.call(lambda c=cap: exact.status_counts(cap=c))
            for status in TaskStatus:
                if want[status].count <= cap:
                    assert got[status] == want[status]
                else:
                    assert not got[status].exact
                    assert got[status].count > cap
            types = board.call(lambda c=cap: ours.type_counts(cap=c))
            assert types == board.call(lambda c=cap: exact.type_counts(cap=c))
        for cap in (1, 100):
            assert board.call(
                lambda c=cap: ours.done_per_minute(now=now, minutes=60, cap=c)
            ) == board.call(lambda c=cap: exact.done_per_minute(now=now, minutes=60, cap=c))
        board.call(_analyze, board.dao)
        estimated = board.call(lambda: ours.status_counts(cap=2))[TaskStatus.DONE]
        assert estimated == StatusCount(7, exact=False, estimated=True)
        later, window = now + timedelta(seconds=1), timedelta(minutes=20)
        assert board.call(
            lambda: ours.recent_nodes(now=later, within=window, cap=100)
        ) == board.call(lambda: exact.recent_nodes(now=later, within=window, cap=100))


async def _all_tasks(dao: PostgresTaskDAO) -> list[Task]:
    queries = PostgresTaskQueries(dao=dao)
    return await queries.list_tasks(TaskQuery(limit=10_000))


async def _analyze(dao: PostgresTaskDAO) -> None:
    """Refresh the planner's statistics (what autovacuum does on a busy table)."""
    table = f'"{dao.settings.schema}"."{dao.settings.prefix}tasks"'
    async with dao.engine.begin() as conn:
        await conn.execute(sa.text(f"ANALYZE {table}"))

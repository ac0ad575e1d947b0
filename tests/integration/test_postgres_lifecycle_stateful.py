"""The lifecycle state machine of ``tests/unit/test_lifecycle_stateful.py`` on PostgreSQL.

Same rules, model and invariants; each example gets a fresh migrated schema. Kept small
(30 examples of at most 25 steps) so it runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from resilient_task.adapters.postgres import PostgresTaskDAO, create_engine
from resilient_task.adapters.postgres.queries import PostgresTaskQueries
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.service.stores import AnyTaskDAO
from tests.integration.postgres_env import isolated_schema
from tests.unit.test_lifecycle_stateful import LifecycleMachine

pytestmark = pytest.mark.integration


@asynccontextmanager
async def postgres_stores(url: str) -> AsyncIterator[tuple[AnyTaskDAO, TaskQueries]]:
    async with isolated_schema(url) as schema:
        engine = create_engine(url, pool_size=2, max_overflow=2)
        async with PostgresTaskDAO(engine=engine, settings=schema, owns_engine=True) as dao:
            yield dao, PostgresTaskQueries(dao=dao)


def test_the_postgres_store_follows_the_lifecycle_model(database_url: str) -> None:
    class PostgresLifecycleMachine(LifecycleMachine):
        def open_stores(self) -> AbstractAsyncContextManager[tuple[AnyTaskDAO, TaskQueries]]:
            return postgres_stores(database_url)

    run_state_machine_as_test(
        PostgresLifecycleMachine,
        settings=settings(max_examples=30, stateful_step_count=25, deadline=None),
    )

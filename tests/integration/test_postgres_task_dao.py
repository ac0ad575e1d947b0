"""PostgresTaskDAO passes the TaskDAO contract, each test in its own migrated schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from resilient_task.adapters.postgres import PostgresTaskDAO, create_engine
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.testing.task_dao_contract import TaskDAOContract
from tests.integration.postgres_env import isolated_schema

pytestmark = pytest.mark.integration


class TestPostgresTaskDAOContract(TaskDAOContract):
    @pytest.fixture
    async def dao(self, database_url: str) -> AsyncIterator[AnyTaskDAO]:
        async with isolated_schema(database_url) as settings:
            engine = create_engine(database_url, pool_size=5, max_overflow=20)
            async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
                yield dao

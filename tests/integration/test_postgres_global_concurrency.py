"""PostgreSQL's grab_limited: the global concurrency limit enforced by the store.

The same cases as the in-memory store (``tests/unit/global_limit_cases.py``); the concurrent
grabs here run on separate connections, serialized by the key's advisory lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, create_engine
from tests.unit.global_limit_cases import GrabLimitCases

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class TestPostgresGrabLimit(GrabLimitCases):
    @pytest.fixture
    async def dao(
        self, database_url: str, settings: PostgresSettings
    ) -> AsyncIterator[PostgresTaskDAO]:
        engine = create_engine(database_url, pool_size=8)
        dao = PostgresTaskDAO(engine=engine, settings=settings)
        await dao.open()
        yield dao
        await engine.dispose()

"""InMemoryTaskQueries passes the TaskQueries contract."""

from __future__ import annotations

import pytest

from resilient_task.adapters.memory import InMemoryTaskDAO
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.ports.task_dao import TaskDAO
from resilient_task.ports.task_queries import TaskQueries
from tests.contract.task_queries_contract import TaskQueriesContract


class TestInMemoryTaskQueriesContract(TaskQueriesContract):
    @pytest.fixture
    async def stores(self) -> tuple[TaskDAO, TaskQueries]:
        dao = InMemoryTaskDAO()
        return dao, InMemoryTaskQueries(dao=dao)

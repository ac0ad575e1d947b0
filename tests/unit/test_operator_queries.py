"""InMemoryTaskQueries passes the TaskQueries contract; TaskQuery refuses what no store holds."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_task.adapters.memory import InMemoryTaskDAO
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import ValidationError
from resilient_task.ports.task_queries import MAX_LIST_LIMIT, TaskQueries, TaskQuery
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.testing.task_queries_contract import TaskQueriesContract
from tests.unit.hostile import fuzz, hostile_values, valid_text, valid_texts


class TestInMemoryTaskQueriesContract(TaskQueriesContract):
    @pytest.fixture
    async def stores(self) -> tuple[AnyTaskDAO, TaskQueries]:
        dao = InMemoryTaskDAO()
        return dao, InMemoryTaskQueries(dao=dao)


@fuzz
@given(
    statuses=st.lists(st.one_of(st.sampled_from(list(TaskStatus)), hostile_values), max_size=3),
    types=st.lists(st.one_of(valid_texts(), hostile_values), max_size=3),
    limit=st.one_of(st.integers(min_value=-5, max_value=MAX_LIST_LIMIT + 5), hostile_values),
)
def test_a_query_is_built_exactly_when_every_filter_is_valid(
    statuses: list[object], types: list[object], limit: object
) -> None:
    valid = (
        all(
            isinstance(s, TaskStatus) or (type(s) is str and s in TaskStatus.__members__)
            for s in statuses
        )
        and all(valid_text(t) for t in types)
        and type(limit) is int
        and 0 <= limit <= MAX_LIST_LIMIT
    )
    fields: dict[str, Any] = {"statuses": tuple(statuses), "types": tuple(types), "limit": limit}
    build = functools.partial(TaskQuery, **fields)
    if not valid:
        with pytest.raises(ValidationError):
            build()
        return
    query = build()
    assert query.statuses == tuple(dict.fromkeys(TaskStatus(s) for s in statuses))  # type: ignore[arg-type]
    assert query.types == tuple(dict.fromkeys(types))

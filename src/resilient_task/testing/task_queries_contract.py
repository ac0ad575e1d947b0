# ruff: noqa: D102 -- each test is named as the sentence it checks
"""The TaskQueries contract: one suite every adapter's tests subclass.

Usage (any test module; pytest collects the subclass and runs every test of the suite)::

    class TestInMemoryTaskQueriesContract(TaskQueriesContract):
        @pytest.fixture
        async def stores(self) -> tuple[InMemoryTaskDAO, InMemoryTaskQueries]:
            dao = InMemoryTaskDAO()
            return dao, InMemoryTaskQueries(dao=dao)   # fresh and empty for every test

Tasks are seeded through the TaskDAO port only (insert, grab, apply), so the same seeding
works on every store.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import ValidationError
from resilient_task.ports.task_dao import TaskChange
from resilient_task.ports.task_queries import MAX_LIST_LIMIT, TaskQueries, TaskQuery
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.testing.task_dao_contract import (
    NOW,
    finished,
    insert,
    make_submitted,
    make_task,
)

__all__ = ["TaskQueriesContract", "seed"]

SECOND = timedelta(seconds=1)
Stores = tuple[AnyTaskDAO, TaskQueries]

_S = TaskStatus


async def seed(dao: AnyTaskDAO) -> dict[str, Task]:
    """One task in each interesting state, at distinct times; returned by name."""
    waiting = make_task(type="email", next_event_time=NOW + 50 * SECOND, data=b"secret")
    late_waiting = make_task(type="sms", next_event_time=NOW - 40 * SECOND)
    submitted = make_submitted(type="email", next_event_time=NOW - 30 * SECOND)
    await insert(dao, waiting, late_waiting, submitted)
    error = await finished(dao, _S.ERROR, at=NOW - 20 * SECOND)
    failed = await finished(dao, _S.FAILED, at=NOW - 10 * SECOND)
    done = await finished(dao, _S.DONE, at=NOW - 60 * SECOND)
    return {
        "waiting": waiting,
        "late_waiting": late_waiting,
        "submitted": submitted,
        "error": error,
        "failed": failed,
        "done": done,
    }


def ids(tasks: list[Task]) -> list[object]:
    """The ids of ``tasks``, in order."""
    return [t.id for t in tasks]


class TaskQueriesContract:
    """Tests every TaskQueries adapter passes.

    Subclasses (named ``Test...``) override the ``stores`` fixture: a fresh, empty TaskDAO
    and the TaskQueries reading the same store.
    """

    @pytest.fixture
    def stores(self) -> Stores:
        """A fresh, empty TaskDAO and the TaskQueries over it (the subclass's factory hook)."""
        raise NotImplementedError("subclasses override the stores fixture: (TaskDAO, TaskQueries)")

    # -- list_tasks -----------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_an_empty_query_lists_every_task_earliest_first_without_payload(
        self, stores: Stores
    ) -> None:
        dao, queries = stores
        s = await seed(dao)

        listed = await queries.list_tasks(TaskQuery())

        order = ["done", "late_waiting", "submitted", "error", "failed", "waiting"]
        assert ids(listed) == [s[name].id for name in order]
        assert all(t.data == b"" for t in listed)
        stored = await dao.get_task(s["error"].id)
        assert stored is not None
        assert listed[3] == replace(stored, data=b"")

    @pytest.mark.anyio
    async def test_several_statuses_list_the_tasks_in_any_of_them(self, stores: Stores) -> None:
        dao, queries = stores
        s = await seed(dao)

        listed = await queries.list_tasks(TaskQuery(statuses=(_S.ERROR, _S.WAITING)))

        assert ids(listed) == [s["late_waiting"].id, s["error"].id, s["waiting"].id]

    @pytest.mark.anyio
    async def test_several_types_list_the_tasks_of_any_of_them(self, stores: Stores) -> None:
        dao, queries = stores
        other = make_task(type="push", next_event_time=NOW)
        await insert(dao, other)
        s = await seed(dao)

        listed = await queries.list_tasks(TaskQuery(types=("sms", "push")))

        assert ids(listed) == [s["late_waiting"].id, other.id]

    @pytest.mark.anyio
    async def test_types_match_exactly_not_as_patterns(self, stores: Stores) -> None:
        dao, queries = stores
        tricky = make_task(type="a%_'\"\\ ü")
        plain = make_task(type="abc")
        await insert(dao, tricky, plain)

        assert ids(await queries.list_tasks(TaskQuery(types=("a%_'\"\\ ü",)))) == [tricky.id]
        assert await queries.list_tasks(TaskQuery(types=("a%",))) == []

    @pytest.mark.anyio
    async def test_due_before_keeps_only_tasks_strictly_earlier(self, stores: Stores) -> None:
        dao, queries = stores
        s = await seed(dao)

        listed = await queries.list_tasks(TaskQuery(due_before=NOW - 20 * SECOND))

        assert ids(listed) == [s["done"].id, s["late_waiting"].id, s["submitted"].id]

    @pytest.mark.anyio
    async def test_filters_combine(self, stores: Stores) -> None:
        dao, queries = stores
        s = await seed(dao)

        query = TaskQuery(
            statuses=(_S.WAITING, _S.SUBMITTED), types=("email",), due_before=NOW, limit=5
        )
        assert ids(await queries.list_tasks(query)) == [s["submitted"].id]

    @pytest.mark.anyio
    async def test_the_limit_keeps_the_earliest_across_statuses(self, stores: Stores) -> None:
        dao, queries = stores
        s = await seed(dao)

        listed = await queries.list_tasks(TaskQuery(limit=2))
        by_status = await queries.list_tasks(
            TaskQuery(statuses=(_S.FAILED, _S.ERROR, _S.DONE), limit=2)
        )

        assert ids(listed) == [s["done"].id, s["late_waiting"].id]
        assert ids(by_status) == [s["done"].id, s["error"].id]
        assert await queries.list_tasks(TaskQuery(limit=0)) == []

    @pytest.mark.anyio
    async def test_equal_times_are_ordered_by_priority_then_id(self, stores: Stores) -> None:
        dao, queries = stores
        tasks = [make_task(priority=p, next_event_time=NOW) for p in (7, 3, 3, 3, 5)]
        await insert(dao, *tasks)

        listed = await queries.list_tasks(TaskQuery())

        expected = sorted(tasks, key=lambda t: (t.priority, t.id.int))
        assert ids(listed) == ids(expected)

    @pytest.mark.anyio
    async def test_an_empty_store_lists_nothing(self, stores: Stores) -> None:
        _, queries = stores

        assert await queries.list_tasks(TaskQuery(statuses=(_S.ERROR,), types=("x",))) == []

    # -- the query refuses what no store could match -----------------------------------------

    @pytest.mark.parametrize(
        "fields",
        [
            {"statuses": ("BOGUS",)},
            {"statuses": ("error",)},
            {"statuses": (1,)},
            {"statuses": "ERROR"},
            {"types": ("a\x00b",)},
            {"types": ("\ud800",)},
            {"types": ("",)},
            {"types": ("x" * 251,)},
            {"types": (b"email",)},
            {"limit": -1},
            {"limit": MAX_LIST_LIMIT + 1},
            {"limit": True},
            {"limit": "10"},
            {"due_before": NOW.replace(tzinfo=None)},
        ],
    )
    def test_a_query_no_store_can_answer_is_a_validation_error(
        self, fields: dict[str, object]
    ) -> None:
        with pytest.raises(ValidationError):
            TaskQuery(**fields)  # type: ignore[arg-type]

    def test_status_names_and_repeats_are_normalised(self) -> None:
        query = TaskQuery(statuses=("ERROR", _S.ERROR, _S.DONE), types=("a", "a"))  # type: ignore[arg-type]

        assert query.statuses == (_S.ERROR, _S.DONE)
        assert query.types == ("a",)

    # -- counts ---------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_counts_by_status_have_every_status(self, stores: Stores) -> None:
        dao, queries = stores
        await seed(dao)

        counts = await queries.count_by_status()

        assert counts == {
            _S.WAITING: 2, _S.SUBMITTED: 1, _S.PROCESSING: 0, _S.DONE: 1, _S.ERROR: 1,
            _S.FAILED: 1, _S.CANCELLED: 0,
        }  # fmt: skip

    @pytest.mark.anyio
    async def test_counts_by_type_have_only_existing_pairs(self, stores: Stores) -> None:
        dao, queries = stores
        await seed(dao)

        counts = await queries.count_by_type()

        assert counts == {
            (_S.WAITING, "email"): 1,
            (_S.WAITING, "sms"): 1,
            (_S.SUBMITTED, "email"): 1,
            (_S.ERROR, "email"): 1,
            (_S.FAILED, "email"): 1,
            (_S.DONE, "email"): 1,
        }
        assert await queries.count_by_status() == {
            status: sum(n for (s, _), n in counts.items() if s is status) for status in _S
        }

    # -- oldest overdue -------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_oldest_overdue_is_the_earliest_deadline_strictly_before_now(
        self, stores: Stores
    ) -> None:
        dao, queries = stores
        oldest = make_submitted(next_event_time=NOW - 90 * SECOND)
        newer = make_submitted(next_event_time=NOW - SECOND)
        on_time = make_submitted(next_event_time=NOW)
        await insert(dao, newer, on_time, oldest)

        assert await queries.oldest_overdue(_S.SUBMITTED, now=NOW) == oldest.next_event_time
        assert await queries.oldest_overdue(_S.PROCESSING, now=NOW) is None
        assert await queries.oldest_overdue(_S.SUBMITTED, now=oldest.next_event_time) is None

    @pytest.mark.anyio
    async def test_oldest_overdue_follows_changes(self, stores: Stores) -> None:
        dao, queries = stores
        task = make_submitted(next_event_time=NOW - 5 * SECOND)
        await insert(dao, task)
        grabbed = task.grab(node_id="n", now=NOW, deadline=NOW - 2 * SECOND)
        assert await dao.apply([TaskChange(grabbed, task.version)]) == [True]

        assert await queries.oldest_overdue(_S.SUBMITTED, now=NOW) is None
        assert await queries.oldest_overdue(_S.PROCESSING, now=NOW) == NOW - 2 * SECOND

    @pytest.mark.anyio
    async def test_oldest_overdue_refuses_an_unknown_status_and_a_naive_now(
        self, stores: Stores
    ) -> None:
        _, queries = stores

        with pytest.raises(ValidationError):
            await queries.oldest_overdue("BOGUS", now=NOW)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await queries.oldest_overdue(_S.SUBMITTED, now=NOW.replace(tzinfo=None))

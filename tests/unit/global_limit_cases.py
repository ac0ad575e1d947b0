"""The store's side of a global concurrency limit (``grab_limited``), run against every store.

Subclassed by ``tests/unit/test_global_concurrency.py`` (in-memory) and
``tests/integration/test_postgres_global_concurrency.py`` (PostgreSQL), each providing the
``dao`` fixture.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import anyio
import pytest

from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ports.task_dao import GrabLimit, GrabRequest, TaskChange

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
BANK = GrabLimit("bank-api", 3, frozenset({"pay", "refund"}))
HOLD = NOW + 600 * SECOND
"""Where a task left over the limit has its pick-up deadline moved to (if later)."""


def submitted(type: str = "pay", priority: int = 5) -> Task:
    return Task(
        id=uuid4(),
        type=type,
        data=b"payload",
        status=TaskStatus.SUBMITTED,
        next_event_time=NOW + 60 * SECOND,
        created_at=NOW - 10 * SECOND,
        updated_at=NOW - 5 * SECOND,
        priority=priority,
    )


def request(task: Task, node: str = "node-1") -> GrabRequest:
    return GrabRequest(task.id, task.version, node, NOW + 300 * SECOND)


async def processing_of(dao: Any, tasks: list[Task]) -> list[Task]:
    found = [await dao.get_task(t.id) for t in tasks]
    return [t for t in found if t is not None and t.status is TaskStatus.PROCESSING]


class GrabLimitCases:
    """``grab_limited``: at most ``limit`` tasks of the key's types PROCESSING, store-wide."""

    async def test_a_grab_takes_only_the_free_slots_and_names_the_rest(self, dao: Any) -> None:
        tasks = [submitted() for _ in range(5)]
        await dao.insert_tasks(tasks)

        result = await dao.grab_limited(
            [request(t) for t in tasks], now=NOW, limit=BANK, hold_until=HOLD
        )

        assert len(result.grabbed) == 3
        grabbed_ids = {g.task.id for g in result.grabbed}
        assert result.over_limit == {t.id for t in tasks} - grabbed_ids
        for t in tasks:
            stored = await dao.get_task(t.id)
            expected = TaskStatus.PROCESSING if t.id in grabbed_ids else TaskStatus.SUBMITTED
            assert stored.status is expected
            assert stored.version == (t.version + 1 if t.id in grabbed_ids else t.version)
            if t.id not in grabbed_ids:  # its re-trigger held off while a node waits with it
                assert stored.next_event_time == HOLD

    async def test_tasks_of_every_type_of_the_key_count_and_others_do_not(self, dao: Any) -> None:
        pay, refund, other = submitted("pay"), submitted("refund"), submitted("email")
        waiting = [submitted("refund"), submitted("pay")]
        await dao.insert_tasks([pay, refund, other, *waiting])
        await dao.grab_queued([request(other)], now=NOW)  # another type: no slot of the key
        first = await dao.grab_limited(
            [request(pay), request(refund)], now=NOW, limit=BANK, hold_until=HOLD
        )
        assert len(first.grabbed) == 2

        second = await dao.grab_limited(
            [request(t) for t in waiting], now=NOW, limit=BANK, hold_until=HOLD
        )

        assert len(second.grabbed) == 1
        assert len(second.over_limit) == 1

    async def test_a_task_of_another_type_or_version_is_neither_grabbed_nor_over_limit(
        self, dao: Any
    ) -> None:
        other, stale = submitted("email"), submitted("pay")
        await dao.insert_tasks([other, stale])
        full = [submitted() for _ in range(3)]
        await dao.insert_tasks(full)
        await dao.grab_limited([request(t) for t in full], now=NOW, limit=BANK, hold_until=HOLD)
        stale_request = GrabRequest(stale.id, stale.version + 1, "node-1", NOW + 300 * SECOND)

        result = await dao.grab_limited(
            [request(other), stale_request], now=NOW, limit=BANK, hold_until=HOLD
        )

        assert result.grabbed == []
        assert result.over_limit == frozenset()
        assert (await dao.get_task(other.id)).status is TaskStatus.SUBMITTED

    async def test_a_held_pick_up_deadline_never_moves_earlier(self, dao: Any) -> None:
        tasks = [submitted() for _ in range(4)]
        await dao.insert_tasks(tasks)
        await dao.grab_limited(
            [request(t) for t in tasks], now=NOW, limit=BANK, hold_until=HOLD + SECOND
        )
        (left,) = [t for t in tasks if (await dao.get_task(t.id)).status is TaskStatus.SUBMITTED]

        await dao.grab_limited([request(left)], now=NOW, limit=BANK, hold_until=NOW)

        assert (await dao.get_task(left.id)).next_event_time == HOLD + SECOND

    async def test_a_task_leaving_processing_frees_its_slot(self, dao: Any) -> None:
        tasks = [submitted() for _ in range(4)]
        await dao.insert_tasks(tasks)
        first = await dao.grab_limited(
            [request(t) for t in tasks[:3]], now=NOW, limit=BANK, hold_until=HOLD
        )
        late = await dao.grab_limited([request(tasks[3])], now=NOW, limit=BANK, hold_until=HOLD)
        assert late.over_limit == {tasks[3].id}
        done = first.grabbed[0].task
        assert await dao.apply([TaskChange(done.complete(now=NOW), done.version)]) == [True]

        again = await dao.grab_limited([request(tasks[3])], now=NOW, limit=BANK, hold_until=HOLD)

        assert [g.task.id for g in again.grabbed] == [tasks[3].id]

    async def test_lower_priority_values_get_the_free_slots_first(self, dao: Any) -> None:
        tasks = [submitted(priority=p) for p in (9, 1, 5, 2)]
        await dao.insert_tasks(tasks)

        result = await dao.grab_limited(
            [request(t) for t in tasks], now=NOW, limit=BANK, hold_until=HOLD
        )

        assert sorted(g.task.priority for g in result.grabbed) == [1, 2, 5]
        assert result.over_limit == {tasks[0].id}

    async def test_concurrent_grabs_from_many_nodes_never_pass_the_limit(self, dao: Any) -> None:
        for _ in range(10):  # rounds: each starts with every slot free
            tasks = [submitted() for _ in range(16)]
            await dao.insert_tasks(tasks)
            results: list[Any] = []

            async def node(
                index: int, tasks: list[Task] = tasks, results: list[Any] = results
            ) -> None:
                mine = tasks[index::8]
                results.append(
                    await dao.grab_limited(
                        [request(t, f"node-{index}") for t in mine],
                        now=NOW,
                        limit=BANK,
                        hold_until=HOLD,
                    )
                )

            async with anyio.create_task_group() as tg:
                for index in range(8):
                    tg.start_soon(node, index)

            assert sum(len(r.grabbed) for r in results) == 3
            assert sum(len(r.over_limit) for r in results) == 13
            running = await processing_of(dao, tasks)
            assert len(running) == 3
            done = [TaskChange(t.complete(now=NOW), t.version) for t in running]
            assert await dao.apply(done) == [True] * 3

    @pytest.mark.parametrize("limit", [1, 2])
    async def test_a_batch_asking_for_one_task_twice_grabs_it_once(
        self, dao: Any, limit: int
    ) -> None:
        task = submitted()
        await dao.insert_tasks([task])
        key = GrabLimit("one", limit, frozenset({"pay"}))

        result = await dao.grab_limited(
            [request(task), request(task)], now=NOW, limit=key, hold_until=HOLD
        )

        assert [g.task.id for g in result.grabbed] == [task.id]

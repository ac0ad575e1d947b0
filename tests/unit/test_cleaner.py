from __future__ import annotations

from datetime import timedelta

import pytest

from resilient_task import CleanerProperties, TaskProperties, TaskStatus
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.service.cleaner import TaskCleaner
from tests.unit.helpers import stored_task

pytestmark = pytest.mark.anyio

DAY = timedelta(days=1)


def cleaner(dao: InMemoryTaskDAO, clock: FakeClock, batch_size: int = 2) -> TaskCleaner:
    props = TaskProperties(cleaner=CleanerProperties(retention=7 * DAY, batch_size=batch_size))
    return TaskCleaner(dao=dao, clock=clock, properties=props)


async def test_finished_tasks_older_than_the_retention_are_deleted_in_batches() -> None:
    clock = FakeClock()
    old = clock.now() - 8 * DAY
    expired = [
        stored_task(status=status, next_event_time=old)
        for status in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DONE)
    ]
    dao = InMemoryTaskDAO(tasks=expired)
    assert await cleaner(dao, clock, batch_size=2).run_once() == 4
    assert dao.tasks == {}


async def test_recent_finished_and_unfinished_tasks_are_kept() -> None:
    clock = FakeClock()
    old = clock.now() - 8 * DAY
    kept = [
        stored_task(status=TaskStatus.DONE, next_event_time=clock.now() - DAY),
        stored_task(status=TaskStatus.ERROR, next_event_time=old),
        stored_task(status=TaskStatus.WAITING, next_event_time=old),
        stored_task(status=TaskStatus.PROCESSING, next_event_time=old),
    ]
    dao = InMemoryTaskDAO(tasks=kept)
    assert await cleaner(dao, clock).run_once() == 0
    assert set(dao.tasks) == {t.id for t in kept}

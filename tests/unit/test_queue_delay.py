"""The executor reports each grab's queue delay: from when the task became due to its grab."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import anyio
import pytest

from resilient_task import TaskStatus
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.ports.task_dao import GrabRequest
from resilient_task.service.executor import TaskExecutor
from resilient_task.service.registry import HandlerRegistry
from tests.unit.helpers import Calls, handler, properties, settle, stored_task
from tests.unit.test_observer_events import RecordingObserver

pytestmark = pytest.mark.anyio


class DelayObserver(RecordingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        self.delays.append(queue_delay)


@pytest.mark.parametrize(("queued_for", "reported"), [(7.5, 7.5), (-2.0, 0.0)])
async def test_queue_delay_runs_from_submission_to_grab_never_negative(
    queued_for: float, reported: float
) -> None:
    clock, observer, calls = FakeClock(), DelayObserver(), Calls()
    task = replace(
        stored_task(status=TaskStatus.SUBMITTED, next_event_time=clock.now() + timedelta(hours=1)),
        updated_at=clock.now() - timedelta(seconds=queued_for),
    )
    dao = InMemoryTaskDAO(tasks=[task])
    executor = TaskExecutor(
        dao=dao,
        registry=HandlerRegistry([handler(calls)]),
        clock=clock,
        properties=properties(),
        observer=observer,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(executor.run)
        await executor.on_trigger(task.base)
        await settle(lambda: executor.stats["done"] == 1)
        await executor.stop()
    assert observer.delays == [reported]


async def test_the_in_memory_store_tells_when_a_grabbed_task_was_queued() -> None:
    clock = FakeClock()
    task = stored_task(status=TaskStatus.SUBMITTED, next_event_time=clock.now())
    dao = InMemoryTaskDAO(tasks=[task])
    later = clock.now() + timedelta(seconds=3)
    request = GrabRequest(task.id, task.version, "node-1", later + timedelta(minutes=1))
    [grabbed] = await dao.grab_queued([request, request], now=later)
    assert grabbed.queued_at == task.updated_at
    assert grabbed.task.updated_at == later
    assert grabbed.task.status is TaskStatus.PROCESSING

"""The services report their events to the Observer port (recorded here by a fake)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

import anyio
import pytest

from resilient_task import (
    CleanerProperties,
    NoRetryPolicy,
    ProcessResult,
    SimpleProcessingPolicy,
    Task,
    TaskProperties,
    TaskStatus,
)
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer
from resilient_task.errors import BackendUnavailableError
from resilient_task.ports.observer import ProcessOutcome, RecoveryStrategy
from resilient_task.service.cleaner import TaskCleaner
from resilient_task.service.outage import OutageLog
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.resumer import TaskResumer
from tests.unit.helpers import (
    START,
    FakeNode,
    dead_workers_task,
    handler,
    properties,
    settle,
    stored_task,
)

pytestmark = pytest.mark.anyio


class RecordingObserver:
    """An Observer that counts what it was told, by (event, detail)."""

    def __init__(self) -> None:
        self.events: Counter[tuple[str, object]] = Counter()

    def task_added(self, task_type: str, count: int = 1) -> None:
        self.events["added", task_type] += count

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        self.events["grabbed", task_type] += 1

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        self.events["processed", outcome] += 1

    def task_timed_out(self, task_type: str) -> None:
        self.events["timed_out", task_type] += 1

    def task_stale(self) -> None:
        self.events["stale", None] += 1

    def task_released(self, task_type: str) -> None:
        self.events["released", task_type] += 1

    def tasks_recovered(self, task_type: str, strategy: RecoveryStrategy) -> None:
        self.events["recovered", strategy] += 1

    def tasks_cleaned(self, count: int) -> None:
        self.events["cleaned", None] += count

    def triggers_sent(self, count: int) -> None:
        self.events["sent", None] += count

    def triggers_failed(self, count: int) -> None:
        self.events["failed", None] += count

    def outage(self, dependency: str, *, down: bool) -> None:
        self.events["outage", (dependency, down)] += 1

    def consumer_lag(self, topic: str, partition: int, lag: int | None) -> None:
        self.events["lag", (topic, partition, lag)] += 1


async def test_the_cleaner_reports_the_tasks_it_deleted() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    old = clock.now() - timedelta(days=8)
    dao = InMemoryTaskDAO(
        tasks=[stored_task(status=TaskStatus.DONE, next_event_time=old) for _ in range(3)]
    )
    props = TaskProperties(cleaner=CleanerProperties(retention=timedelta(days=7)))
    cleaner = TaskCleaner(dao=dao, clock=clock, properties=props, observer=observer)
    assert await cleaner.run_once() == 3
    assert observer.events == {("cleaned", None): 3}


def test_an_outage_is_reported_once_when_it_begins_and_once_when_it_ends() -> None:
    observer = RecordingObserver()
    outage = OutageLog(logging.getLogger("test"), "database", observer)
    for _ in range(5):
        outage.failed(BackendUnavailableError("down"), "grabbing")
    outage.succeeded()
    outage.succeeded()
    assert observer.events == {
        ("outage", ("database", True)): 1,
        ("outage", ("database", False)): 1,
    }


async def test_the_resumer_reports_recovered_tasks_and_the_triggers_it_sent() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    stuck = [dead_workers_task(deadline=START) for _ in range(2)]
    dao = InMemoryTaskDAO(tasks=stuck)
    resumer = TaskResumer(
        dao=dao,
        triggerer=InMemoryTriggerer(),
        registry=HandlerRegistry(),
        clock=clock,
        properties=properties(),
        observer=observer,
    )
    await clock.advance(timedelta(seconds=1))
    assert await resumer.run_once() == 2
    assert observer.events[("recovered", RecoveryStrategy.RETRY)] == 2
    assert observer.events[("sent", None)] == 2


async def test_a_node_reports_added_grabbed_processed_and_released_for_every_outcome() -> None:
    observer = RecordingObserver()

    async def ok(task: Task) -> ProcessResult:
        return ProcessResult.DONE

    async def fails(task: Task) -> ProcessResult:
        raise RuntimeError("boom")

    slow_started = anyio.Event()

    async def slow(task: Task) -> ProcessResult:
        slow_started.set()
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    node = FakeNode(
        handler(ok, types=["ok"]),
        handler(fails, types=["bad"], retry_policy=NoRetryPolicy()),
        handler(
            slow,
            types=["slow"],
            retry_policy=NoRetryPolicy(),
            processing_policy=SimpleProcessingPolicy(timeout=timedelta(seconds=1)),
        ),
    )
    node.app.observer = observer
    async with node:
        ids = [await node.add("ok"), await node.add("ok"), await node.add("bad")]
        slow_id = await node.add("slow")
        for task_id in ids:
            await node.wait_for(task_id, TaskStatus.DONE, TaskStatus.ERROR)
        # Only once it runs is its 1 s timeout armed on the fake clock: advanced earlier, the
        # clock would never reach that timeout and the test would hang.
        await slow_started.wait()
        await node.clock.advance(timedelta(seconds=2))
        await node.wait_for(slow_id, TaskStatus.ERROR)
        await settle(lambda: node.executor.running == 0)
    events = observer.events
    assert events[("added", "ok")] == 2
    assert events[("added", "bad")] == 1
    assert events[("processed", ProcessOutcome.DONE)] == 2
    assert events[("processed", ProcessOutcome.ERROR)] == 2  # bad, and slow after its timeout
    assert events[("timed_out", "slow")] == 1
    grabbed = sum(n for (event, _), n in events.items() if event == "grabbed")
    released = sum(n for (event, _), n in events.items() if event == "released")
    assert grabbed == released == 4
    assert events[("sent", None)] == 4
    stats = node.executor.stats
    assert (stats["done"], stats["error"], stats["grabbed"]) == (2, 2, 4)


async def test_a_stale_trigger_is_reported_and_holds_nothing() -> None:
    observer = RecordingObserver()

    async def ok(task: Task) -> ProcessResult:
        return ProcessResult.DONE

    node = FakeNode(handler(ok))
    node.app.observer = observer
    async with node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.DONE)
        await node.executor.on_trigger(node.task(task_id).base)  # a duplicate, late trigger
    assert observer.events[("stale", None)] == 1
    assert observer.events[("grabbed", "work")] == observer.events[("released", "work")] == 1

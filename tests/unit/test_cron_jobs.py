"""Cron jobs on nodes over the in-memory store and a FakeClock, wired as the node will wire them.

The nodes get the jobs' handlers through ``handlers=`` and run ``CronJobs.ensure`` once started.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from resilient_task import TaskStatus
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.domain.cron import CronJob, CronRun, MissedRuns
from resilient_task.service.cron import CronJobs
from tests.unit.helpers import FakeNode, properties, settle

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)
START = datetime(2030, 1, 1, 0, 1, 30, tzinfo=UTC)


@dataclass
class Runs:
    """A cron processor that records every run; it raises while ``failing``."""

    failing: bool = False
    runs: list[CronRun] = field(default_factory=list)

    async def __call__(self, run: CronRun) -> None:
        self.runs.append(run)
        if self.failing:
            raise ConnectionError("the bank is down")

    @property
    def ticks(self) -> list[str]:
        """The tick of every run, as ISO text in the job's time zone."""
        return [run.tick.isoformat() for run in self.runs]


def a_job(runs: Runs, **overrides: Any) -> CronJob:
    """The job ``settle`` every five minutes (UTC), with ``overrides``."""
    fields: dict[str, Any] = {"name": "settle", "schedule": "*/5 * * * *", "processor": runs}
    fields.update(overrides)
    return CronJob(**fields)


@asynccontextmanager
async def cron_node(
    *jobs: CronJob, dao: InMemoryTaskDAO, clock: FakeClock, node_id: str = "node"
) -> AsyncIterator[FakeNode]:
    """A node running ``jobs`` on the shared store and clock, their tasks ensured."""
    cron = CronJobs(jobs)
    async with FakeNode(
        *cron.handlers, dao=dao, clock=clock, props=properties(node_id=node_id)
    ) as node:
        await cron.ensure(node.service, clock=clock)
        yield node


async def run_tick(node: FakeNode, job: CronJob, runs: Runs, *, late: timedelta) -> None:
    """Move time to ``late`` after the job's next run time; wait until that run is recorded."""
    before = len(runs.runs)
    await node.advance_to(node.task(job.task_id).next_event_time + late)
    await settle(
        lambda: (
            len(runs.runs) == before + 1
            and node.task(job.task_id).status in (TaskStatus.WAITING, TaskStatus.ERROR)
        )
    )


async def test_a_job_on_two_nodes_runs_once_per_tick() -> None:
    runs, dao, clock = Runs(), InMemoryTaskDAO(), FakeClock(start=START)
    job = a_job(runs)
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(cron_node(job, dao=dao, clock=clock, node_id="a"))
        await stack.enter_async_context(cron_node(job, dao=dao, clock=clock, node_id="b"))
        for _ in range(12):
            await run_tick(node, job, runs, late=2 * SECOND)
        await node.advance(4 * 60 * SECOND)  # up to just before the 13th tick

    hour = START.replace(minute=0, second=0)
    expected = [hour + timedelta(minutes=5 * n) for n in range(1, 13)]
    assert runs.ticks == [t.isoformat() for t in expected]
    assert len(dao.tasks) == 1
    assert dao.tasks[job.task_id].next_event_time == expected[-1] + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("start", "ticks"),
    [
        (
            datetime(2026, 3, 27, 12, 0, tzinfo=UTC),
            ["2026-03-28T01:30:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"],
        ),
        (
            datetime(2026, 10, 23, 12, 0, tzinfo=UTC),
            ["2026-10-24T01:30:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"],
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_a_daily_job_in_london_runs_once_a_day_across_a_transition(
    start: datetime, ticks: list[str]
) -> None:
    runs, dao, clock = Runs(), InMemoryTaskDAO(), FakeClock(start=start)
    job = a_job(runs, schedule="30 1 * * *", timezone="Europe/London")
    async with cron_node(job, dao=dao, clock=clock) as node:
        for _ in ticks:
            await run_tick(node, job, runs, late=SECOND)

    assert runs.ticks == ticks


async def test_run_once_runs_a_single_time_for_the_ticks_missed_while_no_node_ran() -> None:
    runs, dao, clock = Runs(), InMemoryTaskDAO(), FakeClock(start=START)
    job = a_job(runs, missed=MissedRuns.RUN_ONCE)
    async with cron_node(job, dao=dao, clock=clock):
        pass
    clock.set(START + timedelta(hours=1, minutes=2))  # twelve ticks pass with no node

    async with cron_node(job, dao=dao, clock=clock) as node:
        await node.advance(SECOND)
        await settle(
            lambda: dao.tasks[job.task_id].status is TaskStatus.WAITING and bool(runs.runs)
        )

    assert runs.ticks == ["2030-01-01T01:00:00+00:00"]
    assert dao.tasks[job.task_id].next_event_time == datetime(2030, 1, 1, 1, 5, tzinfo=UTC)


async def test_skip_drops_the_missed_ticks_and_runs_at_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs, dao, clock = Runs(), InMemoryTaskDAO(), FakeClock(start=START)
    job = a_job(runs, missed=MissedRuns.SKIP, misfire_grace=30 * SECOND)
    async with cron_node(job, dao=dao, clock=clock):
        pass
    clock.set(START + timedelta(hours=1, minutes=2))

    async with cron_node(job, dao=dao, clock=clock) as node:
        await node.advance(SECOND)
        await settle(lambda: dao.tasks[job.task_id].next_event_time > clock.now())
        assert runs.runs == []
        assert "late (over its misfire grace of 0:00:30, missed=SKIP)" in caplog.text
        await run_tick(node, job, runs, late=2 * SECOND)

    assert runs.ticks == ["2030-01-01T01:05:00+00:00"]


async def test_a_changed_schedule_moves_the_next_run_at_the_next_start() -> None:
    runs, dao, clock = Runs(), InMemoryTaskDAO(), FakeClock(start=START)
    async with cron_node(a_job(runs, schedule="0 * * * *"), dao=dao, clock=clock):
        pass
    task_id = a_job(runs).task_id
    assert dao.tasks[task_id].next_event_time == datetime(2030, 1, 1, 1, 0, tzinfo=UTC)

    async with cron_node(a_job(runs, schedule="*/5 * * * *"), dao=dao, clock=clock):
        pass
    moved = dao.tasks[task_id]
    async with cron_node(a_job(runs, schedule="*/5 * * * *"), dao=dao, clock=clock):
        pass
    unchanged = dao.tasks[task_id]
    async with cron_node(a_job(runs, schedule="*/10 * * * *"), dao=dao, clock=clock):
        pass

    assert moved.next_event_time == datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    assert unchanged == moved  # the same schedule: not written again
    assert dao.tasks[task_id].next_event_time == datetime(2030, 1, 1, 0, 10, tzinfo=UTC)


async def test_a_job_that_keeps_failing_stops_in_error_with_a_log_line_and_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resilient_task")
    runs, dao, clock = Runs(failing=True), InMemoryTaskDAO(), FakeClock(start=START)
    job = a_job(runs, max_failures=2)
    async with cron_node(job, dao=dao, clock=clock) as node:
        await run_tick(node, job, runs, late=SECOND)
        first = node.task(job.task_id)
        await run_tick(node, job, runs, late=SECOND)

        assert first.status is TaskStatus.WAITING
        assert "the bank is down" in (first.last_error or "")
        assert [t.id for t in await node.service.find_tasks(status=TaskStatus.ERROR)] == [
            job.task_id
        ]
        stopped = [r for r in caplog.records if "cron job settle stopped" in r.getMessage()]
        assert [r.levelno for r in stopped] == [logging.ERROR]

    caplog.clear()
    async with cron_node(job, dao=dao, clock=clock) as node:
        assert any(
            r.levelno == logging.ERROR and "cron job settle is stopped" in r.getMessage()
            for r in caplog.records
        )
        runs.failing = False
        await node.service.resume_task(job.task_id)
        await settle(lambda: node.task(job.task_id).status is TaskStatus.WAITING)
        resumed = node.task(job.task_id)
        await run_tick(node, job, runs, late=SECOND)

    assert len(runs.runs) == 4
    assert resumed.processing_tries_count == 0
    assert resumed.next_event_time == datetime(2030, 1, 1, 0, 15, tzinfo=UTC)

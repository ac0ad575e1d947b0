"""TaskResumer: due tasks, lost triggers, dead workers, broker and store outages."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import anyio
import pytest

from resilient_task import (
    AddTaskRequest,
    SimpleProcessingPolicy,
    StuckTaskResolutionStrategy,
    TaskResumerProperties,
    TaskStatus,
)
from resilient_task.adapters.memory import (
    FakeClock,
    InMemoryTaskDAO,
    InMemoryTransaction,
    InMemoryTriggerer,
)
from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.task import BaseTask, Task
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from resilient_task.service.resumer import TaskResumer
from tests.unit.helpers import (
    START,
    Calls,
    DroppingTriggerer,
    FakeNode,
    dead_workers_task,
    handler,
    idle,
    make_resumer,
    make_service,
    properties,
    stored_task,
)

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)
QUEUE_TIME = properties().expected_queue_time
POLLING_INTERVAL = properties().resumer.polling_interval
DEADLINE = START + 10 * SECOND
_S = StuckTaskResolutionStrategy


# --- due WAITING tasks ---------------------------------------------------------------------


async def test_poll_submits_and_triggers_a_waiting_task_once_it_is_due() -> None:
    clock, triggerer = FakeClock(), InMemoryTriggerer()
    task = stored_task(status=TaskStatus.WAITING, next_event_time=START + 10 * SECOND, version=0)
    dao = InMemoryTaskDAO(tasks=[task])
    resumer = make_resumer(dao=dao, clock=clock, triggerer=triggerer)

    await clock.advance(10 * SECOND - MICROSECOND)
    assert await resumer.run_once() == 0
    assert dao.tasks[task.id].status is TaskStatus.WAITING

    await clock.advance(MICROSECOND)
    assert await resumer.run_once() == 1

    submitted = dao.tasks[task.id]
    assert submitted.status is TaskStatus.SUBMITTED
    assert submitted.next_event_time == START + 10 * SECOND + QUEUE_TIME
    assert triggerer.sent == [submitted.base]


async def test_one_poll_claims_every_due_task_in_several_batches() -> None:
    clock, triggerer = FakeClock(), InMemoryTriggerer()
    tasks = [
        stored_task(status=TaskStatus.WAITING, next_event_time=START, version=0) for _ in range(5)
    ]
    dao = InMemoryTaskDAO(tasks=tasks)
    props = properties(resumer=TaskResumerProperties(batch_size=2))
    resumer = make_resumer(dao=dao, clock=clock, triggerer=triggerer, props=props)

    assert await resumer.run_once() == 5

    assert {t.id for t in triggerer.sent} == {t.id for t in tasks}


async def test_two_nodes_polling_at_once_never_claim_the_same_task() -> None:
    clock = FakeClock()
    tasks = [
        stored_task(status=TaskStatus.WAITING, next_event_time=START, version=0) for _ in range(20)
    ]
    dao = InMemoryTaskDAO(tasks=tasks)
    props = properties(resumer=TaskResumerProperties(batch_size=3))
    triggerers = [InMemoryTriggerer(), InMemoryTriggerer()]
    resumers = [make_resumer(dao=dao, clock=clock, triggerer=t, props=props) for t in triggerers]

    async with anyio.create_task_group() as tg:
        for resumer in resumers:
            tg.start_soon(resumer.run_once)

    sent = [base.id for t in triggerers for base in t.sent]
    assert sorted(sent) == sorted(t.id for t in tasks)  # each exactly once


async def test_poll_logs_which_task_became_due(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilient_task")
    task = stored_task(status=TaskStatus.WAITING, next_event_time=START, version=0)
    resumer = make_resumer(dao=InMemoryTaskDAO(tasks=[task]), clock=FakeClock())

    await resumer.run_once()

    assert any(
        str(task.id) in r.getMessage() and "WAITING -> SUBMITTED" in r.getMessage()
        for r in caplog.records
    )


# --- SUBMITTED tasks whose trigger got lost ------------------------------------------------


async def test_lost_trigger_is_repeated_after_the_expected_queue_time_and_the_task_runs() -> None:
    calls = Calls()
    triggerer = DroppingTriggerer(drop=1)
    async with FakeNode(handler(calls), triggerer=triggerer) as node:
        task_id = await node.add()
        assert [t.id for t in triggerer.dropped] == [task_id]

        await node.advance(QUEUE_TIME)  # the deadline itself is not yet overdue
        await idle()
        assert node.status(task_id) is TaskStatus.SUBMITTED

        await node.advance(MICROSECOND)

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1
    assert node.resumer.stats["retriggered"] == 1


async def test_task_still_undelivered_after_its_repeated_trigger_runs_on_the_polling_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker that accepts triggers but never delivers them cannot stall a task."""
    calls = Calls()
    triggerer = DroppingTriggerer(drop=2)  # the original trigger and its repeat are lost
    async with FakeNode(handler(calls), triggerer=triggerer) as node:
        task_id = await node.add()
        await node.advance(QUEUE_TIME + MICROSECOND)  # overdue: triggered again (lost again)
        await idle()
        assert node.status(task_id) is TaskStatus.SUBMITTED
        assert len(triggerer.dropped) == 2

        await node.advance(QUEUE_TIME + MICROSECOND)  # overdue again: run here

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1
    assert node.resumer.stats["run_locally"] == 1
    assert any("running them on this node" in r.getMessage() for r in caplog.records)


async def test_handlers_expected_queue_time_decides_when_a_lost_trigger_is_repeated() -> None:
    calls = Calls()
    policy = SimpleProcessingPolicy(expected_queue_time=5 * SECOND)
    async with FakeNode(
        handler(calls, processing_policy=policy), triggerer=DroppingTriggerer(drop=1)
    ) as node:
        task_id = await node.add()

        await node.advance(5 * SECOND + MICROSECOND)

        await node.wait_for(task_id, TaskStatus.DONE)


async def test_stuck_submitted_task_in_the_store_is_triggered_again() -> None:
    triggerer = InMemoryTriggerer()
    task = stored_task(status=TaskStatus.SUBMITTED, next_event_time=START, version=4)
    dao = InMemoryTaskDAO(tasks=[task])
    clock = FakeClock()
    resumer = make_resumer(dao=dao, clock=clock, triggerer=triggerer)

    await clock.advance(MICROSECOND)
    assert await resumer.run_once() == 1

    again = dao.tasks[task.id]
    assert (again.status, again.version) == (TaskStatus.SUBMITTED, 5)
    assert again.next_event_time == START + MICROSECOND + QUEUE_TIME
    assert triggerer.sent == [again.base]


async def test_overdue_tasks_get_their_handlers_expected_queue_time_by_type() -> None:
    def policy(seconds: int) -> SimpleProcessingPolicy:
        return SimpleProcessingPolicy(expected_queue_time=seconds * SECOND)

    def overdue(type_: str) -> Task:
        return stored_task(status=TaskStatus.SUBMITTED, next_event_time=START, type=type_)

    tasks = {t: overdue(t) for t in ("fast", "slow", "plain", "by-predicate", "unknown")}
    dao = InMemoryTaskDAO(tasks=tasks.values())
    clock = FakeClock()
    calls = Calls()
    resumer = make_resumer(
        handler(calls, types=["fast"], processing_policy=policy(2)),
        # A predicate names no type: its tasks get the node default ...
        TaskHandler(
            predicate=lambda t: t.type in ("by-predicate", "slow"),
            processor=calls,
            processing_policy=policy(3),
        ),
        # ... and it does not change the time of a type a later handler names.
        handler(calls, types=["slow", "fast"], processing_policy=policy(7)),
        handler(calls, types=["plain"]),
        dao=dao,
        clock=clock,
    )

    await clock.advance(MICROSECOND)
    assert await resumer.run_once() == len(tasks)

    now = START + MICROSECOND
    waits = {t: QUEUE_TIME for t in tasks} | {"fast": 2 * SECOND, "slow": 7 * SECOND}
    for type_, task in tasks.items():
        again = dao.tasks[task.id]
        assert (again.status, again.version) == (TaskStatus.SUBMITTED, task.version + 1)
        assert again.next_event_time == now + waits[type_], type_


@pytest.mark.parametrize("status", [TaskStatus.SUBMITTED, TaskStatus.PROCESSING])
async def test_task_rescued_by_the_resumer_keeps_its_payload(status: TaskStatus) -> None:
    calls = Calls()
    task = stored_task(status=status, next_event_time=START, data=b'{"order": 42}')
    async with FakeNode(handler(calls), dao=InMemoryTaskDAO(tasks=[task])) as node:
        await node.advance(SECOND)
        await node.wait_for(task.id, TaskStatus.DONE)

    assert [t.data for t in calls.tasks] == [b'{"order": 42}']


# --- PROCESSING tasks whose worker died ----------------------------------------------------


async def test_dead_workers_task_is_left_alone_until_its_deadline_passes() -> None:
    task = dead_workers_task(deadline=DEADLINE)
    calls = Calls()
    async with FakeNode(handler(calls), dao=InMemoryTaskDAO(tasks=[task])) as node:
        await node.advance_to(DEADLINE)
        await idle()

        assert node.task(task.id) == task
    assert calls.count == 0


async def test_dead_workers_task_with_retry_strategy_is_resubmitted_and_runs() -> None:
    task = dead_workers_task(deadline=DEADLINE)
    calls = Calls()
    async with FakeNode(handler(calls), dao=InMemoryTaskDAO(tasks=[task])) as node:
        await node.advance_to(DEADLINE + MICROSECOND)

        done = await node.wait_for(task.id, TaskStatus.DONE)

    assert calls.count == 1
    assert done is not None
    assert done.recovery_count == 1
    assert done.processing_tries_count == 2
    assert node.resumer.stats["recovered"] == 1


async def test_a_recovered_task_runs_on_the_recovering_node_although_its_trigger_is_lost() -> None:
    """The dead node's partitions deliver nothing until the group moves on: do not wait."""
    task = dead_workers_task(deadline=DEADLINE)
    calls = Calls()
    triggerer = DroppingTriggerer(drop=1)  # the recovery's trigger goes to the dead node
    async with FakeNode(
        handler(calls), triggerer=triggerer, dao=InMemoryTaskDAO(tasks=[task])
    ) as node:
        await node.advance_to(DEADLINE + MICROSECOND)

        done = await node.wait_for(task.id, TaskStatus.DONE)

    assert [t.id for t in triggerer.dropped] == [task.id]  # it was triggered all the same
    assert calls.count == 1
    assert done is not None
    assert done.recovery_count == 1
    assert node.resumer.stats["retriggered"] == 0  # not left to wait for its queue time


class LosingDAO(InMemoryTaskDAO):
    """Every change it is asked to apply was made by another node first (a lost race)."""

    async def apply(
        self, changes: Sequence[TaskChange], *, transaction: InMemoryTransaction | None = None
    ) -> list[bool]:
        return [False] * len(changes)


@pytest.mark.parametrize(
    ("strategy", "recovery_count", "stat"),
    [
        (_S.RETRY, 0, "recovered"),
        (_S.RETRY, 5, "stuck_error"),
        (_S.MARK_AS_ERROR, 0, "stuck_error"),
        (_S.MARK_AS_FAILED, 0, "stuck_failed"),
    ],
)
async def test_a_node_that_lost_the_race_for_a_stuck_task_neither_logs_nor_counts_it(
    strategy: StuckTaskResolutionStrategy,
    recovery_count: int,
    stat: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_task")
    task = dead_workers_task(deadline=DEADLINE, recovery_count=recovery_count)
    policy = SimpleProcessingPolicy(stuck_strategy=strategy, max_recoveries=5)
    clock = FakeClock()
    await clock.advance(DEADLINE - START + MICROSECOND)
    dao = LosingDAO(tasks=[task])
    resumer = make_resumer(handler(Calls(), processing_policy=policy), dao=dao, clock=clock)

    assert await resumer.run_once() == 0

    assert resumer.stats[stat] == 0
    assert resumer.stats["lost_races"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records
    ]


async def test_the_winner_of_a_recovery_logs_and_counts_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resilient_task")
    task = dead_workers_task(deadline=DEADLINE)
    clock = FakeClock()
    await clock.advance(DEADLINE - START + MICROSECOND)
    dao = InMemoryTaskDAO(tasks=[task])
    resumers = [make_resumer(handler(Calls()), dao=dao, clock=clock) for _ in range(2)]

    for resumer in resumers:
        await resumer.run_once()

    assert sum(r.stats["recovered"] for r in resumers) == 1
    logged = [
        r.getMessage() for r in caplog.records if "-> SUBMITTED (recovery 1 of" in r.getMessage()
    ]
    assert len(logged) == 1, logged


@pytest.mark.parametrize(
    ("strategy", "status"),
    [
        (_S.MARK_AS_ERROR, TaskStatus.ERROR),
        (_S.MARK_AS_FAILED, TaskStatus.FAILED),
        (_S.IGNORE, TaskStatus.PROCESSING),
    ],
)
async def test_dead_workers_task_follows_its_handlers_stuck_strategy(
    strategy: StuckTaskResolutionStrategy, status: TaskStatus
) -> None:
    task = dead_workers_task(deadline=DEADLINE)
    calls = Calls()
    work = handler(calls, processing_policy=SimpleProcessingPolicy(stuck_strategy=strategy))
    async with FakeNode(work, dao=InMemoryTaskDAO(tasks=[task])) as node:
        await node.advance_to(DEADLINE + MICROSECOND)
        await idle()

        resolved = node.task(task.id)

    assert calls.count == 0
    assert resolved.status is status
    if strategy is _S.IGNORE:
        assert resolved == task
        assert node.resumer.stats["stuck_ignored"] >= 1
    else:
        assert "stuck in PROCESSING" in (resolved.last_error or "")
        assert "dead-node" in (resolved.last_error or "")


async def test_recoveries_are_capped_then_the_task_goes_to_error_with_the_reason() -> None:
    task = dead_workers_task(deadline=DEADLINE, recovery_count=2)
    calls = Calls()
    work = handler(calls, processing_policy=SimpleProcessingPolicy(max_recoveries=2))
    async with FakeNode(work, dao=InMemoryTaskDAO(tasks=[task])) as node:
        await node.advance_to(DEADLINE + MICROSECOND)

        error = await node.wait_for(task.id, TaskStatus.ERROR)

    assert calls.count == 0
    assert error is not None
    assert "recovered 2 time(s) already" in (error.last_error or "")


async def test_a_crash_loop_ends_in_error_after_max_recoveries() -> None:
    clock, dao = FakeClock(), InMemoryTaskDAO()
    policy = SimpleProcessingPolicy(timeout=10 * SECOND, max_recoveries=2)
    work = handler(Calls(), processing_policy=policy)
    resumer = make_resumer(work, dao=dao, clock=clock)
    service = make_service(work, dao=dao, clock=clock)
    task_id = (await service.add_task(AddTaskRequest(type="work"))).task_id

    for _ in range(3):  # a node grabs the task and dies, again and again
        submitted = dao.tasks[task_id]
        await dao.grab(
            [GrabRequest(task_id, submitted.version, "doomed", clock.now() + 20 * SECOND)],
            now=clock.now(),
        )
        await clock.advance(20 * SECOND + MICROSECOND)
        await resumer.run_once()

    error = dao.tasks[task_id]
    assert error.status is TaskStatus.ERROR
    assert error.recovery_count == 2
    assert "recovered 2 time(s)" in (error.last_error or "")


# --- a stopping node ------------------------------------------------------------------------


async def test_a_resumer_that_stopped_claiming_leaves_due_overdue_and_stuck_tasks_alone() -> None:
    due = stored_task(status=TaskStatus.WAITING, next_event_time=START, version=0)
    overdue = stored_task(status=TaskStatus.SUBMITTED, next_event_time=START, version=1)
    stuck = dead_workers_task(deadline=START)
    clock, triggerer = FakeClock(), InMemoryTriggerer()
    await clock.advance(SECOND)
    dao = InMemoryTaskDAO(tasks=[due, overdue, stuck])
    resumer = make_resumer(handler(Calls()), dao=dao, clock=clock, triggerer=triggerer)

    resumer.stop_claiming()
    resumer.stop_claiming()  # idempotent

    assert await resumer.run_once() == 0
    assert [dao.tasks[t.id] for t in (due, overdue, stuck)] == [due, overdue, stuck]
    assert triggerer.sent == []


async def test_a_resumer_told_to_stop_claiming_mid_poll_claims_no_further_batch() -> None:
    tasks = [
        stored_task(status=TaskStatus.WAITING, next_event_time=START, version=0) for _ in range(9)
    ]
    clock = FakeClock()
    dao = InMemoryTaskDAO(tasks=tasks)
    props = properties(resumer=TaskResumerProperties(batch_size=3))
    resumer: TaskResumer | None = None

    class StoppingTriggerer(InMemoryTriggerer):
        async def trigger(self, bases: Sequence[BaseTask]) -> None:
            await super().trigger(bases)
            assert resumer is not None
            resumer.stop_claiming()  # SIGTERM arrives while the first batch is triggered

    resumer = make_resumer(dao=dao, clock=clock, triggerer=StoppingTriggerer(), props=props)

    assert await resumer.run_once() == 3
    assert sum(t.status is TaskStatus.WAITING for t in dao.tasks.values()) == 6


# --- the broker is down ---------------------------------------------------------------------


async def test_with_the_broker_down_a_new_task_runs_from_the_next_poll() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        node.triggerer.fail_with(ConnectionError("broker unreachable"))
        task_id = await node.add()
        await idle()
        assert calls.count == 0

        await node.advance(POLLING_INTERVAL, poll=False)  # the background poll runs it

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1
    assert node.resumer.stats["run_locally"] == 1


async def test_with_the_broker_down_a_scheduled_task_runs_when_due() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        node.triggerer.fail_with(ConnectionError("broker unreachable"))
        task_id = await node.add(run_after_time=START + 10 * SECOND)

        await node.advance(10 * SECOND)

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1


# --- the store is down -------------------------------------------------------------------


async def test_background_polling_survives_a_store_outage() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add(run_after_time=START + POLLING_INTERVAL)
        node.dao.fail_next(1, operation="claim_due")

        await node.advance(POLLING_INTERVAL, poll=False)  # this poll fails
        await idle()
        assert node.status(task_id) is TaskStatus.WAITING

        await node.advance(POLLING_INTERVAL, poll=False)  # the next one works

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1

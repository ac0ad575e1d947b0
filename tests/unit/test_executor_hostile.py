"""The executor against hostile processors and triggers: nothing a processor raises, and no
single bad trigger, may wedge the node, lose a failure or hold back other tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_task import (
    ConfigurationError,
    NoRetryPolicy,
    ProcessResult,
    SimpleConcurrencyPolicy,
    Task,
    TaskStatus,
    ValidationError,
)
from resilient_task.adapters.memory import InMemoryTaskDAO, InMemoryTransaction
from resilient_task.ports.task_dao import Grabbed, GrabRequest
from tests.unit.helpers import (
    START,
    Calls,
    FakeNode,
    handler,
    idle,
    properties,
    settle,
    stored_task,
)

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)


class UnprintableError(Exception):
    """An exception whose message cannot be read."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class NotAnException(BaseException):
    """A BaseException subclass that is neither Exception nor a shutdown signal."""


RAISED: list[BaseException] = [
    asyncio.CancelledError(),
    KeyboardInterrupt(),
    SystemExit(3),
    NotAnException("odd"),
    UnprintableError(),
]


@pytest.mark.parametrize("raised", RAISED, ids=lambda e: type(e).__name__)
async def test_whatever_a_processor_raises_fails_its_task_and_the_node_keeps_working(
    raised: BaseException,
) -> None:
    failing = Calls(results=[raised])
    healthy = Calls()
    async with FakeNode(
        handler(failing, retry_policy=NoRetryPolicy()), handler(healthy, types={"other"})
    ) as node:
        task_id = await node.add()
        error = await node.wait_for(task_id, TaskStatus.ERROR)  # no wait for the deadline
        assert error is not None
        assert type(raised).__name__ in (error.last_error or "")

        later = [await node.add("other") for _ in range(3)] + [await node.add()]
        for other in later[:3]:
            await node.wait_for(other, TaskStatus.DONE)
        await node.wait_for(later[3], TaskStatus.ERROR)
    assert failing.count == 2  # once each: no extra run of a NoRetryPolicy task
    assert healthy.count == 3


async def test_an_exception_whose_str_raises_is_recorded_by_its_type_name() -> None:
    calls = Calls(results=[UnprintableError()])
    async with FakeNode(handler(calls, retry_policy=NoRetryPolicy())) as node:
        task_id = await node.add()
        error = await node.wait_for(task_id, TaskStatus.ERROR)
    assert error is not None
    assert error.last_error == (
        "gave up after 1 attempt(s): UnprintableError (no message: str() of the exception raised)"
    )
    assert calls.count == 1


async def test_a_transactional_processor_raising_cancelled_error_fails_its_task() -> None:
    calls = Calls(results=[asyncio.CancelledError(), ProcessResult.DONE])
    async with FakeNode(handler(calls, transactional=True)) as node:
        task_id = await node.add()
        retried = await node.wait_for(task_id, TaskStatus.WAITING)
        assert retried is not None
        assert "CancelledError" in (retried.last_error or "")
        await node.advance(10 * SECOND)
        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_processor_awaiting_a_future_someone_else_cancelled_fails_its_task() -> None:
    async def process(task: Task) -> ProcessResult:
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        await future
        return ProcessResult.DONE

    healthy = Calls()
    async with FakeNode(
        handler(process, retry_policy=NoRetryPolicy()), handler(healthy, types={"other"})
    ) as node:
        task_id = await node.add()
        error = await node.wait_for(task_id, TaskStatus.ERROR)
        assert error is not None
        assert "CancelledError" in (error.last_error or "")
        other = await node.add("other")
        await node.wait_for(other, TaskStatus.DONE)


async def test_a_node_stopping_still_cancels_a_running_processor_without_failing_its_task() -> None:
    started = anyio.Event()

    async def process(task: Task) -> ProcessResult:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    node = FakeNode(handler(process), props=properties(shutdown_grace=timedelta(0)))
    with anyio.fail_after(5):
        async with node:
            task_id = await node.add()
            await started.wait()
    assert node.status(task_id) is TaskStatus.PROCESSING  # recovered after its deadline
    assert node.task(task_id).last_error is None


# --- a deadline that passed before the processor could start ----------------------------


class SlowTransactionDAO(InMemoryTaskDAO):
    """Opening a transaction waits for ``free`` (a pool with no free connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.free = anyio.Event()
        self.waiting = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryTransaction]:
        """Wait for a 'connection', then open the in-memory transaction."""
        self.waiting += 1
        await self.free.wait()
        async with super().transaction() as tx:
            yield tx


async def test_a_task_whose_deadline_passed_while_it_waited_for_a_connection_is_not_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dao = SlowTransactionDAO()
    calls = Calls()
    props = properties()
    async with FakeNode(handler(calls, transactional=True), dao=dao, props=props) as node:
        task_id = await node.add()
        await settle(lambda: dao.waiting == 1)
        deadline = node.task(task_id).next_event_time
        await node.clock.advance(deadline - node.clock.now() + SECOND)
        with caplog.at_level(logging.WARNING, logger="resilient_task.executor"):
            await node.resumer.run_once()  # past the deadline: recovered and re-triggered
            dao.free.set()
            await node.wait_for(task_id, TaskStatus.DONE)
    assert f"task {task_id} type=work: not started, its deadline" in caplog.text
    assert node.executor.stats["expired"] == 1
    assert [t.recovery_count for t in calls.tasks] == [1]  # only the recovered run started


class SmallPoolDAO(InMemoryTaskDAO):
    """An in-memory store that reports a pool of ``max_connections`` like PostgreSQL's."""

    max_connections = 3


async def test_transactional_tasks_beyond_the_pool_wait_before_being_grabbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = anyio.Event()
    running: list[Task] = []

    async def process(task: Task) -> ProcessResult:
        running.append(task)
        await release.wait()
        return ProcessResult.DONE

    policy = SimpleConcurrencyPolicy(10)
    dao = SmallPoolDAO()
    with caplog.at_level(logging.WARNING, logger="resilient_task.executor"):
        async with FakeNode(
            handler(process, transactional=True, concurrency_policy=policy), dao=dao
        ) as node:
            try:
                ids = [await node.add() for _ in range(4)]
                await settle(lambda: len(running) == 1)
                await idle()
                assert len(running) == 1  # 3 connections, 2 kept for grabs and completions
                statuses = sorted(node.status(i).value for i in ids)  # type: ignore[union-attr]
                assert statuses == ["PROCESSING", "SUBMITTED", "SUBMITTED", "SUBMITTED"]
            finally:
                release.set()
            for task_id in ids:
                await node.wait_for(task_id, TaskStatus.DONE)
    assert "allow 10 task(s) at once but the database pool holds 3 connection(s)" in caplog.text


# --- one bad trigger in a grab batch ------------------------------------------------------


class PoisonedGrabDAO(InMemoryTaskDAO):
    """Refuses a whole grab batch when one request carries a poisoned version, as
    PostgreSQL refuses a batch holding a version out of bigint range."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.batch_sizes: list[int] = []

    async def grab_queued(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Grabbed]:
        """Raise for a batch with a version of 2**63 or more, else grab."""
        self.batch_sizes.append(len(requests))
        if any(r.version >= 2**63 for r in requests):
            raise self.error
        return await super().grab_queued(requests, now=now)


@pytest.mark.parametrize(
    "error",
    [ValidationError("bigint out of range"), RuntimeError("a bug in some adapter")],
    ids=["validation", "other"],
)
async def test_one_bad_trigger_in_a_grab_batch_does_not_hold_back_the_others(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    dao = PoisonedGrabDAO(error)
    calls = Calls()
    async with FakeNode(handler(calls), dao=dao) as node:
        tasks = [
            stored_task(status=TaskStatus.SUBMITTED, next_event_time=START + 60 * SECOND)
            for _ in range(30)
        ]
        dao.put(*tasks)
        forged = replace(tasks[7].base, version=2**64)
        bases = [t.base for t in tasks]
        with caplog.at_level(logging.WARNING, logger="resilient_task.executor"):
            async with anyio.create_task_group() as tg:  # concurrent triggers: one batch
                for base in [*bases[:15], forged, *bases[15:]]:
                    tg.start_soon(node.executor.on_trigger, base)
            for task in tasks:
                await node.wait_for(task.id, TaskStatus.DONE)  # at once, no clock advance
    assert max(dao.batch_sizes) > 1  # the forged trigger did share a batch
    assert calls.count == 30
    assert node.executor.stats["grab_failed"] == 1
    assert f"task {tasks[7].id} v{2**64}: trigger not grabbed" in caplog.text


class OneConnectionDAO(InMemoryTaskDAO):
    """An in-memory store that reports a pool of a single connection."""

    max_connections = 1


async def test_a_pool_too_small_for_any_transactional_task_is_refused_at_start() -> None:
    node = FakeNode(handler(Calls(), transactional=True), dao=OneConnectionDAO())
    with pytest.raises(ConfigurationError, match=r"at least 2 connections .* holds 1"):
        async with node:
            pass


async def test_a_pool_with_room_for_every_transactional_task_adds_no_limit() -> None:
    policy = SimpleConcurrencyPolicy(1)  # 1 + 2 for grabs and completions fits in 3
    async with FakeNode(
        handler(Calls(), transactional=True, concurrency_policy=policy), dao=SmallPoolDAO()
    ) as node:
        assert node.executor._admission.connection_slots is None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(min_value=1, max_value=24), data=st.data())
async def test_any_number_of_bad_triggers_anywhere_in_a_batch_fail_alone(
    size: int, data: st.DataObject
) -> None:
    bad = data.draw(st.sets(st.integers(min_value=0, max_value=size - 1)), label="bad")
    dao = PoisonedGrabDAO(ValidationError("bigint out of range"))
    calls = Calls()
    async with FakeNode(handler(calls), dao=dao) as node:
        tasks = [
            stored_task(status=TaskStatus.SUBMITTED, next_event_time=START + 60 * SECOND)
            for _ in range(size)
        ]
        dao.put(*tasks)
        async with anyio.create_task_group() as tg:
            for index, task in enumerate(tasks):
                trigger = replace(task.base, version=2**64) if index in bad else task.base
                tg.start_soon(node.executor.on_trigger, trigger)
        good = [t.id for i, t in enumerate(tasks) if i not in bad]
        await settle(lambda: all(node.status(i) is TaskStatus.DONE for i in good))
        assert node.executor.stats["grab_failed"] == len(bad)
        assert all(
            node.status(t.id) is TaskStatus.SUBMITTED for i, t in enumerate(tasks) if i in bad
        )
    assert sorted(t.id for t in calls.tasks) == sorted(good)

"""GlobalConcurrencyPolicy: the in-memory store's grab_limited, and nodes honouring the limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import anyio
import pytest

from resilient_task import ProcessResult, TaskHandler, TaskStatus
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.domain import Task
from resilient_task.domain.policies import GlobalConcurrencyPolicy, SimpleProcessingPolicy
from resilient_task.errors import ConfigurationError, ValidationError
from tests.unit.global_limit_cases import GrabLimitCases
from tests.unit.helpers import FakeNode, idle, properties, settle

pytestmark = pytest.mark.anyio


class TestInMemoryGrabLimit(GrabLimitCases):
    @pytest.fixture
    def dao(self) -> InMemoryTaskDAO:
        return InMemoryTaskDAO()


class Gate:
    """A processor that holds every task until released, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started: list[str] = []
        self.release = anyio.Event()

    async def __call__(self, task: Task) -> ProcessResult:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.append(task.processing_node or "")
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return ProcessResult.DONE

    def open(self) -> None:
        self.release.set()
        self.release = anyio.Event()


def limited(gate: Gate, limit: int = 3, **policy: Any) -> TaskHandler:
    return TaskHandler(
        types={"pay"},
        processor=gate,
        concurrency_policy=GlobalConcurrencyPolicy(key="bank-api", limit=limit, **policy),
        processing_policy=SimpleProcessingPolicy(timeout=timedelta(minutes=5)),
    )


def statuses(dao: InMemoryTaskDAO) -> dict[TaskStatus, int]:
    counts: dict[TaskStatus, int] = {}
    for task in dao.tasks.values():
        counts[task.status] = counts.get(task.status, 0) + 1
    return counts


def counted(dao: InMemoryTaskDAO, status: TaskStatus) -> int:
    return sum(1 for task in dao.tasks.values() if task.status is status)


async def test_two_nodes_on_one_store_run_at_most_the_limit_and_then_every_task() -> None:
    gate, dao, clock = Gate(), InMemoryTaskDAO(), FakeClock()
    async with (
        FakeNode(limited(gate), dao=dao, clock=clock, props=properties(node_id="a")) as a,
        FakeNode(limited(gate), dao=dao, clock=clock, props=properties(node_id="b")) as b,
    ):
        ids = [await (a if i % 2 else b).add("pay") for i in range(10)]
        # Each node holds at most ``limit`` triggers of the key, running or waiting over the
        # limit; the others wait for one of those node slots.
        await settle(
            lambda: (
                gate.running == 3
                and a.executor.stats["over_limit"] + b.executor.stats["over_limit"] >= 3
            )
        )
        await idle()
        assert statuses(dao) == {TaskStatus.PROCESSING: 3, TaskStatus.SUBMITTED: 7}
        assert gate.running == 3

        for _ in range(20):  # each opening ends the running tasks; waiters take their slots
            gate.open()
            await idle()
            await clock.advance(timedelta(seconds=1))  # the recheck of the other node's waiters
            await idle()
            assert gate.running <= 3
            if counted(dao, TaskStatus.DONE) == 10:
                break

        assert all(dao.tasks[i].status is TaskStatus.DONE for i in ids)
        assert gate.most == 3
        assert {"a", "b"} <= set(gate.started)


async def test_a_waiter_takes_the_slot_its_node_frees_without_waiting_for_the_recheck() -> None:
    gate, dao, clock = Gate(), InMemoryTaskDAO(), FakeClock()
    handler = limited(gate, limit=2, recheck_interval=timedelta(hours=1))
    async with (
        FakeNode(handler, dao=dao, clock=clock, props=properties(node_id="a")) as a,
        FakeNode(handler, dao=dao, clock=clock, props=properties(node_id="b")) as b,
    ):
        await b.add("pay")
        await settle(lambda: gate.running == 1)
        await a.add("pay")
        await a.add("pay")
        await settle(lambda: gate.running == 2 and a.executor.stats["over_limit"] >= 1)
        assert counted(dao, TaskStatus.SUBMITTED) == 1

        gate.open()  # both running tasks end: a's waiter grabs at once, the clock unmoved

        await settle(lambda: counted(dao, TaskStatus.DONE) == 2 and gate.running == 1)
        assert counted(dao, TaskStatus.PROCESSING) == 1
        gate.open()
        await settle(lambda: counted(dao, TaskStatus.DONE) == 3)


async def test_the_slots_of_a_dead_nodes_tasks_free_when_they_are_recovered() -> None:
    gate, clock, dao = Gate(), FakeClock(), InMemoryTaskDAO()
    # A node that died left a task of the key PROCESSING: it holds the only slot.
    orphan = Task(
        id=uuid4(), type="pay", data=b"", status=TaskStatus.PROCESSING,
        next_event_time=clock.now() + timedelta(minutes=5), created_at=clock.now(),
        updated_at=clock.now(), version=1, processing_tries_count=1, processing_node="dead",
    )  # fmt: skip
    dao.put(orphan)
    async with FakeNode(limited(gate, limit=1), dao=dao, clock=clock) as node:
        waiting = await node.add("pay")
        await settle(lambda: node.executor.stats["over_limit"] >= 1)
        await clock.advance(timedelta(minutes=1))
        await idle()
        assert node.status(waiting) is TaskStatus.SUBMITTED
        assert gate.running == 0

        # Past its processing deadline the resumer recovers the orphan: the slot is free.
        await clock.advance(timedelta(minutes=5))
        await settle(lambda: gate.running == 1)
        for _ in range(20):
            gate.open()
            await idle()
            await clock.advance(timedelta(seconds=1))
            await idle()
            if {node.status(waiting), node.status(orphan.id)} == {TaskStatus.DONE}:
                break

        assert {node.status(waiting), node.status(orphan.id)} == {TaskStatus.DONE}
        assert gate.most == 1


async def test_a_trigger_over_the_limit_grabs_as_soon_as_the_resumer_recovers_the_slot_holder() -> (
    None
):
    # The waiting trigger rechecks only hourly; the recovery of the dead node's task on this
    # node frees the key's slot, and wakes it at once.
    gate, clock, dao = Gate(), FakeClock(), InMemoryTaskDAO()
    orphan = Task(
        id=uuid4(), type="pay", data=b"", status=TaskStatus.PROCESSING,
        next_event_time=clock.now() + timedelta(minutes=5), created_at=clock.now(),
        updated_at=clock.now(), version=1, processing_tries_count=1, processing_node="dead",
    )  # fmt: skip
    dao.put(orphan)
    handler = limited(gate, limit=1, recheck_interval=timedelta(hours=1))
    async with FakeNode(handler, dao=dao, clock=clock) as node:
        waiting = await node.add("pay")
        await settle(lambda: node.executor.stats["over_limit"] == 1)
        await clock.advance(timedelta(minutes=6))  # past the orphan's processing deadline
        await settle(lambda: node.resumer.stats["recovered"] == 1)
        await settle(lambda: gate.running == 1)
        assert node.status(waiting) is TaskStatus.PROCESSING
        assert node.status(orphan.id) is TaskStatus.SUBMITTED
        gate.open()
        await settle(lambda: node.status(waiting) is TaskStatus.DONE)


async def test_shutdown_releases_a_trigger_waiting_over_the_limit() -> None:
    gate, dao, clock = Gate(), InMemoryTaskDAO(), FakeClock()
    async with (
        FakeNode(limited(gate, limit=1), dao=dao, clock=clock, props=properties(node_id="a")) as a,
        FakeNode(limited(gate, limit=1), dao=dao, clock=clock, props=properties(node_id="b")) as b,
    ):
        running = await b.add("pay")
        await settle(lambda: gate.running == 1)
        waiting = await a.add("pay")
        await settle(lambda: a.executor.stats["over_limit"] >= 1)

        with anyio.fail_after(5):
            await a.executor.stop(grace=timedelta(0))

        assert a.status(waiting) is TaskStatus.SUBMITTED
        assert a.status(running) is TaskStatus.PROCESSING
        gate.open()
        await settle(lambda: a.status(running) is TaskStatus.DONE)


def test_a_global_policy_needs_types_a_key_and_a_positive_limit() -> None:
    async def run(task: Task) -> ProcessResult:
        return ProcessResult.DONE

    policy = GlobalConcurrencyPolicy(key="bank-api", limit=5)
    assert policy.max_concurrency == 5
    with pytest.raises(ValidationError, match="types"):
        TaskHandler(predicate=lambda t: True, processor=run, concurrency_policy=policy)
    for bad in ({"key": " ", "limit": 1}, {"key": "k", "limit": 0}, {"key": "k", "limit": True}):
        with pytest.raises(ValidationError):
            GlobalConcurrencyPolicy(**bad)  # type: ignore[arg-type]


async def test_one_key_with_two_limits_or_a_store_without_grab_limited_is_refused() -> None:
    gate = Gate()
    with pytest.raises(ConfigurationError, match="two limits"):
        async with FakeNode(limited(gate, limit=2), limited(gate, limit=3)):
            pass

    class PlainDAO(InMemoryTaskDAO):
        grab_limited = None  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match="grab_limited"):
        async with FakeNode(limited(gate), dao=PlainDAO()):
            pass

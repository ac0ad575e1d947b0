"""The task lifecycle and the operator actions against a simple model (hypothesis stateful).

Random sequences of: adding tasks (WAITING or SUBMITTED), moving the fake time, claiming due
tasks, grabbing, finishing a grabbed task (complete, retry later, recover, give up) through the
TaskDAO port, and the operator's resume / fail / cancel / reschedule through TaskOperator --
each with the current version or a stale one. After every step the store must agree with the
model: the same tasks (none lost), each at the status and version the model predicts, counts by
status equal; and every change the store shows since the previous step is a move of the
lifecycle table (TRANSITIONS) with a higher version.

:class:`LifecycleMachine` takes its stores from :meth:`LifecycleMachine.open_stores`: this
module runs it on the in-memory store, ``tests/integration/test_postgres_lifecycle_stateful.py``
on PostgreSQL. Store calls run on one event loop in a thread (an anyio blocking portal), so
the rules stay plain functions as hypothesis wants them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTransaction
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.domain.task import TRANSITIONS, BaseTask, Task, TaskStatus, Transition
from resilient_task.errors import InvalidTransitionError
from resilient_task.ports.task_dao import GrabRequest, InsertOutcome, TaskChange
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.properties import TaskProperties
from resilient_task.service.operator import Action, Outcome, TaskOperator
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.service.task_service import TaskService
from resilient_task.testing.task_dao_contract import make_task

__all__ = ["LifecycleMachine"]

T = TypeVar("T")
_S = TaskStatus
MAX_TASKS = 8
SECOND = timedelta(seconds=1)
MOVES = frozenset((start, target) for allowed, target in TRANSITIONS.values() for start in allowed)
"""Every (from, to) status pair the lifecycle table allows."""
FINISHES = {
    "complete": Transition.COMPLETE,
    "retry_later": Transition.SCHEDULE,
    "recover": Transition.RECOVER,
    "give_up": Transition.MARK_ERROR,
}


class NoTriggers:
    """A triggerer that sends nothing: the machine claims and grabs tasks itself."""

    async def start(self, callback: Callable[[BaseTask], Awaitable[None]]) -> None:
        """Nothing to start."""

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Drop the triggers."""

    async def stop(self) -> None:
        """Nothing to stop."""


@dataclass
class Modelled:
    """What the model knows of one task."""

    status: TaskStatus
    version: int
    next_event_time: datetime


class LifecycleMachine(RuleBasedStateMachine):
    """Drives one store through random lifecycle steps and checks it against a model."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._stores_cm = self.portal.wrap_async_context_manager(self.open_stores())
        self.dao, queries = self._stores_cm.__enter__()
        self.clock = FakeClock()
        service = TaskService(
            dao=self.dao,
            triggerer=NoTriggers(),
            registry=HandlerRegistry(()),
            clock=self.clock,
            properties=TaskProperties(node_id="stateful"),
        )
        self.operator = TaskOperator(service=service, queries=queries, clock=self.clock)
        self.model: dict[UUID, Modelled] = {}
        self.seen: dict[UUID, tuple[TaskStatus, int]] = {}

    def open_stores(self) -> AbstractAsyncContextManager[tuple[AnyTaskDAO, TaskQueries]]:
        """A fresh, empty store and the queries over it, for one example."""
        return _memory_stores()

    def teardown(self) -> None:
        try:
            self._stores_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an async store call on the machine's event loop."""
        return self.portal.call(function, *args)

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def stored(self, task_id: UUID) -> Task:
        task = self.run(self.dao.get_task, task_id)
        assert task is not None, f"task {task_id} was lost"
        return task

    def changed(self, task: Task) -> None:
        """The model follows a change the store accepted: one transition, version + 1."""
        before = self.model[task.id]
        assert (before.status, task.status) in MOVES, (before.status, task.status)
        assert task.version == before.version + 1
        self.model[task.id] = Modelled(task.status, task.version, task.next_event_time)

    # -- rules ---------------------------------------------------------------------------------

    @rule(
        target=tasks,
        delay=st.sampled_from([0, 5, 60]),
        submitted=st.booleans(),
    )
    def add(self, delay: int, submitted: bool) -> UUID:
        at = self.now() + delay * SECOND
        status = _S.SUBMITTED if submitted else _S.WAITING
        task = make_task(id=uuid4(), status=status, next_event_time=at, created_at=self.now())
        if len(self.model) >= MAX_TASKS:
            return next(iter(self.model))  # enough tasks: hand out an old one again
        outcomes = self.run(self.dao.insert_tasks, [task])
        assert outcomes == [InsertOutcome(task.id, created=True)]
        self.model[task.id] = Modelled(status, 0, at)
        return task.id

    @rule(seconds=st.sampled_from([1, 5, 30, 120]))
    def time_passes(self, seconds: int) -> None:
        self.run(self.clock.advance, seconds)

    @rule()
    def claim_due(self) -> None:
        now = self.now()
        due = {
            i for i, m in self.model.items() if m.status is _S.WAITING and m.next_event_time <= now
        }
        claimed = self.run(
            lambda: self.dao.claim_due(now=now, limit=100, deadline=now + 30 * SECOND)
        )
        assert {t.id for t in claimed} == due
        for task in claimed:
            self.changed(task)

    def in_status(self, status: TaskStatus) -> list[UUID]:
        return [i for i, m in self.model.items() if m.status is status]

    @rule(task_id=tasks, stale=st.booleans())
    def grab_any(self, task_id: UUID, stale: bool) -> None:
        """Any task: only a SUBMITTED one at its version can be grabbed."""
        self.grab(task_id, stale)

    @precondition(lambda self: self.in_status(_S.SUBMITTED))
    @rule(data=st.data(), stale=st.booleans())
    def grab_submitted(self, data: st.DataObject, stale: bool) -> None:
        self.grab(data.draw(st.sampled_from(self.in_status(_S.SUBMITTED))), stale)

    def grab(self, task_id: UUID, stale: bool) -> None:
        model = self.model[task_id]
        version = model.version + (1 if stale else 0)
        request = GrabRequest(task_id, version, "node-1", self.now() + 60 * SECOND)
        grabbed = self.run(lambda: self.dao.grab([request], now=self.now()))
        wins = model.status is _S.SUBMITTED and not stale
        assert [t.id for t in grabbed] == ([task_id] if wins else [])
        for task in grabbed:
            assert task.status is _S.PROCESSING
            self.changed(task)

    @precondition(lambda self: self.in_status(_S.PROCESSING))
    @rule(data=st.data(), how=st.sampled_from(sorted(FINISHES)), stale=st.booleans())
    def finish(self, data: st.DataObject, how: str, stale: bool) -> None:
        """What a worker writes at the end of a run: a compare-and-set through the DAO."""
        task_id = data.draw(st.sampled_from(self.in_status(_S.PROCESSING)))
        task, now = self.stored(task_id), self.now()
        allowed, _ = TRANSITIONS[FINISHES[how]]
        try:
            new = {
                "complete": lambda: task.complete(now=now),
                "retry_later": lambda: task.schedule(now=now, run_at=now + 5 * SECOND),
                "recover": lambda: task.recover(now=now, deadline=now + 30 * SECOND),
                "give_up": lambda: task.mark_error(now=now, reason="gave up"),
            }[how]()
        except InvalidTransitionError:  # a run ends PROCESSING tasks only
            raise AssertionError(f"{how} refused from PROCESSING") from None
        assert task.status in allowed
        expected = task.version + (1 if stale else 0)
        [written] = self.run(self.dao.apply, [TaskChange(new, expected)])
        assert written is not stale
        if written:
            self.changed(new)

    @rule(
        task_id=tasks,
        action=st.sampled_from(list(Action)),
        version=st.sampled_from(["current", "stale", "none"]),
    )
    def operator_acts(self, task_id: UUID, action: Action, version: str) -> None:
        model = self.model[task_id]
        given = {"current": model.version, "stale": model.version + 1, "none": None}[version]
        run_at = self.now() + 10 * SECOND if action is Action.RESCHEDULE else None
        [result] = self.run(
            lambda: self.operator.act(action, [task_id], version=given, run_at=run_at)
        )
        allowed, _ = TRANSITIONS[action.transition]
        if version == "stale":
            expected = Outcome.CHANGED
        else:
            expected = Outcome.OK if model.status in allowed else Outcome.NOT_ALLOWED
        assert result.outcome is expected, (result, model)
        if result.outcome is Outcome.OK:
            assert result.task is not None
            self.changed(result.task)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        listed = self.run(lambda: self.dao.find_tasks(limit=1000))
        store = {t.id: (t.status, t.version) for t in listed}
        assert store == {i: (m.status, m.version) for i, m in self.model.items()}
        counts = self.run(self.dao.count_by_status)
        expected = Counter(m.status for m in self.model.values())
        assert {s: n for s, n in counts.items() if n} == dict(expected)
        for task_id, (status, version) in store.items():
            before = self.seen.get(task_id)
            if before is not None and before != (status, version):
                assert version > before[1], (task_id, before, version)
                assert (before[0], status) in MOVES, (task_id, before[0], status)
        self.seen = store


@asynccontextmanager
async def _memory_stores(
    dao: InMemoryTaskDAO | None = None,
) -> AsyncIterator[tuple[AnyTaskDAO, TaskQueries]]:
    dao = dao or InMemoryTaskDAO()
    yield dao, InMemoryTaskQueries(dao=dao)


LifecycleMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestInMemoryLifecycle = LifecycleMachine.TestCase


class VersionBlindTaskDAO(InMemoryTaskDAO):
    """A broken store: writes every change whatever version it was read at."""

    async def apply(
        self, changes: Sequence[TaskChange], *, transaction: InMemoryTransaction | None = None
    ) -> list[bool]:
        current = [
            TaskChange(c.task, self.tasks[c.task.id].version) if c.task.id in self.tasks else c
            for c in changes
        ]
        return await super().apply(current, transaction=transaction)


class VersionBlindMachine(LifecycleMachine):
    def open_stores(self) -> AbstractAsyncContextManager[tuple[AnyTaskDAO, TaskQueries]]:
        return _memory_stores(VersionBlindTaskDAO())


def test_the_machine_catches_a_store_that_writes_stale_changes() -> None:
    quick = settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        database=None,
        phases=[Phase.generate],
    )
    with pytest.raises(AssertionError):
        run_state_machine_as_test(VersionBlindMachine, settings=quick)

"""Factories shared by the service, executor, resumer and bootstrap tests.

Fakes are wired through the real composition root (:class:`FakeNode` wraps
:class:`~resilient_task.ResilientTask`), or services are built directly with keyword arguments
(:func:`make_service`, :func:`make_executor`, :func:`make_resumer`) for fine-grained cases.
Time only moves through :class:`FakeClock`; background work is awaited with :func:`settle`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self
from uuid import UUID, uuid4

import anyio
import anyio.lowlevel

from resilient_task import (
    AddTaskRequest,
    BaseTask,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    TaskProperties,
    TaskService,
    TaskStatus,
)
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer
from resilient_task.service.executor import TaskExecutor
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.resumer import TaskResumer

__all__ = [
    "START",
    "Calls",
    "DroppingTriggerer",
    "FakeNode",
    "Gauge",
    "ObservedTriggerer",
    "advance_until",
    "dead_workers_task",
    "handler",
    "idle",
    "make_executor",
    "make_resumer",
    "make_service",
    "properties",
    "settle",
    "stored_task",
]

START = FakeClock().now()
"""Where every :class:`FakeClock` starts."""

MICROSECOND = timedelta(microseconds=1)


def properties(**overrides: object) -> TaskProperties:
    """Node settings for tests: a fixed node id, a short shutdown grace, defaults otherwise."""
    overrides.setdefault("node_id", "test-node")
    overrides.setdefault("shutdown_grace", timedelta(seconds=1))  # real time: fail fast
    return TaskProperties(**overrides)  # type: ignore[arg-type]


async def settle(condition: Callable[[], bool], *, max_iterations: int = 10_000) -> None:
    """Yield to background tasks until ``condition()`` holds; fail after a bounded wait."""
    with anyio.fail_after(5):
        for _ in range(max_iterations):
            if condition():
                return
            await anyio.lowlevel.checkpoint()
    raise AssertionError(f"condition still false after {max_iterations} checkpoints")


async def idle(iterations: int = 200) -> None:
    """Give background tasks plenty of chances to run (to show that something did NOT happen)."""
    for _ in range(iterations):
        await anyio.lowlevel.checkpoint()


@dataclass
class Calls:
    """A processor that records each call (task and fake time) and returns ``results`` in order.

    Each result is a :class:`ProcessResult` to return or an exception to raise; the last one
    repeats. ``results`` defaults to always DONE.
    """

    clock: FakeClock | None = None
    results: Sequence[ProcessResult | BaseException | object] = (ProcessResult.DONE,)
    tasks: list[Task] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many times the processor ran."""
        return len(self.tasks)

    async def __call__(self, task: Task) -> ProcessResult:
        self.tasks.append(task)
        if self.clock is not None:
            self.times.append(self.clock.now())
        result = self.results[min(len(self.tasks), len(self.results)) - 1]
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]


def stored_task(
    *,
    status: TaskStatus,
    next_event_time: datetime,
    type: str = "work",
    version: int = 1,
    processing_tries_count: int = 0,
    recovery_count: int = 0,
    processing_node: str | None = None,
    data: bytes = b"payload",
) -> Task:
    """A task as some node left it in the store (any status), to seed ``InMemoryTaskDAO``."""
    return Task(
        id=uuid4(),
        type=type,
        data=data,
        status=status,
        next_event_time=next_event_time,
        created_at=START,
        updated_at=START,
        version=version,
        processing_tries_count=processing_tries_count,
        recovery_count=recovery_count,
        processing_node=processing_node,
    )


async def advance_until(
    clock: FakeClock, condition: Callable[[], bool], *, step: timedelta, max_steps: int = 50
) -> None:
    """Advance ``clock`` by ``step`` at a time until ``condition()`` holds (bounded)."""
    for _ in range(max_steps):
        await idle(50)
        if condition():
            return
        await clock.advance(step)
    raise AssertionError(f"condition still false after {max_steps} steps of {step}")


@dataclass
class Gauge:
    """Counts processors running at once and the peak seen."""

    running: int = 0
    peak: int = 0
    finished: int = 0

    def enter(self) -> None:
        """A processor started."""
        self.running += 1
        self.peak = max(self.peak, self.running)

    def exit(self) -> None:
        """A processor finished."""
        self.running -= 1
        self.finished += 1


def dead_workers_task(*, deadline: datetime, type: str = "work", **fields: object) -> Task:
    """A PROCESSING task whose node died: it holds a deadline and was tried once."""
    task = stored_task(
        status=TaskStatus.PROCESSING,
        next_event_time=deadline,
        type=type,
        processing_tries_count=1,
        processing_node="dead-node",
    )
    return replace(task, **fields)  # type: ignore[arg-type]


class DroppingTriggerer(InMemoryTriggerer):
    """An in-process triggerer that silently loses the first ``drop`` triggers (a lossy broker)."""

    def __init__(self, *, drop: int) -> None:
        super().__init__()
        self.drop = drop
        self.dropped: list[BaseTask] = []

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Lose triggers while ``drop`` lasts, then deliver normally."""
        kept = []
        for task in tasks:
            if self.drop > 0:
                self.drop -= 1
                self.dropped.append(task)
            else:
                kept.append(task)
        await super().trigger(kept)


class ObservedTriggerer(InMemoryTriggerer):
    """An in-process triggerer that tells when a node starts shutting down (stops intake)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = anyio.Event()

    async def stop(self) -> None:
        """Record that shutdown began, then stop."""
        self.stopping.set()
        await super().stop()


def make_service(
    *handlers: TaskHandler,
    dao: InMemoryTaskDAO | None = None,
    triggerer: InMemoryTriggerer | None = None,
    clock: FakeClock | None = None,
    props: TaskProperties | None = None,
) -> TaskService:
    """A TaskService over fresh fakes (or the given ones); nothing is started."""
    return TaskService(
        dao=dao or InMemoryTaskDAO(),
        triggerer=triggerer or InMemoryTriggerer(),
        registry=HandlerRegistry(handlers),
        clock=clock or FakeClock(),
        properties=props or properties(),
    )


def make_executor(
    *handlers: TaskHandler,
    dao: InMemoryTaskDAO,
    clock: FakeClock,
    props: TaskProperties | None = None,
) -> TaskExecutor:
    """A TaskExecutor over the given fakes; start it with ``await tg.start(executor.run)``."""
    return TaskExecutor(
        dao=dao, registry=HandlerRegistry(handlers), clock=clock, properties=props or properties()
    )


def make_resumer(
    *handlers: TaskHandler,
    dao: InMemoryTaskDAO,
    clock: FakeClock,
    triggerer: InMemoryTriggerer | None = None,
    props: TaskProperties | None = None,
    executor: TaskExecutor | None = None,
) -> TaskResumer:
    """A TaskResumer over the given fakes, as another node would run it; call ``run_once()``."""
    return TaskResumer(
        dao=dao,
        triggerer=triggerer or InMemoryTriggerer(),
        registry=HandlerRegistry(handlers),
        clock=clock,
        properties=props or properties(),
        executor=executor,
    )


class FakeNode:
    """One node built by the real composition root over in-memory fakes and a FakeClock.

    ``async with FakeNode(handler, ...) as node:`` starts executor, triggerer and resumer;
    ``node.dao``, ``node.triggerer`` and ``node.clock`` are the typed fakes.
    """

    def __init__(
        self,
        *handlers: TaskHandler,
        props: TaskProperties | None = None,
        dao: InMemoryTaskDAO | None = None,
        triggerer: InMemoryTriggerer | None = None,
        clock: FakeClock | None = None,
        run_workers: bool = True,
    ) -> None:
        self.dao = dao or InMemoryTaskDAO()
        self.triggerer = triggerer or InMemoryTriggerer()
        self.clock = clock or FakeClock()
        self.app = ResilientTask(
            handlers=handlers,
            dao=self.dao,
            triggerer=self.triggerer,
            clock=self.clock,
            properties=props or properties(),
            run_workers=run_workers,
        )

    async def __aenter__(self) -> Self:
        await self.app.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.app.__aexit__(exc_type, exc, tb)

    @property
    def service(self) -> TaskService:
        """The node's task service."""
        return self.app.service

    @property
    def executor(self) -> TaskExecutor:
        """The node's executor."""
        return self.app.executor

    @property
    def resumer(self) -> TaskResumer:
        """The node's resumer (also polling in the background)."""
        return self.app.resumer

    async def add(self, type: str = "work", **fields: object) -> UUID:
        """Add a task and return its id, asserting it was created."""
        result = await self.service.add_task(AddTaskRequest(type=type, **fields))  # type: ignore[arg-type]
        assert result.created
        return result.task_id

    def status(self, task_id: UUID) -> TaskStatus | None:
        """The committed status of a task, None once it is deleted."""
        task = self.dao.tasks.get(task_id)
        return None if task is None else task.status

    def task(self, task_id: UUID) -> Task:
        """The committed task."""
        return self.dao.tasks[task_id]

    async def wait_for(self, task_id: UUID, *statuses: TaskStatus | None) -> Task | None:
        """Wait until the task reaches one of ``statuses``; returns it (None when deleted)."""
        await settle(lambda: self.status(task_id) in statuses)
        return self.dao.tasks.get(task_id)

    async def advance(self, delta: timedelta, *, poll: bool = True) -> None:
        """Move the fake time forward, then (``poll``) run one resumer poll at the new time."""
        await self.clock.advance(delta)
        if poll:
            await self.resumer.run_once()

    async def advance_to(self, when: datetime, *, poll: bool = True) -> None:
        """Move the fake time forward to ``when``; see :meth:`advance`."""
        await self.advance(when - self.clock.now(), poll=poll)


def handler(
    processor: Callable[[Task], object], *, types: Iterable[str] = ("work",), **policies: object
) -> TaskHandler:
    """A keyword-built handler for ``types``."""
    return TaskHandler(types=set(types), processor=processor, **policies)  # type: ignore[arg-type]

"""The task service: add tasks (optionally inside the caller's transaction) and operate on them."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from resilient_task.domain.requests import (
    AddTaskRequest,
    require_time,
    require_version,
)
from resilient_task.domain.results import AddTaskResult, AddTaskResultCode
from resilient_task.domain.task import BaseTask, Task, TaskStatus, status_of
from resilient_task.errors import (
    BackendError,
    TaskNotFoundError,
    TriggerError,
    ValidationError,
    VersionConflictError,
)
from resilient_task.ids import uuid7
from resilient_task.logsetup import task_extra
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.ports.task_dao import TaskChange
from resilient_task.ports.triggerer import Triggerer
from resilient_task.properties import TaskProperties
from resilient_task.service.outage import OutageLog
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO

__all__ = ["HandOver", "TaskService"]

log = logging.getLogger("resilient_task.service")

HandOver = Callable[
    [Sequence[BaseTask], Callable[[Sequence[BaseTask]], Awaitable[None]]], Awaitable[None]
]
"""``hand_over(tasks, on_lost)``: send triggers without waiting for the broker's
acknowledgement; triggers lost later (refused, or not acknowledged in time) are passed to
``on_lost``. Raises TriggerError when they cannot even be handed over. See
``KafkaTriggerer.hand_over``."""


class TaskService:
    """Adds tasks and offers the operator actions; every change is version-checked."""

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        triggerer: Triggerer,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
        poll_only: bool = False,
        observer: Observer = NULL_OBSERVER,
        hand_over: HandOver | None = None,
    ) -> None:
        """Wire the service.

        Args:
            dao: the task store.
            triggerer: sends triggers after commit.
            registry: the handlers (for their expected queue times).
            clock: time source.
            properties: node settings.
            poll_only: no trigger can reach a worker from here (a producer-only node without a
                broker): due tasks are stored as already overdue so that any worker's resumer
                takes them on its next poll, and no trigger is sent.
            observer: told of every task added (see :mod:`resilient_task.ports.observer`).
            hand_over: when given, new (and resumed) tasks' triggers go through it instead of
                ``triggerer.trigger``: the call returns once the transport has them, without
                waiting for the broker's acknowledgement (the tasks are durable once
                committed), and the tasks of triggers lost later are hurried (:meth:`hurry`), so
                polling takes them at once. ``triggers_sent`` then counts triggers handed over.
        """
        self._poll_only = poll_only
        self._dao = dao
        self._triggerer = triggerer
        self._registry = registry
        self._clock = clock
        self._props = properties
        self._observer = observer
        self._broker = OutageLog(log, "trigger broker", observer)
        self._hand_over = hand_over

    async def add_task(
        self, request: AddTaskRequest, *, transaction: object = None
    ) -> AddTaskResult:
        """Store a task; due now -> SUBMITTED and triggered after commit, later -> WAITING.

        Args:
            request: what to run; see :class:`AddTaskRequest`.
            transaction: the caller's open transaction (for PostgreSQL a SQLAlchemy
                ``AsyncConnection`` or ``AsyncSession``). The task then commits or rolls back
                with the caller's business data, and the trigger is sent only after commit.

        Returns:
            The task id and OK, or the existing task's id and ALREADY_EXISTS when the task id or
            ``(type, unique_key)`` is taken.
        """
        return (await self.add_tasks([request], transaction=transaction))[0]

    async def add_tasks(
        self, requests: Iterable[AddTaskRequest], *, transaction: object = None
    ) -> list[AddTaskResult]:
        """Store many tasks in one round trip; results come back in the same order.

        Args:
            requests: any iterable of requests (a list, a generator...); it is read once.
            transaction: as for :meth:`add_task`.

        Raises:
            ValidationError: ``requests`` is not an iterable of :class:`AddTaskRequest` (a
                single request included: use :meth:`add_task`), a payload is over
                ``TaskProperties.max_payload_bytes``, or a pick-up deadline would fall outside
                the storable time range. Nothing is stored then.
        """
        requests = self._checked(requests)
        if not requests:
            return []
        now = self._clock.now()
        tasks = [self._new_task(request, now) for request in requests]
        outcomes = await self._dao.insert_tasks(tasks, transaction=transaction)
        created = [t for t, o in zip(tasks, outcomes, strict=True) if o.created]
        # A store that triggers in the insert itself (InsertOutcome.triggered) already did.
        due = [
            t
            for t, o in zip(tasks, outcomes, strict=True)
            if o.created and not o.triggered and t.status is TaskStatus.SUBMITTED
        ]
        if (sent := sum(o.triggered for o in outcomes)) and not self._poll_only:
            self._observer.triggers_sent(sent)
        for task in created:
            self._observer.task_added(task.type)
            log.info(
                "task %s type=%s added as %s%s",
                task.id,
                task.type,
                task.status.value,
                f" run_after={task.next_event_time.isoformat()}"
                if task.status is TaskStatus.WAITING
                else "",
                extra=task_extra(task),
            )
        for request, outcome in zip(requests, outcomes, strict=True):
            if not outcome.created:
                log.info(
                    "task %s type=%s not added: already exists (unique_key=%r)",
                    outcome.task_id,
                    request.type,
                    request.unique_key,
                )
        if due and not self._poll_only:
            if transaction is None:
                await self._trigger(due)
            else:
                self._dao.after_commit(transaction, _bind(self._trigger, due))
        return [
            AddTaskResult(
                o.task_id, AddTaskResultCode.OK if o.created else AddTaskResultCode.ALREADY_EXISTS
            )
            for o in outcomes
        ]

    def _checked(self, requests: Iterable[AddTaskRequest]) -> Sequence[AddTaskRequest]:
        """``requests`` as a sequence (read once), every item checked."""
        if isinstance(requests, AddTaskRequest):
            raise ValidationError("add_tasks takes an iterable of AddTaskRequest; use add_task")
        if not isinstance(requests, list | tuple):
            try:
                requests = list(requests)
            except TypeError:
                raise ValidationError(
                    f"add_tasks takes an iterable of AddTaskRequest, got {type(requests).__name__}"
                ) from None
        limit = self._props.max_payload_bytes
        for request in requests:
            if not isinstance(request, AddTaskRequest):
                raise ValidationError(f"expected AddTaskRequest, got {type(request).__name__}")
            if len(request.data) > limit:
                raise ValidationError(
                    f"task data is {len(request.data)} bytes; the maximum is {limit} "
                    "(TaskProperties.max_payload_bytes)"
                )
        return requests

    def _new_task(self, request: AddTaskRequest, now: datetime) -> Task:
        run_at = request.run_after_time
        due = run_at is None or run_at <= now
        base_id = request.task_id or uuid7()
        if request.expected_queue_time is not None or not due:
            queue_time = request.expected_queue_time or self._props.expected_queue_time
        else:  # only a due task needs its handler's pick-up deadline now
            header = BaseTask(base_id, 0, request.type, request.sub_type, request.priority)
            queue_time = self._registry.expected_queue_time(header, self._props)
        if due and self._poll_only:
            queue_time = timedelta(0)
        return Task(
            id=base_id,
            type=request.type,
            sub_type=request.sub_type,
            data=request.data,
            priority=request.priority,
            unique_key=request.unique_key,
            status=TaskStatus.SUBMITTED if due else TaskStatus.WAITING,
            next_event_time=_after(now, queue_time) if due or run_at is None else run_at,
            created_at=now,
            updated_at=now,
        )

    async def _trigger(self, tasks: Sequence[Task]) -> None:
        """Trigger; if the broker fails, make the tasks due for polling right away."""
        try:
            if self._hand_over is None:
                await self._triggerer.trigger([t.base for t in tasks])
            else:
                await self._hand_over([t.base for t in tasks], self._trigger_lost)
            self._broker.succeeded()
            self._observer.triggers_sent(len(tasks))
            return
        except (TriggerError, BackendError) as exc:
            self._broker.failed(exc, f"triggering {len(tasks)} new task(s)")
            self._observer.triggers_failed(len(tasks))
        await self.hurry(tasks)

    async def _trigger_lost(self, tasks: Sequence[BaseTask]) -> None:
        """Handed-over triggers the broker lost (the transport logged which): hurry them."""
        self._observer.triggers_failed(len(tasks))
        await self.hurry(tasks)

    async def hurry(self, tasks: Sequence[Task | BaseTask]) -> None:
        """Make untriggered SUBMITTED tasks due for polling now (their trigger was lost).

        The pick-up deadline of each (at the version given) is pulled to now, so every node's
        resumer takes them on its next poll. A task that moved on meanwhile (grabbed through
        another path) is left alone: the write is version-checked. Never raises; a store
        failure is logged, and the tasks then run after their expected queue time.
        """
        try:
            # Only a trigger's header (a broker's late failure) is read back: a rare path.
            full = [t if isinstance(t, Task) else await self._dao.get_task(t.id) for t in tasks]
            now = self._clock.now()
            # Pull the pick-up deadline to now: every node's resumer takes them on its next poll.
            await self._dao.apply(
                [
                    TaskChange(t.resubmit(now=now, deadline=now), b.version)
                    for t, b in zip(full, tasks, strict=True)
                    if t is not None and t.version == b.version
                    if t.status is TaskStatus.SUBMITTED
                ]
            )
        except BackendError as exc:
            log.warning(
                "could not hurry %d untriggered task(s) (%s); they run after their "
                "expected queue time",
                len(tasks),
                exc,
            )

    async def get_task(self, task_id: UUID) -> Task | None:
        """The task with its payload, or None when there is no such task."""
        _require_uuid(task_id)
        return await self._dao.get_task(task_id)

    async def find_tasks(
        self, *, status: TaskStatus | None = None, type: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks by status and/or type, oldest ``next_event_time`` first.

        Raises:
            ValidationError: ``limit`` is not a positive int (``"10"`` included), ``status`` is
                not a :class:`TaskStatus` or one's name (``"BOGUS"``), or ``type`` is not a str.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            shown = (
                limit
                if isinstance(limit, int) and limit > -(10**9)
                else builtins.type(limit).__name__
            )
            raise ValidationError(f"limit must be a positive int, got {shown}")
        if status is not None:
            status = status_of(status)  # ValidationError for an unknown name
        if type is not None and not isinstance(type, str):
            raise ValidationError(f"type must be a str or None, got {builtins.type(type).__name__}")
        return await self._dao.find_tasks(status=status, type=type, limit=limit)

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status."""
        return await self._dao.count_by_status()

    async def resume_task(self, task_id: UUID, *, version: int | None = None) -> Task:
        """Run a WAITING, SUBMITTED, ERROR (or stuck PROCESSING) task now."""
        now = self._clock.now()
        task = await self._change(
            task_id,
            version,
            lambda t: t.resume(
                now=now,
                deadline=_after(now, self._registry.expected_queue_time(t.base, self._props)),
            ),
        )
        await self._trigger([task])
        return task

    async def mark_as_failed(
        self, task_id: UUID, *, version: int | None = None, reason: str | None = None
    ) -> Task:
        """Acknowledge an ERROR task as FAILED (final), with an optional ``reason`` (str)."""
        if reason is not None and not isinstance(reason, str):
            raise ValidationError(f"reason must be a str or None, got {type(reason).__name__}")
        now = self._clock.now()
        return await self._change(task_id, version, lambda t: t.mark_failed(now=now, reason=reason))

    async def cancel_task(self, task_id: UUID, *, version: int | None = None) -> Task:
        """Cancel a WAITING task (final)."""
        now = self._clock.now()
        return await self._change(task_id, version, lambda t: t.cancel(now=now))

    async def reschedule_task(
        self, task_id: UUID, run_at: datetime, *, version: int | None = None
    ) -> Task:
        """Move a WAITING task to another time (timezone-aware, within the storable range).

        Raises:
            ValidationError: ``run_at`` is naive or outside 0001-01-02..9999-12-30 UTC.
        """
        require_time("run_at", run_at)
        now = self._clock.now()
        return await self._change(task_id, version, lambda t: t.reschedule(now=now, run_at=run_at))

    async def _change(
        self, task_id: UUID, version: int | None, transition: Callable[[Task], Task]
    ) -> Task:
        _require_uuid(task_id)
        if version is not None:
            require_version("version", version)  # "1" is an error, not a version conflict
        task = await self._dao.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        if version is not None and task.version != version:
            raise VersionConflictError(task_id, version)
        new = transition(task)
        if not (await self._dao.apply([TaskChange(new, task.version)]))[0]:
            raise VersionConflictError(task_id, task.version)
        log.info(
            "task %s type=%s %s -> %s (operator)",
            task.id,
            task.type,
            task.status.value,
            new.status.value,
        )
        return new


def _after(now: datetime, duration: timedelta) -> datetime:
    """``now + duration`` if storable; ValidationError (not OverflowError) otherwise."""
    try:
        return require_time("the pick-up deadline", now + duration)
    except OverflowError:
        raise ValidationError(
            f"the pick-up deadline (now + {duration}) is outside the storable time range"
        ) from None


def _require_uuid(task_id: object) -> None:
    if not isinstance(task_id, UUID):
        raise ValidationError(f"task id must be a uuid.UUID, got {type(task_id).__name__}")


def _bind(func: Callable[[Sequence[Task]], Any], tasks: Sequence[Task]) -> Callable[[], Any]:
    """An after-commit callback that never raises into the caller's commit.

    The tasks are committed by then; a failure here only delays them until their pick-up
    deadline, when the resumer triggers them again.
    """

    async def call() -> None:
        try:
            await func(tasks)
        except Exception:
            log.exception(
                "triggering %d task(s) after commit failed; the resumer will "
                "trigger them after their expected queue time",
                len(tasks),
            )

    return call

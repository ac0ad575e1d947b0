"""The operator service: what the ``resilient-task tasks`` commands and the dashboard do.

Reads go through :class:`~resilient_task.ports.task_queries.TaskQueries`; every change goes
through the :class:`~resilient_task.service.task_service.TaskService` action of the same
name, which is version-checked. An action on many tasks never stops at the first refusal:
each task gets its own :class:`Outcome`::

    OK           done (or, with dry_run, would be done)
    NOT_FOUND    no task has that id
    CHANGED      the task is not at the version given (or seen when it was selected)
    NOT_ALLOWED  the lifecycle table forbids the action in the task's status

A bulk action first selects tasks (by status, type, age and limit) and then acts on each at
the version it was selected at, so a task that moved on meanwhile is reported CHANGED and left
alone. A store failure (:class:`~resilient_task.errors.BackendError`) is not an outcome: it
ends the call, and the tasks already changed stay changed (running the same bulk action again
is safe: it selects only what is still in the given status).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import anyio

from resilient_task.domain.requests import require_duration, require_time, require_version
from resilient_task.domain.task import TRANSITIONS, Task, TaskStatus, Transition
from resilient_task.errors import (
    InvalidTransitionError,
    ResilientTaskError,
    TaskNotFoundError,
    ValidationError,
    VersionConflictError,
)
from resilient_task.ports.clock import Clock
from resilient_task.ports.task_queries import TaskQueries, TaskQuery
from resilient_task.service.task_service import TaskService

__all__ = ["Action", "ActionResult", "Outcome", "TaskCounts", "TaskOperator"]

OVERDUE_STATUSES = (TaskStatus.SUBMITTED, TaskStatus.PROCESSING)
"""The statuses whose ``next_event_time`` is a deadline an operator watches."""

_CONCURRENCY = 8
"""Tasks acted on at once in a bulk action: fewer round trips in a row, a small pool share."""


class Outcome(enum.StrEnum):
    """What an action did to one task; see the module docstring."""

    OK = "OK"
    NOT_FOUND = "NOT_FOUND"
    CHANGED = "CHANGED"
    NOT_ALLOWED = "NOT_ALLOWED"


class Action(enum.StrEnum):
    """The operator actions, each a transition of the lifecycle table."""

    RESUME = "resume"
    FAIL = "fail"
    CANCEL = "cancel"
    RESCHEDULE = "reschedule"

    @property
    def transition(self) -> Transition:
        """The lifecycle transition this action makes."""
        return _TRANSITIONS[self]


_TRANSITIONS = {
    Action.RESUME: Transition.RESUME,
    Action.FAIL: Transition.MARK_FAILED,
    Action.CANCEL: Transition.CANCEL,
    Action.RESCHEDULE: Transition.RESCHEDULE,
}


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of one action on one task.

    Attributes:
        task_id: the task acted on.
        outcome: what happened (or, with ``dry_run``, would happen).
        task: OK: the task after the change (with ``dry_run``: as it is now); NOT_ALLOWED and
            CHANGED found by reading: the task as found; otherwise None.
        detail: one line saying why, for anything but OK.
        dry_run: nothing was written.
    """

    task_id: UUID
    outcome: Outcome
    task: Task | None = None
    detail: str = ""
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class TaskCounts:
    """A snapshot of the store for operators.

    Attributes:
        by_status: tasks per status, every status present.
        by_type: tasks per (status, type), when asked for; else None.
        oldest_overdue: for SUBMITTED and PROCESSING, how long ago the oldest task's deadline
            passed (None when no task is overdue).
        at: when the snapshot was taken (the operator's clock).
    """

    by_status: dict[TaskStatus, int]
    by_type: dict[tuple[TaskStatus, str], int] | None
    oldest_overdue: dict[TaskStatus, timedelta | None]
    at: datetime


class TaskOperator:
    """Lists, counts, shows and acts on tasks for operators.

    Args:
        service: the task service whose version-checked actions make every change.
        queries: the operators' read port.
        clock: the time source (for ages and ``older_than``).
    """

    def __init__(self, *, service: TaskService, queries: TaskQueries, clock: Clock) -> None:
        self._service = service
        self._queries = queries
        self._clock = clock

    def now(self) -> datetime:
        """The operator's current time (``+10m`` and ``older_than`` count from it)."""
        return self._clock.now()

    # -- reads ----------------------------------------------------------------------------

    def query(
        self,
        *,
        statuses: Iterable[TaskStatus] = (),
        types: Iterable[str] = (),
        older_than: timedelta | None = None,
        limit: int = 100,
    ) -> TaskQuery:
        """The :class:`TaskQuery` for these filters, ``older_than`` counted back from now.

        ``older_than`` keeps tasks whose ``next_event_time`` is at least that long ago: for
        ERROR and final statuses, the time they reached it; for SUBMITTED and PROCESSING,
        their deadline; for WAITING, their run time.

        Raises:
            ValidationError: a bad filter (see :class:`TaskQuery`) or a negative or huge
                ``older_than``.
        """
        due_before = None
        if older_than is not None:
            if older_than != timedelta(0):
                require_duration("older_than", older_than)
            due_before = self._clock.now() - older_than
        return TaskQuery(
            statuses=tuple(statuses), types=tuple(types), due_before=due_before, limit=limit
        )

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        """The tasks ``query`` selects, earliest ``next_event_time`` first, without payload."""
        return await self._queries.list_tasks(query)

    async def show(self, task_id: UUID) -> Task:
        """The task with its payload.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        task = await self._service.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def count(self, *, by_type: bool = False) -> TaskCounts:
        """Counts by status (and by type), and the age of the oldest overdue tasks."""
        now = self._clock.now()
        by_status = await self._queries.count_by_status()
        types = await self._queries.count_by_type() if by_type else None
        overdue: dict[TaskStatus, timedelta | None] = {}
        for status in OVERDUE_STATUSES:
            oldest = await self._queries.oldest_overdue(status, now=now)
            overdue[status] = None if oldest is None else now - oldest
        return TaskCounts(by_status, types, overdue, now)

    # -- actions --------------------------------------------------------------------------

    async def act(
        self,
        action: Action,
        task_ids: Sequence[UUID],
        *,
        version: int | None = None,
        run_at: datetime | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> list[ActionResult]:
        """Apply ``action`` to each task, in order; one result per id.

        Args:
            action: what to do.
            task_ids: the tasks; a repeated id is acted on (and reported) once.
            version: act only on tasks at this version (what the operator saw).
            run_at: the new run time; required for RESCHEDULE, refused otherwise.
            reason: recorded as ``last_error`` by FAIL (None keeps the task's own).
            dry_run: report what would happen; write nothing.

        Raises:
            ValidationError: a bad id, version or ``run_at``.
            BackendError: the store failed; earlier tasks stay changed.
        """
        if version is not None:
            require_version("version", version)
        self._check_arguments(action, run_at, reason)
        for task_id in task_ids:
            if not isinstance(task_id, UUID):
                raise ValidationError(f"task id must be a uuid.UUID, got {type(task_id).__name__}")
        return await self._each(
            [(task_id, version) for task_id in dict.fromkeys(task_ids)],
            lambda task_id, expected: self._act_one(
                action, task_id, expected, run_at, reason, dry_run
            ),
        )

    async def act_on_selection(
        self,
        action: Action,
        query: TaskQuery,
        *,
        run_at: datetime | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> list[ActionResult]:
        """Select tasks with ``query``, then apply ``action`` to each at the version selected.

        Raises:
            ValidationError: a bad ``run_at`` or ``reason``.
            BackendError: the store failed; earlier tasks stay changed.
        """
        self._check_arguments(action, run_at, reason)
        selected = await self._queries.list_tasks(query)
        if dry_run:
            return [self._would(action, task, task.version) for task in selected]
        return await self._each(
            [(task.id, task.version) for task in selected],
            lambda task_id, expected: self._act_one(
                action, task_id, expected, run_at, reason, False
            ),
        )

    @staticmethod
    def _check_arguments(action: Action, run_at: datetime | None, reason: str | None) -> None:
        if not isinstance(action, Action):
            raise ValidationError(f"action must be an Action, got {type(action).__name__}")
        if action is Action.RESCHEDULE:
            if run_at is None:
                raise ValidationError("reschedule needs run_at")
            require_time("run_at", run_at)
        elif run_at is not None:
            raise ValidationError(f"run_at is only for reschedule, not {action.value}")
        if reason is not None and (action is not Action.FAIL or not isinstance(reason, str)):
            raise ValidationError("reason is a str, and only for fail")

    @staticmethod
    async def _each(
        items: Sequence[tuple[UUID, int | None]],
        act: Callable[[UUID, int | None], Awaitable[ActionResult]],
    ) -> list[ActionResult]:
        """``act`` on every item, a few at a time; results in the order of ``items``.

        After a failure (a store error) no further item is started; those already running
        finish, and the first failure is raised as itself (not in an exception group).
        """
        results: list[ActionResult | None] = [None] * len(items)
        limiter = anyio.CapacityLimiter(_CONCURRENCY)
        failures: list[ResilientTaskError] = []

        async def one(index: int, task_id: UUID, expected: int | None) -> None:
            async with limiter:
                if failures:
                    return
                try:
                    results[index] = await act(task_id, expected)
                except ResilientTaskError as exc:
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            for index, (task_id, expected) in enumerate(items):
                tg.start_soon(one, index, task_id, expected)
        if failures:
            raise failures[0]
        return [r for r in results if r is not None]

    async def _act_one(
        self,
        action: Action,
        task_id: UUID,
        version: int | None,
        run_at: datetime | None,
        reason: str | None,
        dry_run: bool,
    ) -> ActionResult:
        if dry_run:
            task = await self._service.get_task(task_id)
            if task is None:
                return ActionResult(task_id, Outcome.NOT_FOUND, None, "no such task", True)
            return self._would(action, task, version)
        try:
            if action is Action.RESUME:
                task = await self._service.resume_task(task_id, version=version)
            elif action is Action.FAIL:
                task = await self._service.mark_as_failed(task_id, version=version, reason=reason)
            elif action is Action.CANCEL:
                task = await self._service.cancel_task(task_id, version=version)
            else:
                assert run_at is not None  # checked by _check_arguments
                task = await self._service.reschedule_task(task_id, run_at, version=version)
        except TaskNotFoundError:
            return ActionResult(task_id, Outcome.NOT_FOUND, None, "no such task")
        except VersionConflictError as exc:
            return ActionResult(task_id, Outcome.CHANGED, None, _changed(exc.expected_version))
        except InvalidTransitionError as exc:
            detail = f"cannot {action.value} a task in status {exc.status}"
            return ActionResult(task_id, Outcome.NOT_ALLOWED, None, detail)
        return ActionResult(task_id, Outcome.OK, task)

    @staticmethod
    def _would(action: Action, task: Task, version: int | None) -> ActionResult:
        """What ``action`` would do to ``task`` as read (dry run)."""
        if version is not None and task.version != version:
            detail = f"{_changed(version)}: it is at version {task.version}"
            return ActionResult(task.id, Outcome.CHANGED, task, detail, True)
        allowed, _ = TRANSITIONS[action.transition]
        if task.status not in allowed:
            detail = f"cannot {action.value} a task in status {task.status}"
            return ActionResult(task.id, Outcome.NOT_ALLOWED, task, detail, True)
        return ActionResult(task.id, Outcome.OK, task, "", True)


def _changed(expected: int) -> str:
    return f"changed since it was read (expected version {expected})"

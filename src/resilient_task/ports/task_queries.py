"""The operators' read port: filtered listings, counts and the oldest overdue task.

The engine's own reads and writes go through :class:`~resilient_task.ports.task_dao.TaskDAO`;
what operators look at (the ``resilient-task tasks`` commands, the dashboard) goes through
this port, so neither speaks SQL of its own.

Contract (checked by ``resilient_task.testing.task_queries_contract`` against every adapter):

- :meth:`TaskQueries.list_tasks` returns at most ``query.limit`` tasks matching every filter
  of the :class:`TaskQuery` (any of its statuses, any of its types, ``next_event_time``
  strictly before ``due_before``), ordered by ``next_event_time``, then ``priority``, then id.
  Listed tasks carry no payload (``data == b""``): it may hold personal data and is read only
  on request, through ``TaskDAO.get_task``. Nor do they carry their traceback
  (``last_traceback is None``; up to 8 KiB each): ``get_task`` reads it too.
- Counts are exact at the time of the read. :meth:`TaskQueries.count_by_status` has every
  status (zero when none); :meth:`TaskQueries.count_by_type` has only the pairs that exist.
- :meth:`TaskQueries.oldest_overdue` is the earliest ``next_event_time`` strictly before
  ``now`` among the tasks in ``status`` (for SUBMITTED: the pick-up deadline; for
  PROCESSING: the processing deadline), or None.
- Each read is bounded: by its limit, or by one index range per status (PostgreSQL's
  ``(status, next_event_time)`` index). Counting reads every task once.
- Invalid filters raise :class:`~resilient_task.errors.ValidationError` when the
  :class:`TaskQuery` is built, so every adapter refuses the same input; driver failures
  surface as :class:`~resilient_task.errors.BackendError` subclasses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from resilient_task.domain.requests import MAX_TYPE_LENGTH, require_time, text_problem
from resilient_task.domain.task import Task, TaskStatus, status_of
from resilient_task.errors import ValidationError

__all__ = ["MAX_LIST_LIMIT", "TaskQueries", "TaskQuery"]

MAX_LIST_LIMIT = 10_000
"""The most tasks one listing returns."""


def _statuses(values: Iterable[TaskStatus | str]) -> tuple[TaskStatus, ...]:
    found: list[TaskStatus] = []
    for value in values:
        status = status_of(value)
        if status not in found:
            found.append(status)
    return tuple(found)


def _types(values: Iterable[str]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        problem = text_problem(value, MAX_TYPE_LENGTH)
        if problem is not None:
            raise ValidationError(f"type {problem}")
        if value not in found:
            found.append(value)
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskQuery:
    """Which tasks to list; an empty ``statuses`` or ``types`` means any.

    Args:
        statuses: the statuses to list (TaskStatus values or their names).
        types: the task types to list (exact matches).
        due_before: only tasks whose ``next_event_time`` is strictly earlier (aware).
        limit: the most tasks returned, from 0 to :data:`MAX_LIST_LIMIT`.

    Raises:
        ValidationError: an unknown status, a type no task can have (not a str, blank, too
            long, NUL, a lone surrogate), a naive or unstorable time, or a bad limit.
    """

    statuses: tuple[TaskStatus, ...] = ()
    types: tuple[str, ...] = ()
    due_before: datetime | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.statuses, str) or isinstance(self.types, str):
            raise ValidationError("statuses and types must be collections, not a single str")
        object.__setattr__(self, "statuses", _statuses(self.statuses))
        object.__setattr__(self, "types", _types(self.types))
        if self.due_before is not None:
            require_time("due_before", self.due_before)
        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ValidationError(f"limit must be an int, got {type(limit).__name__}")
        if not 0 <= limit <= MAX_LIST_LIMIT:
            shown = limit if abs(limit) < 10**12 else "a huge int"
            raise ValidationError(f"limit must be from 0 to {MAX_LIST_LIMIT}, got {shown}")

    @property
    def listed_statuses(self) -> tuple[TaskStatus, ...]:
        """The statuses to read: the given ones, or every status."""
        return self.statuses or tuple(TaskStatus)

    def matches(self, task: Task) -> bool:
        """Whether ``task`` passes every filter (the limit aside)."""
        return (
            task.status in self.listed_statuses
            and (not self.types or task.type in self.types)
            and (self.due_before is None or task.next_event_time < self.due_before)
        )


class TaskQueries(Protocol):
    """Reads for operators. See the module docstring for the contract."""

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        """Tasks matching ``query``, earliest first, without payload or traceback."""
        ...

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status (every status present, zero when none)."""
        ...

    async def count_by_type(self) -> dict[tuple[TaskStatus, str], int]:
        """How many tasks of each type are in each status (only pairs that exist)."""
        ...

    async def oldest_overdue(self, status: TaskStatus, *, now: datetime) -> datetime | None:
        """The earliest ``next_event_time`` before ``now`` in ``status``, or None."""
        ...

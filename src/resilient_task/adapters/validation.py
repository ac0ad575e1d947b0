"""Checks of the task store's arguments, shared by every TaskDAO adapter.

Both stores run them before anything is written, so the in-memory store refuses exactly what
PostgreSQL refuses, with the same ValidationErrors.

Lengths are bounded as in :mod:`resilient_task.domain.requests` (the unique-key index has a
size limit, and the limits are documented), and times must be timezone-aware: PostgreSQL
would read a naive time in the session's time zone.
"""

from __future__ import annotations

from datetime import datetime

from resilient_task.domain.requests import MAX_TYPE_LENGTH, MAX_UNIQUE_KEY_LENGTH, require_aware
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import ValidationError
from resilient_task.ports.task_dao import TaskChange

__all__ = ["check_change", "check_limit", "check_new", "check_time"]

_INSERTABLE = frozenset({TaskStatus.WAITING, TaskStatus.SUBMITTED})


def check_time(name: str, value: datetime) -> None:
    """Raise ValidationError unless ``value`` is a timezone-aware datetime."""
    require_aware(name, value)


def check_limit(limit: int) -> int:
    """``limit`` if it is a non-negative int, else ValidationError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError(f"limit must be a non-negative int, got {limit!r}")
    return limit


def _check_times(task: Task) -> None:
    check_time("next_event_time", task.next_event_time)
    check_time("created_at", task.created_at)
    check_time("updated_at", task.updated_at)


def _check_length(name: str, value: str | None, maximum: int) -> None:
    if value is not None and len(value) > maximum:
        raise ValidationError(f"{name} is {len(value)} characters long; the maximum is {maximum}")


def check_new(task: Task) -> None:
    """Raise ValidationError unless ``task`` may be inserted.

    That is WAITING or SUBMITTED at version 0, never run: no tries, recoveries, node or error.
    """
    _check_times(task)
    if task.status not in _INSERTABLE or task.version != 0:
        raise ValidationError(
            f"new tasks must be WAITING or SUBMITTED at version 0, "
            f"got {task.status} at version {task.version}"
        )
    if task.processing_tries_count or task.recovery_count or task.processing_node is not None:
        raise ValidationError("new tasks must not have run: no tries, recoveries or node")
    if task.last_error is not None:
        raise ValidationError("new tasks must not carry a last_error")
    _check_length("type", task.type, MAX_TYPE_LENGTH)
    _check_length("sub_type", task.sub_type, MAX_TYPE_LENGTH)
    _check_length("unique_key", task.unique_key, MAX_UNIQUE_KEY_LENGTH)
    if not isinstance(task.data, bytes):
        raise ValidationError(f"data must be bytes, got {type(task.data).__name__}")


def check_change(change: TaskChange) -> None:
    """Raise ValidationError when ``change`` carries naive times."""
    _check_times(change.task)

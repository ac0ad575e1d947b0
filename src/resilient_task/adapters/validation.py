"""Checks of the task store's arguments, shared by every TaskDAO adapter.

Both stores run them before anything is written, so the in-memory store refuses exactly what
PostgreSQL refuses, with the same ValidationErrors.

The rules are :mod:`resilient_task.domain.requests`': texts within their lengths (the
unique-key index has a size limit, and the limits are documented), without NUL characters or
lone surrogates (PostgreSQL's text cannot hold them; the driver would raise a raw
UnicodeEncodeError); times timezone-aware (PostgreSQL would read a naive time in the
session's time zone) and within the range every session can read back (PostgreSQL stores
year 10000 in UTC, which no Python datetime can hold, and every later read of the row fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from resilient_task.domain.requests import (
    BLANK,
    MAX_TYPE_LENGTH,
    MAX_UNIQUE_KEY_LENGTH,
    check_text,
    require_time,
    text_problem,
)
from resilient_task.domain.task import Task, TaskStatus, status_of
from resilient_task.errors import ValidationError
from resilient_task.ports.task_dao import TaskChange

__all__ = [
    "check_change",
    "check_deadlines",
    "check_filters",
    "check_limit",
    "check_new",
    "check_time",
]

_INSERTABLE = frozenset({TaskStatus.WAITING, TaskStatus.SUBMITTED})


def check_time(name: str, value: datetime) -> None:
    """Raise ValidationError unless ``value`` is aware and within the storable range."""
    require_time(name, value)


def check_deadlines(deadlines: Mapping[str, datetime] | None) -> dict[str, datetime]:
    """``resubmit_overdue``'s deadlines by type, as a dict; ValidationError for a bad time."""
    per_type = dict(deadlines or {})
    for at in per_type.values():
        check_time("deadlines", at)
    return per_type


def check_limit(limit: int) -> int:
    """``limit`` if it is a non-negative int, else ValidationError."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValidationError(f"limit must be a non-negative int, got {type(limit).__name__}")
    if limit < 0:
        raise ValidationError(f"limit must be a non-negative int, got {max(limit, -(10**9))}")
    return limit


# The last time and type found valid. A batch of new tasks shares one ``now`` and usually one
# type: each distinct object is checked once. Both are immutable, and a reference is kept, so
# ``is`` can never match another object; a race between threads only checks one again.
_valid_time: object = None
_valid_type: object = None


def _check_times(task: Task) -> None:
    global _valid_time
    for name, value in (
        ("next_event_time", task.next_event_time),
        ("created_at", task.created_at),
        ("updated_at", task.updated_at),
    ):
        if value is not _valid_time:
            check_time(name, value)
            _valid_time = value


def check_filters(status: TaskStatus | str | None, type_: object) -> TaskStatus | None:
    """The status filter of ``find_tasks`` as a TaskStatus; ValidationError for bad filters.

    An unknown status (``"BOGUS"``) and a type that is not text PostgreSQL can hold (not a
    ``str``, a NUL character, a lone surrogate) are refused, rather than matching nothing in
    one store and failing in the other's driver. Any other type (blank, over-long) is a valid
    filter that matches nothing.
    """
    if type_ is not None:
        if not isinstance(type_, str):
            raise ValidationError(f"type must be a str or None, got {type(type_).__name__}")
        problem = text_problem(type_, len(type_))
        if problem is not None and problem != BLANK:
            raise ValidationError(f"type {problem}")
    return None if status is None else status_of(status)


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
    if task.last_traceback is not None:
        raise ValidationError("new tasks must not carry a last_traceback")
    global _valid_type
    if task.type is not _valid_type:
        check_text("type", task.type, MAX_TYPE_LENGTH, required=True)
        _valid_type = task.type
    check_text("sub_type", task.sub_type, MAX_TYPE_LENGTH, required=False)
    check_text("unique_key", task.unique_key, MAX_UNIQUE_KEY_LENGTH, required=False)
    if not isinstance(task.data, bytes):
        raise ValidationError(f"data must be bytes, got {type(task.data).__name__}")


def check_change(change: TaskChange) -> None:
    """Raise ValidationError when ``change`` carries naive or unstorable times."""
    _check_times(change.task)

"""Checking the fields of a decoded trigger; shared by the Kafka and NOTIFY triggerers.

A trigger is a hint from outside the process: any malformed field makes the whole reference
``None`` (skipped and logged by the caller), never an exception. The rules are the stores'
(:mod:`resilient_task.domain.requests`), so a reference that passes names a task that could
exist, and its values cannot fail a grab:

- id: a UUID as 32 hex digits or in the canonical 8-4-4-4-12 form (nothing else ``UUID()``
  would accept, such as braces, ``urn:uuid:`` or non-ASCII digits);
- version: an ``int`` (not a ``bool``) from 0 to 2**63-1, PostgreSQL's bigint;
- type and sub-type: valid task types (non-blank, at most 250 characters, no NUL, no lone
  surrogate); the sub-type may be null;
- priority: an ``int`` from 0 to 9.
"""

from __future__ import annotations

from typing import TypeGuard
from uuid import UUID

from resilient_task.domain.requests import (
    MAX_TYPE_LENGTH,
    priority_problem,
    text_problem,
    version_problem,
)
from resilient_task.domain.task import BaseTask
from resilient_task.logtext import loggable

__all__ = ["is_int", "read_reference", "task_reference"]

_UUID_LENGTHS = frozenset({32, 36})


def task_reference(
    task_id: object, version: object, type_: object, sub_type: object, priority: object
) -> BaseTask | None:
    """The task these decoded fields refer to, or ``None`` if any of them is malformed."""
    found = read_reference(task_id, version, type_, sub_type, priority)
    return found if isinstance(found, BaseTask) else None


def read_reference(
    task_id: object, version: object, type_: object, sub_type: object, priority: object
) -> BaseTask | str:
    """The task these decoded fields refer to, or why they refer to none (log-safe text)."""
    uuid = _uuid(task_id)
    if uuid is None:
        return f"id {loggable(task_id, 80)} is not a UUID"
    problem = version_problem(version)
    if problem:
        return f"version {problem}"
    problem = text_problem(type_, MAX_TYPE_LENGTH)
    if problem:
        return f"type {problem}"
    if sub_type is not None:
        problem = text_problem(sub_type, MAX_TYPE_LENGTH)
        if problem:
            return f"sub_type {problem}"
    problem = priority_problem(priority)
    if problem:
        return f"priority {problem}"
    # The checks above made these the types BaseTask declares.
    return BaseTask(uuid, version, type_, sub_type, priority)  # type: ignore[arg-type]


def _uuid(value: object) -> UUID | None:
    if not (isinstance(value, str) and len(value) in _UUID_LENGTHS and value.isascii()):
        return None
    try:
        uuid = UUID(value)
    except ValueError:
        return None
    # UUID() also takes "+", "_" and whitespace inside (int() does); only the two forms we write.
    canonical = uuid.hex if len(value) == 32 else str(uuid)
    return uuid if value.lower() == canonical else None


def is_int(value: object) -> TypeGuard[int]:
    """An ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)

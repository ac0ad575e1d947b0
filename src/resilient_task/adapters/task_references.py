"""Checking the fields of a decoded trigger; shared by the Kafka and NOTIFY triggerers.

A trigger is a hint from outside the process: any malformed field makes the whole reference
``None`` (skipped and logged by the caller), never an exception.
"""

from __future__ import annotations

from typing import TypeGuard
from uuid import UUID

from resilient_task.domain.task import BaseTask

__all__ = ["is_int", "task_reference"]


def task_reference(
    task_id: object, version: object, type_: object, sub_type: object, priority: object
) -> BaseTask | None:
    """The task these decoded fields refer to, or ``None`` if any of them is malformed."""
    if not (isinstance(task_id, str) and is_int(version) and is_int(priority)):
        return None
    if not (isinstance(type_, str) and type_) or not (
        sub_type is None or isinstance(sub_type, str)
    ):
        return None
    try:
        uuid = UUID(task_id)
    except ValueError:
        return None
    return BaseTask(uuid, version, type_, sub_type, priority)


def is_int(value: object) -> TypeGuard[int]:
    """An ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)

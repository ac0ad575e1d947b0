"""What processors return and what adding a task answers."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from uuid import UUID

__all__ = ["AddTaskResult", "AddTaskResultCode", "ProcessResult"]


class ProcessResult(enum.Enum):
    """What a processor returns. Raising an exception means: failed, ask the retry policy."""

    DONE = "DONE"
    """Finished: the task becomes DONE."""
    DONE_AND_DELETE = "DONE_AND_DELETE"
    """Finished: the task row is deleted."""
    COMMIT_AND_RETRY = "COMMIT_AND_RETRY"
    """Commit this run and schedule the next through the retry policy (repeating jobs)."""


class AddTaskResultCode(enum.Enum):
    """Whether ``add_task`` created a task."""

    OK = "OK"
    ALREADY_EXISTS = "ALREADY_EXISTS"


@dataclass(frozen=True, slots=True)
class AddTaskResult:
    """The id of the task (new or existing) and whether it was created."""

    task_id: UUID
    result: AddTaskResultCode

    @property
    def created(self) -> bool:
        """True when this call created the task."""
        return self.result is AddTaskResultCode.OK

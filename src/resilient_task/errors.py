"""Every exception resilient-task raises, in one tree.

::

    ResilientTaskError
    ├── ValidationError                 bad input from the caller (ValueError too)
    ├── TaskNotFoundError               an operator action named an unknown task id
    ├── InvalidTransitionError          a status change the lifecycle table forbids
    ├── VersionConflictError            the task changed since it was read (stale version)
    ├── ConfigurationError              an impossible setting or a missing adapter
    ├── SchemaVersionError              the database schema is missing or newer than this code
    ├── ProcessingTimeoutError          a processor overran its timeout (also a TimeoutError)
    └── BackendError                    storage or broker failure; ``transient``: a retry may help
        ├── BackendUnavailableError     cannot reach PostgreSQL / Kafka right now (transient)
        └── TriggerError                a trigger was not delivered; the task stays stored

Adapters translate every driver exception into one of these at a single choke point
(``raise BackendUnavailableError(...) from exc``) so ``__cause__`` keeps the original.

One rule for bad caller input: it is a :class:`ValidationError`, whether the value or its type
is wrong (``find_tasks(limit="10")``, ``add_tasks(single_request)``, ``resume_task(id,
version="1")``, ``find_tasks(status="BOGUS")``, a lone surrogate in a task type, a time that
would be year 10000 in UTC), raised before anything is stored and by every store alike; never
a bare ``TypeError``, ``OverflowError``, ``UnicodeEncodeError`` or driver error.
"""

from __future__ import annotations

from uuid import UUID

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigurationError",
    "InvalidTransitionError",
    "ProcessingTimeoutError",
    "ResilientTaskError",
    "SchemaVersionError",
    "TaskNotFoundError",
    "TriggerError",
    "ValidationError",
    "VersionConflictError",
]


class ResilientTaskError(Exception):
    """Base class of every error raised by resilient-task."""


class ValidationError(ResilientTaskError, ValueError):
    """The caller passed a value resilient-task cannot accept (empty type, naive datetime...).

    Also raised for an argument of the wrong type (see the module docstring).
    """


class TaskNotFoundError(ResilientTaskError, LookupError):
    """No task has the given id."""

    def __init__(self, task_id: UUID) -> None:
        super().__init__(f"task {task_id} does not exist")
        self.task_id = task_id


class InvalidTransitionError(ResilientTaskError):
    """The lifecycle table does not allow this status change."""

    def __init__(self, action: str, status: object, task_id: UUID | None = None) -> None:
        where = f"task {task_id}" if task_id else "task"
        super().__init__(f"cannot {action} {where} in status {status}")
        self.action = action
        self.status = status
        self.task_id = task_id


class VersionConflictError(ResilientTaskError):
    """The task's stored version differs from the one the caller holds."""

    def __init__(self, task_id: UUID, expected_version: int) -> None:
        super().__init__(
            f"task {task_id} changed concurrently (expected version {expected_version})"
        )
        self.task_id = task_id
        self.expected_version = expected_version


class ConfigurationError(ResilientTaskError):
    """A setting is invalid or the composition is incomplete."""


class SchemaVersionError(ConfigurationError):
    """The database schema is missing, outdated or newer than this version of the code."""


class ProcessingTimeoutError(ResilientTaskError, TimeoutError):
    """A processor ran past its processing policy's timeout and was cancelled."""


class BackendError(ResilientTaskError):
    """A storage or broker operation failed.

    Attributes:
        transient: True when retrying the same operation later may succeed
            (connection lost, server restarting); False for permanent failures.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class BackendUnavailableError(BackendError):
    """The database or broker cannot be reached right now; always transient."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class TriggerError(BackendError):
    """A trigger could not be delivered; the task is safe and the resumer will pick it up."""

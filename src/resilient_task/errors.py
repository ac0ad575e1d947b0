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
    ├── BackendError                    storage or broker failure; ``transient``: a retry may help
    │   ├── BackendUnavailableError     cannot reach PostgreSQL / Kafka right now (transient)
    │   └── TriggerError                a trigger was not delivered; the task stays stored
    ├── RetryAfter                      raised by a processor: retry after ``delay`` (policy-bound)
    └── GiveUp                          raised by a processor: ERROR now, with ``reason``

Adapters translate every driver exception into one of these at a single choke point
(``raise BackendUnavailableError(...) from exc``) so ``__cause__`` keeps the original.

One rule for bad caller input: it is a :class:`ValidationError`, whether the value or its type
is wrong (``find_tasks(limit="10")``, ``add_tasks(single_request)``, ``resume_task(id,
version="1")``, ``find_tasks(status="BOGUS")``, a lone surrogate in a task type, a time that
would be year 10000 in UTC), raised before anything is stored and by every store alike; never
a bare ``TypeError``, ``OverflowError``, ``UnicodeEncodeError`` or driver error.
"""

from __future__ import annotations

import math
from datetime import timedelta
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


class RetryAfter(ResilientTaskError):  # noqa: N818 -- a request to the executor, not an error
    """Raised by a processor: run the task again after ``delay``, instead of the policy's wait.

    The attempt counts as a try, and the retry policy still decides *whether* there is a retry
    (an :class:`~resilient_task.ExponentialRetryPolicy` past ``max_count`` or a
    :class:`~resilient_task.NoRetryPolicy` puts the task in ERROR); its ``retry_on`` and
    ``give_up_on`` filters do not apply. The processor only decides *when*.

    Args:
        delay: a ``timedelta`` or seconds, from 0 up to ten years (the longest retry wait).
        reason: recorded as the task's last error (default ``"retry after <delay>"``).
    """

    def __init__(self, delay: timedelta | float, reason: str | None = None) -> None:
        if isinstance(delay, bool) or not isinstance(delay, timedelta | int | float):
            raise ValidationError(f"RetryAfter delay must be a timedelta or seconds, got {delay!r}")
        if not isinstance(delay, timedelta):
            if not math.isfinite(delay) or not 0 <= delay <= _MAX_DELAY.total_seconds():
                raise ValidationError(f"RetryAfter delay out of range: {delay!r}")
            delay = timedelta(seconds=delay)
        if not timedelta(0) <= delay <= _MAX_DELAY:
            raise ValidationError(f"RetryAfter delay out of range: {delay}")
        self.delay = delay
        self.reason = reason if reason is not None else f"retry after {delay}"
        super().__init__(self.reason)


class GiveUp(ResilientTaskError):  # noqa: N818 -- a request to the executor, not an error
    """Raised by a processor: no retry, the task goes to ERROR at once with ``reason``.

    Whatever the retry policy says. ``raise GiveUp("card expired") from exc`` keeps the cause
    in the recorded traceback. An operator can still resume the task.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_MAX_DELAY = timedelta(days=3650)
"""The longest wait a retry may ask for (kept equal to ``domain.requests.MAX_DURATION``)."""

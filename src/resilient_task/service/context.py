"""What a running processor can learn about its own execution (via contextvars)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, overload

import anyio

from resilient_task.domain.task import Task
from resilient_task.errors import ConfigurationError

__all__ = ["ProcessingContext", "current_context", "current_transaction"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProcessingContext:
    """The task being processed, its deadline and (for transactional handlers) the transaction.

    ``blocking_scopes`` is the node's own: :func:`~resilient_task.blocking_processor` registers
    there the scope that keeps the task waiting for its thread, so that a stopping node can
    stop waiting.
    """

    task: Task
    node_id: str
    timeout_at: datetime
    transaction: object = None
    blocking_scopes: set[anyio.CancelScope] | None = field(default=None, repr=False)


_current: ContextVar[ProcessingContext | None] = ContextVar("resilient_task_context", default=None)


def current_context() -> ProcessingContext:
    """The context of the task this coroutine processes; raises outside a processor."""
    context = _current.get()
    if context is None:
        raise ConfigurationError("current_context() is only available inside a task processor")
    return context


@overload
def current_transaction() -> Any: ...
@overload
def current_transaction(kind: type[T]) -> T: ...
def current_transaction(kind: type[object] | None = None) -> object:
    """The store transaction of a ``transactional=True`` handler.

    For PostgreSQL this is the SQLAlchemy ``AsyncConnection`` whose transaction also completes
    the task: write your business rows with it and they commit atomically with the task's
    completion -- or roll back when the task was taken away from this node meanwhile.
    The transaction is the node's to end: do not commit, roll back or close it (on
    PostgreSQL that raises :class:`~resilient_task.errors.ConfigurationError` and fails the
    run); raise to roll your writes back, or use a savepoint (``begin_nested()``).

    Args:
        kind: the handle's type, e.g. ``AsyncConnection`` (or ``InMemoryTransaction``): the
            result is typed as it, and a handle of another type raises ConfigurationError.
            Without it the handle is untyped (``Any``): the store is chosen at run time.
    """
    context = current_context()
    if context.transaction is None:
        raise ConfigurationError(
            "this handler is not transactional; build it with transactional=True"
        )
    if kind is not None and not isinstance(context.transaction, kind):
        raise ConfigurationError(
            f"the transaction handle is {type(context.transaction).__name__}, not {kind.__name__}"
        )
    return context.transaction


def set_context(context: ProcessingContext | None) -> object:
    """Install ``context`` for the current task (internal; returns a reset token)."""
    return _current.set(context)

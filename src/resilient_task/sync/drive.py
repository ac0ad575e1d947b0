"""Running the async service code to completion in a synchronous caller, without an event loop.

The add path of :class:`~resilient_task.service.task_service.TaskService` is written with
``async def``, but over the caller's *synchronous* connection nothing in it ever waits: every
``await`` reaches a coroutine that does its blocking I/O and returns. Such a coroutine finishes
on its first step, so one ``send(None)`` runs it, in the caller's thread, whether or not an
event loop runs there. Were it to suspend (something awaited a real event loop), it is closed
and :class:`RuntimeError` says so: a bug of this package, never a half-done add that goes on
later.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_to_completion"]

T = TypeVar("T")


def run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """The value of ``coroutine``, which must finish without suspending."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()  # runs its finally blocks; nothing is left pending
    raise RuntimeError(
        "resilient_task.sync: the add waited for an event loop, which a synchronous caller "
        "does not run (a bug of resilient_task.sync: please report it)"
    )

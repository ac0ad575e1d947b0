"""Run blocking (synchronous) processors without blocking the node."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import anyio.to_thread

from resilient_task.domain.handler import Processor
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import Task
from resilient_task.service.context import _current

__all__ = ["blocking_processor"]


def blocking_processor(func: Callable[[Task], ProcessResult]) -> Processor:
    """Wrap a synchronous function as a processor that runs in a worker thread.

    A thread cannot be cancelled. When it overruns the processing timeout, the node keeps the
    task PROCESSING and its concurrency slot held until the thread returns, then records the
    timeout as the task's failure: the retry never runs beside the thread it replaces. A
    thread that never returns leaves the task to its deadline and stuck-task recovery. Only a
    stopping node stops waiting (after its shutdown grace); the thread is then abandoned and
    its result ignored. Prefer async processors for work that must be cancelled promptly.
    """

    async def processor(task: Task) -> ProcessResult:
        context = _current.get()
        scopes = context.blocking_scopes if context is not None else None
        if scopes is None:  # called outside a node: nothing to hold, nothing to wait for
            return await anyio.to_thread.run_sync(func, task, abandon_on_cancel=True)
        # Shielded from the timeout: the run ends when the thread does. The node cancels the
        # scope itself when it stops, and the thread is abandoned.
        with anyio.CancelScope(shield=True) as scope:
            scopes.add(scope)
            try:
                return await anyio.to_thread.run_sync(func, task, abandon_on_cancel=True)
            finally:
                scopes.discard(scope)
        await anyio.lowlevel.checkpoint()  # the node's own cancellation, pending outside
        raise RuntimeError("blocking processor abandoned by a stopping node")

    processor.__qualname__ = getattr(func, "__qualname__", "blocking_processor")
    return processor

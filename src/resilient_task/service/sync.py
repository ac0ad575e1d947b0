"""Run blocking (synchronous) processors without blocking the node."""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread

from resilient_task.domain.handler import Processor
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import Task

__all__ = ["blocking_processor"]


def blocking_processor(func: Callable[[Task], ProcessResult]) -> Processor:
    """Wrap a synchronous function as a processor that runs in a worker thread.

    On timeout the node stops waiting for the thread (``abandon_on_cancel``) and records the
    failure; a thread cannot be killed, so it finishes in the background, and its late result
    is ignored. Prefer async processors for work that must be cancelled promptly.
    """

    async def processor(task: Task) -> ProcessResult:
        return await anyio.to_thread.run_sync(func, task, abandon_on_cancel=True)

    processor.__qualname__ = getattr(func, "__qualname__", "blocking_processor")
    return processor

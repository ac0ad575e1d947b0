"""Leaving a node whose fake clock nobody advances: the shutdown grace still ends.

A test that fails inside ``async with ResilientTask(..., clock=FakeClock())`` while a
processor still runs used to hang for ever: the grace was counted on the fake clock only.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from resilient_task import (
    AddTaskRequest,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    TaskProperties,
)
from resilient_task.adapters.memory import FakeClock

pytestmark = pytest.mark.anyio


class _TestFailedError(Exception):
    pass


async def test_a_failing_test_with_a_running_processor_leaves_the_node() -> None:
    started = anyio.Event()

    async def never_ends(task: Task) -> ProcessResult:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    clock = FakeClock()
    properties = TaskProperties(shutdown_grace=timedelta(seconds=0.5))
    handler = TaskHandler(types={"slow"}, processor=never_ends)

    async def a_test_that_fails() -> None:
        async with ResilientTask(handlers=[handler], clock=clock, properties=properties) as app:
            await app.service.add_task(AddTaskRequest(type="slow", data=b""))
            await started.wait()
            raise _TestFailedError

    with anyio.fail_after(20):  # the hang this guards against would end here, as a TimeoutError
        with pytest.raises(_TestFailedError):
            await a_test_that_fails()

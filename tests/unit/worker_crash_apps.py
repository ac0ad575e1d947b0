"""Nodes for the worker-process tests (``--app tests.unit.worker_crash_apps:...``)."""

from __future__ import annotations

from typing import Self

from resilient_task import AddTaskRequest, BaseTask, ProcessResult, ResilientTask, Task, TaskHandler

_calls: list[object] = []


def _broken_predicate(task: BaseTask) -> bool:
    """Accepts the task when it is added, exits when it is triggered."""
    _calls.append(task.id)
    if len(_calls) > 1:
        raise SystemExit("a predicate that exits")  # not an Exception: escapes every guard
    return True


async def _process(task: Task) -> ProcessResult:
    return ProcessResult.DONE


class _SelfFeedingNode(ResilientTask):
    """A node that adds one task as soon as it runs."""

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        await self.service.add_task(AddTaskRequest(type="work"))
        return self


crashing_node = _SelfFeedingNode(
    handlers=[TaskHandler(predicate=_broken_predicate, processor=_process)]
)
"""An in-memory node whose only handler's predicate raises SystemExit on its first task."""

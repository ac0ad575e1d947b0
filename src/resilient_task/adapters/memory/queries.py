"""The operators' read port over an :class:`InMemoryTaskDAO`'s committed tasks.

Reads the DAO's public read-only view (``dao.tasks``), so it sees exactly what the engine
committed. Like the DAO, every call first yields once (as real I/O would) and then reads
without awaiting, so each result is a consistent snapshot.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import anyio.lowlevel

from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.domain.requests import require_time
from resilient_task.domain.task import Task, TaskStatus, status_of
from resilient_task.ports.task_queries import TaskQuery

__all__ = ["InMemoryTaskQueries"]


def _order(task: Task) -> tuple[datetime, int, int]:
    return task.next_event_time, task.priority, task.id.int


class InMemoryTaskQueries:
    """:class:`~resilient_task.ports.task_queries.TaskQueries` over an in-memory store.

    Args:
        dao: the store whose committed tasks are read.
    """

    def __init__(self, *, dao: InMemoryTaskDAO) -> None:
        self._dao = dao

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        """Tasks matching ``query``, earliest first, without payload or traceback."""
        await anyio.lowlevel.checkpoint()
        found = sorted((t for t in self._dao.tasks.values() if query.matches(t)), key=_order)
        return [replace(task, data=b"", last_traceback=None) for task in found[: query.limit]]

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status, every status present."""
        await anyio.lowlevel.checkpoint()
        counts = dict.fromkeys(TaskStatus, 0)
        for task in self._dao.tasks.values():
            counts[task.status] += 1
        return counts

    async def count_by_type(self) -> dict[tuple[TaskStatus, str], int]:
        """How many tasks of each type are in each status (only pairs that exist)."""
        await anyio.lowlevel.checkpoint()
        counts: dict[tuple[TaskStatus, str], int] = {}
        for task in self._dao.tasks.values():
            key = (task.status, task.type)
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def oldest_overdue(self, status: TaskStatus, *, now: datetime) -> datetime | None:
        """The earliest ``next_event_time`` before ``now`` in ``status``, or None."""
        await anyio.lowlevel.checkpoint()
        status = status_of(status)
        require_time("now", now)
        times = [
            t.next_event_time
            for t in self._dao.tasks.values()
            if t.status is status and t.next_event_time < now
        ]
        return min(times, default=None)

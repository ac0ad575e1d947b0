"""What the dashboard's overview reads besides the operator service: bounded summaries.

The operator service's counts are exact, and an exact count reads every task: seconds on a
table of millions. The overview must render in well under a second whatever the table size,
so every read here is bounded, and says when it was cut:

- :meth:`DashboardStats.status_counts`: per status, an exact count up to ``cap``; above it, an
  estimate (PostgreSQL: the planner's statistics), marked as such.
- :meth:`DashboardStats.type_counts`: per status, the types of at most ``cap`` tasks (earliest
  ``next_event_time`` first); a status with more tasks is marked as sampled.
- :meth:`DashboardStats.done_per_minute`: tasks that reached DONE in each of the last minutes,
  each ten-second slot counted exactly up to ``cap``; a busier slot is estimated from how
  long its first ``cap`` tasks took (:func:`slot_count`).
- :meth:`DashboardStats.recent_nodes`: the ``processing_node`` of PROCESSING tasks and of
  tasks finished recently, at most ``cap`` of each.

:class:`InMemoryDashboardStats` reads an :class:`InMemoryTaskDAO`; the PostgreSQL adapter is
:class:`resilient_task.dashboard.postgres_stats.PostgresDashboardStats`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import anyio.lowlevel

from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.domain.task import TaskStatus

__all__ = [
    "SLOT",
    "SLOTS_PER_MINUTE",
    "DashboardStats",
    "InMemoryDashboardStats",
    "MinuteCount",
    "NodeSeen",
    "StatusCount",
    "TypeCounts",
    "minute_starts",
    "minute_totals",
    "slot_count",
    "slot_starts",
]


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many tasks are in one status.

    Attributes:
        count: the exact count; or, when ``exact`` is false, an estimate (``estimated``) or
            a lower bound (no statistics to estimate from).
        exact: the count is exact (it was at most the cap).
        estimated: the count is an estimate from statistics.
    """

    count: int
    exact: bool = True
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Tasks finished in one minute.

    Attributes:
        count: exact, or (``exact`` false) estimated from the first ``cap`` of the minute.
        exact: the minute had at most ``cap`` tasks, all counted.
    """

    count: int
    exact: bool = True


SLOT = timedelta(seconds=10)
"""The chart counts each minute as six slots of ten seconds, each read up to its cap."""
SLOTS_PER_MINUTE = 6


def slot_count(read: int, cap: int, start: datetime, last: datetime | None) -> MinuteCount:
    """The count of a ten-second slot from which ``read`` tasks were read, at most ``cap``.

    Below the cap the count is exact. At the cap, the slot's first ``cap`` tasks (by finish
    time) took from ``start`` to ``last``: the rate they show, over the whole slot, is the
    estimate (for evenly spread finishes its error is about ``1 / sqrt(cap)``; a burst at the
    start of a slot is overestimated, but only within its ten seconds).
    """
    if read < cap or last is None:
        return MinuteCount(read)
    span = max((last - start) / timedelta(seconds=1), 0.001)
    return MinuteCount(max(cap, round(cap * SLOT.total_seconds() / span)), exact=False)


def minute_totals(slots: list[MinuteCount]) -> list[MinuteCount]:
    """Per-slot counts (oldest first, six per minute) summed per minute."""
    totals = []
    for first in range(0, len(slots), SLOTS_PER_MINUTE):
        minute = slots[first : first + SLOTS_PER_MINUTE]
        totals.append(MinuteCount(sum(m.count for m in minute), all(m.exact for m in minute)))
    return totals


@dataclass(frozen=True, slots=True)
class TypeCounts:
    """Tasks per (status, type), possibly from a sample.

    Attributes:
        counts: tasks per (status, type) among those read.
        sampled: the statuses with more tasks than were read (their counts are a sample).
    """

    counts: dict[tuple[TaskStatus, str], int]
    sampled: frozenset[TaskStatus] = frozenset()


@dataclass(frozen=True, slots=True)
class NodeSeen:
    """A node that grabbed tasks recently.

    Attributes:
        node: the ``processing_node`` it wrote.
        last_seen: the latest ``updated_at`` of its tasks read.
        processing: how many of the tasks read it is processing now.
        finished: how many of the tasks read it finished within the window.
    """

    node: str
    last_seen: datetime
    processing: int
    finished: int


class DashboardStats(Protocol):
    """Bounded reads for the overview; see the module docstring."""

    async def status_counts(self, *, cap: int) -> dict[TaskStatus, StatusCount]:
        """Every status's count: exact up to ``cap``, estimated above it."""
        ...

    async def type_counts(self, *, cap: int) -> TypeCounts:
        """Tasks per (status, type) among at most ``cap`` tasks of each status."""
        ...

    async def done_per_minute(self, *, now: datetime, minutes: int, cap: int) -> list[MinuteCount]:
        """Tasks that reached DONE in each of the ``minutes`` minutes before ``now``.

        Oldest minute first; each ten-second slot read up to ``cap`` tasks (:func:`slot_count`).
        """
        ...

    async def recent_nodes(self, *, now: datetime, within: timedelta, cap: int) -> list[NodeSeen]:
        """Nodes of PROCESSING tasks and of tasks finished within ``within`` before ``now``.

        At most ``cap`` tasks of each kind are read; nodes ordered by name.
        """
        ...


def slot_starts(now: datetime, minutes: int) -> list[datetime]:
    """The start of each ten-second slot of the ``minutes`` minutes ending at ``now``."""
    first = now - timedelta(minutes=minutes)
    return [first + SLOT * i for i in range(minutes * SLOTS_PER_MINUTE)]


def minute_starts(now: datetime, minutes: int) -> list[datetime]:
    """The start of each of the ``minutes`` one-minute windows ending at ``now``, oldest first."""
    return [now - timedelta(minutes=minutes - i) for i in range(minutes)]


class InMemoryDashboardStats:
    """:class:`DashboardStats` over an in-memory store's committed tasks (always exact).

    Args:
        dao: the store whose committed tasks are read.
    """

    def __init__(self, *, dao: InMemoryTaskDAO) -> None:
        self._dao = dao

    async def status_counts(self, *, cap: int) -> dict[TaskStatus, StatusCount]:
        """Every status's exact count (an in-memory store is small enough to count)."""
        await anyio.lowlevel.checkpoint()
        counts = Counter(task.status for task in self._dao.tasks.values())
        return {status: StatusCount(counts[status]) for status in TaskStatus}

    async def type_counts(self, *, cap: int) -> TypeCounts:
        """Tasks per (status, type); the sample is the earliest ``cap`` tasks of each status."""
        await anyio.lowlevel.checkpoint()
        by_status: dict[TaskStatus, list[tuple[datetime, str]]] = {}
        for task in self._dao.tasks.values():
            by_status.setdefault(task.status, []).append((task.next_event_time, task.type))
        counts: Counter[tuple[TaskStatus, str]] = Counter()
        sampled = set()
        for status, found in by_status.items():
            if len(found) > cap:
                sampled.add(status)
            for _, task_type in sorted(found)[:cap]:
                counts[status, task_type] += 1
        return TypeCounts(dict(counts), frozenset(sampled))

    async def done_per_minute(self, *, now: datetime, minutes: int, cap: int) -> list[MinuteCount]:
        """DONE tasks per minute over the last ``minutes`` minutes (:func:`slot_count`)."""
        await anyio.lowlevel.checkpoint()
        finished = sorted(
            t.next_event_time for t in self._dao.tasks.values() if t.status is TaskStatus.DONE
        )
        slots = []
        for start in slot_starts(now, minutes):
            first = [at for at in finished if start <= at < start + SLOT][:cap]
            slots.append(slot_count(len(first), cap, start, first[-1] if first else None))
        return minute_totals(slots)

    async def recent_nodes(self, *, now: datetime, within: timedelta, cap: int) -> list[NodeSeen]:
        """Nodes of PROCESSING tasks and of tasks finished recently."""
        await anyio.lowlevel.checkpoint()
        since = now - within
        tasks = self._dao.tasks.values()
        processing = sorted(
            (t for t in tasks if t.status is TaskStatus.PROCESSING and t.processing_node),
            key=lambda t: t.next_event_time,
            reverse=True,
        )[:cap]
        finished = sorted(
            (
                t
                for t in tasks
                if t.status is TaskStatus.DONE
                and t.processing_node
                and since <= t.next_event_time <= now
            ),
            key=lambda t: t.next_event_time,
            reverse=True,
        )[:cap]
        seen: dict[str, NodeSeen] = {}
        for task, is_processing in [(t, True) for t in processing] + [(t, False) for t in finished]:
            node = task.processing_node
            assert node is not None
            old = seen.get(node)
            seen[node] = NodeSeen(
                node,
                task.updated_at if old is None else max(old.last_seen, task.updated_at),
                (0 if old is None else old.processing) + is_processing,
                (0 if old is None else old.finished) + (not is_processing),
            )
        return [seen[node] for node in sorted(seen)]

"""Cluster-wide gauges read from the store: tasks per status and type, oldest overdue age.

Every node runs :meth:`ClusterGauges.run`, but only the node holding the
:class:`ClusterLock` reads the store (every 30 s by default): the others export nothing for
these gauges, so a ``sum`` or ``max`` over nodes counts each task once and the store pays
one set of bounded reads per interval, not one per node. When the holder dies its lock is
released (PostgreSQL drops a dead session's advisory locks) and the next node to try takes
over.

The reads go through the :class:`~resilient_task.ports.task_queries.TaskQueries` port: a
``GROUP BY`` count and one index range per overdue status.
"""

from __future__ import annotations

import logging
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge

from resilient_task.adapters.prometheus.observer import OTHER_TYPE, PREFIX
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import BackendError
from resilient_task.ports.clock import Clock
from resilient_task.ports.task_queries import TaskQueries

__all__ = ["ClusterGauges", "ClusterLock", "SoleNodeLock"]

log = logging.getLogger("resilient_task.metrics")

_OVERDUE = (TaskStatus.SUBMITTED, TaskStatus.PROCESSING)


class ClusterLock(Protocol):
    """Lets one node at a time read the cluster gauges."""

    async def try_hold(self) -> bool:
        """Whether this node holds the lock now (taking it when free); never blocks long."""
        ...

    async def release(self) -> None:
        """Give the lock up (when this node stops)."""
        ...


class SoleNodeLock:
    """A :class:`ClusterLock` for a store only this process sees (in-memory): always held."""

    async def try_hold(self) -> bool:
        """Always True."""
        return True

    async def release(self) -> None:
        """Nothing to release."""


class ClusterGauges:
    """``tasks{status,type}`` and ``oldest_overdue_seconds{status}``, refreshed by one node.

    Args:
        queries: the store's read port.
        lock: who refreshes; see the module docstring.
        clock: the time source (ages are measured against it).
        registry: where the gauges are registered.
        task_types: types that get their own ``type`` label; the rest are summed in ``other``.
        interval: seconds between refreshes.
    """

    def __init__(
        self,
        *,
        queries: TaskQueries,
        lock: ClusterLock,
        clock: Clock,
        registry: CollectorRegistry,
        task_types: frozenset[str],
        interval: float = 30.0,
    ) -> None:
        self._queries = queries
        self._lock = lock
        self._clock = clock
        self._types = task_types
        self.interval = interval
        """Seconds between refreshes."""
        self._tasks = Gauge(
            f"{PREFIX}tasks",
            "Tasks in the store by status and type (exported by one node of the cluster).",
            ["status", "type"],
            registry=registry,
        )
        self._oldest = Gauge(
            f"{PREFIX}oldest_overdue_seconds",
            "Age of the oldest task past its deadline in SUBMITTED or PROCESSING (0: none).",
            ["status"],
            registry=registry,
        )
        self._updated = Gauge(
            f"{PREFIX}cluster_gauges_updated_timestamp_seconds",
            "When this node last refreshed the cluster gauges (absent: another node does).",
            registry=registry,
        )
        self.holding = False
        """Whether this node exported the gauges at the last refresh."""

    async def refresh(self) -> bool:
        """Read the store and set the gauges if this node holds the lock; True if it did."""
        if not await self._lock.try_hold():
            if self.holding:
                log.info("cluster gauges: another node exports them now")
            self._clear()
            return False
        counts = await self._queries.count_by_type()
        now = self._clock.now()
        oldest = {s: await self._queries.oldest_overdue(s, now=now) for s in _OVERDUE}
        totals: dict[tuple[str, str], int] = {}
        for (status, task_type), count in counts.items():
            key = (status.value, task_type if task_type in self._types else OTHER_TYPE)
            totals[key] = totals.get(key, 0) + count
        self._tasks.clear()
        for status in TaskStatus:  # every status present, so an alert sees 0, not absence
            for task_type in (*sorted(self._types), OTHER_TYPE):
                self._tasks.labels(status.value, task_type).set(
                    totals.get((status.value, task_type), 0)
                )
        for status, when in oldest.items():
            age = 0.0 if when is None else max((now - when).total_seconds(), 0.0)
            self._oldest.labels(status.value).set(age)
        self._updated.set(now.timestamp())
        self.holding = True
        return True

    def _clear(self) -> None:
        self.holding = False
        self._tasks.clear()
        self._oldest.clear()
        self._updated.set(float("nan"))

    async def run(self) -> None:
        """Refresh every ``interval`` seconds until cancelled; survives store outages."""
        try:
            while True:
                try:
                    await self.refresh()
                except BackendError as exc:
                    log.debug("cluster gauges not refreshed: %s", exc)
                    self._clear()
                except Exception:
                    log.exception("cluster gauges not refreshed (unexpected failure)")
                    self._clear()
                await self._clock.sleep(self.interval)
        finally:
            self._clear()
            await _quietly(self._lock.release)


async def _quietly(call: object) -> None:
    try:
        await call()  # type: ignore[operator]
    except Exception:
        log.debug("cluster lock release failed", exc_info=True)

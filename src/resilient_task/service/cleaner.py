"""The cleaner: deletes finished tasks once they are older than the retention period."""

from __future__ import annotations

import logging

from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.properties import TaskProperties
from resilient_task.service.outage import OutageLog, repeat_every
from resilient_task.service.stores import AnyTaskDAO

__all__ = ["TaskCleaner"]

log = logging.getLogger("resilient_task.cleaner")


class TaskCleaner:
    """Deletes DONE, FAILED and CANCELLED tasks finished more than ``retention`` ago.

    ERROR tasks are never deleted: they wait for an operator. Runs on every node; deletes are
    bounded batches, so nodes cleaning at once only share the work.
    """

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        clock: Clock,
        properties: TaskProperties,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._dao = dao
        self._clock = clock
        self._props = properties
        self._observer = observer
        self._db = OutageLog(log, "database", observer)
        self.deleted = 0
        """Tasks deleted by this node so far."""

    async def run_once(self) -> int:
        """Delete every expired finished task, a batch at a time; returns how many."""
        settings = self._props.cleaner
        before = self._clock.now() - settings.retention
        total = 0
        while True:
            deleted = await self._dao.delete_finished(before=before, limit=settings.batch_size)
            total += deleted
            if deleted < settings.batch_size:
                break
        if total:
            self.deleted += total
            self._observer.tasks_cleaned(total)
            log.info("deleted %d finished task(s) older than %s", total, settings.retention)
        return total

    async def run(self) -> None:
        """Clean every ``cleaner.interval`` until cancelled; survives outages."""
        await repeat_every(
            self.run_once,
            seconds=self._props.cleaner.interval.total_seconds(),
            clock=self._clock,
            outage=self._db,
            doing="deleting finished tasks",
        )

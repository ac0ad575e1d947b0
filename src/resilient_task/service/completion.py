"""Completion: write a run's decided outcome, retrying transient store failures.

The write is version-checked: a run whose task was recovered by another node meanwhile
cannot complete it (the write reports False: *fenced*). Completions of concurrent runs share
one store round trip (:class:`Batcher`, group commit). Each recorded outcome is counted,
reported to the observer and logged once here, whichever path wrote it.
"""

from __future__ import annotations

import logging
from collections import Counter

from resilient_task.domain.backoff import capped_exponential
from resilient_task.domain.outcome import Decision, OutcomeKind
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import BackendError
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import Observer, ProcessOutcome
from resilient_task.ports.task_dao import TaskChange
from resilient_task.service.batcher import Batcher
from resilient_task.service.outage import OutageLog
from resilient_task.service.stores import AnyTaskDAO

__all__ = ["Completions", "change_of"]

log = logging.getLogger("resilient_task.executor")

WRITE_ATTEMPTS = 6
"""Tries of one completion write; a transient failure waits 0.05 s, doubling up to 2 s."""

_OUTCOMES = {
    OutcomeKind.DONE: ProcessOutcome.DONE,
    OutcomeKind.DELETED: ProcessOutcome.DELETED,
    OutcomeKind.REPEATED: ProcessOutcome.REPEAT,
    OutcomeKind.RETRIED: ProcessOutcome.RETRY,
    OutcomeKind.ERROR: ProcessOutcome.ERROR,
}


def change_of(task: Task, decision: Decision) -> TaskChange:
    """The store write of ``decision`` for the run of ``task``: checked on its version."""
    return TaskChange(decision.task, task.version, decision.delete)


class Completions:
    """Writes, counts and logs the outcomes of one executor's runs."""

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        clock: Clock,
        observer: Observer,
        outage: OutageLog,
        stats: Counter[str],
    ) -> None:
        self._clock = clock
        self._observer = observer
        self._db = outage
        self._stats = stats
        self.batcher: Batcher[TaskChange, bool] = Batcher(dao.apply)

    async def write(self, task: Task, decision: Decision) -> bool:
        """Persist a completion, retrying transient failures; True once written and recorded."""
        change = change_of(task, decision)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                written = await self.batcher.submit(change)
            except BackendError as exc:
                self._db.failed(exc, f"recording the outcome of task {task.id}")
                if not exc.transient or attempt == WRITE_ATTEMPTS:
                    log.error(
                        "task %s: outcome not recorded (%s); it stays PROCESSING and is "
                        "recovered after its deadline",
                        task.id,
                        loggable(exc),
                        extra=task_extra(task),
                    )
                    return False
                await self._clock.sleep(capped_exponential(attempt - 1, first=0.05, cap=2.0))
                continue
            self._db.succeeded()
            if not written:
                self.fenced(task, rolled_back=False)
                return False
            self.record(task, decision)
            return True
        return False

    def fenced(self, task: Task, *, rolled_back: bool) -> None:
        """The write lost its version check: the task was taken away from this node."""
        self._stats["fenced"] += 1
        self._observer.task_processed(task.type, ProcessOutcome.FENCED, 0.0)
        if rolled_back:
            log.warning(
                "task %s: taken away from this node meanwhile (version %d is stale); its "
                "completion and the handler's writes were rolled back",
                task.id,
                task.version,
                extra=task_extra(task),
            )
        else:
            log.warning(
                "task %s: outcome rejected, version %d is stale (the task was "
                "recovered by another node meanwhile)",
                task.id,
                task.version,
                extra=task_extra(task),
            )

    def record(self, task: Task, decision: Decision) -> None:
        """Count, report and log a written outcome."""
        new, kind = decision.task, decision.kind
        self._stats[kind.value] += 1
        # The grab and the decision each stamped updated_at: no extra clock read.
        seconds = (new.updated_at - task.updated_at).total_seconds()
        self._observer.task_processed(task.type, _OUTCOMES[kind], seconds)
        waiting = new.status is TaskStatus.WAITING
        level = (
            logging.ERROR
            if new.status is TaskStatus.ERROR
            else (logging.WARNING if kind is OutcomeKind.RETRIED else logging.INFO)
        )
        if log.isEnabledFor(level):
            log.log(
                level,
                "task %s type=%s PROCESSING -> %s attempt=%d%s%s",
                task.id,
                loggable(task.type),
                "DELETED" if decision.delete else new.status.value,
                task.processing_tries_count,
                f" next_run={new.next_event_time.isoformat()}" if waiting else "",
                f" error={loggable(new.last_error)}" if new.last_error else "",
                extra=task_extra(task),
            )

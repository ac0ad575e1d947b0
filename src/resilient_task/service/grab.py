"""The grab: an admitted trigger's task moves SUBMITTED -> PROCESSING on this node.

The grab is a version-checked update, so a duplicate or stale trigger finds nothing to grab.
Grabs of concurrent triggers share one store round trip (:class:`Batcher`, group commit).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.outcome import describe
from resilient_task.domain.task import BaseTask, Task
from resilient_task.errors import BackendError
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import Observer
from resilient_task.ports.task_dao import Grabbed, GrabRequest, TaskDAO
from resilient_task.properties import TaskProperties
from resilient_task.service.batcher import Batcher
from resilient_task.service.outage import OutageLog
from resilient_task.service.registry import HandlerRegistry

__all__ = ["Grabber"]

log = logging.getLogger("resilient_task.executor")


class Grabber:
    """Grabs triggered tasks for one executor, batching concurrent grabs."""

    def __init__(
        self,
        *,
        dao: TaskDAO,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
        observer: Observer,
        outage: OutageLog,
        stats: Counter[str],
    ) -> None:
        self._dao = dao
        self._registry = registry
        self._clock = clock
        self._props = properties
        self._observer = observer
        self._db = outage
        self._stats = stats
        self.batcher: Batcher[GrabRequest, Grabbed | Exception | None] = Batcher(self._batch)

    async def grab(self, base: BaseTask, handler: TaskHandler | None) -> Task | None:
        """The grabbed task, or None: stale or duplicate trigger, or a failed grab (logged)."""
        now = self._clock.now()
        timeout = (
            self._registry.timeout(handler, self._props)
            if handler is not None
            else self._props.task_stuck_timeout
        )
        deadline = now + timeout + self._props.processing_grace
        request = GrabRequest(base.id, base.version, self._props.node_id, deadline)
        try:
            grabbed = await self.batcher.submit(request)
            if isinstance(grabbed, Exception):
                raise grabbed  # this request failed on its own (see _batch)
        except BackendError as exc:
            self._db.failed(exc, f"grabbing task {base.id}")
            self._stats["grab_failed"] += 1
            return None
        except Exception as exc:  # the store refused this trigger's values: not an outage
            self._stats["grab_failed"] += 1
            log.warning(
                "task %s v%s: trigger not grabbed, the store refused it: %s",
                base.id,
                loggable(base.version),
                loggable(describe(exc)),
                extra=task_extra(base),
            )
            return None
        self._db.succeeded()
        if grabbed is None:
            self._stats["stale"] += 1
            self._observer.task_stale()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "task %s v%d: stale or duplicate trigger, nothing grabbed",
                    base.id,
                    base.version,
                )
            return None
        task = grabbed.task
        self._stats["grabbed"] += 1
        # Due -> start: from when the task became SUBMITTED to its grab (the store's clock
        # and this node's may disagree a little: never negative).
        delay = (task.updated_at - grabbed.queued_at).total_seconds()
        self._observer.task_grabbed(task.type, delay if delay > 0 else 0.0)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "task %s type=%s SUBMITTED -> PROCESSING attempt=%d node=%s",
                task.id,
                loggable(task.type),
                task.processing_tries_count,
                self._props.node_id,
                extra=task_extra(task),
            )
        return task

    async def _batch(self, requests: Sequence[GrabRequest]) -> list[Grabbed | Exception | None]:
        """One round trip for every grab queued meanwhile (group commit).

        A batch the store refuses for another reason than a backend failure (a value out of
        range in one forged trigger...) is split in halves and retried, down to the single
        requests at fault: their result is the error, every other request is grabbed now.
        """
        try:
            grabbed = await self._dao.grab_queued(requests, now=self._clock.now())
        except BackendError:
            raise  # an outage or a transient failure: every request of the batch shares it
        except Exception:
            if len(requests) == 1:
                raise
            half = len(requests) // 2
            results: list[Grabbed | Exception | None] = []
            for part in (requests[:half], requests[half:]):
                try:
                    results += await self._batch(part)
                except Exception as exc:
                    results += [exc] * len(part)
            return results
        by_key = {(g.task.id, g.task.version - 1): g for g in grabbed}
        # A duplicate trigger in the same batch must not run the task twice: first one wins.
        return [by_key.pop((r.task_id, r.version), None) for r in requests]

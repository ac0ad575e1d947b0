"""The executor: turns triggers into grabbed tasks, runs processors, records the outcome.

A trigger goes through four steps, one module each: admission
(:mod:`~resilient_task.service.admission`), the grab (:mod:`~resilient_task.service.grab`),
the run (:mod:`~resilient_task.service.run`, on reused worker tasks) and the completion
(:mod:`~resilient_task.service.completion`, deciding with :func:`~.domain.outcome.decide`).
This module drives them and holds the node's lifecycle: start, stop accepting, shutdown grace.

At-least-once with fencing: the grab is a version-checked SUBMITTED -> PROCESSING update, so a
duplicate or stale trigger finds nothing to grab; the completion is version-checked too, so a
run whose task was recovered by another node meanwhile cannot complete it (and, for
transactional handlers, its writes roll back).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

import anyio
import anyio.abc

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.outcome import unhandled
from resilient_task.domain.task import BaseTask, Task
from resilient_task.errors import ConfigurationError, ProcessingTimeoutError
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.properties import TaskProperties
from resilient_task.service.admission import Admission, Held, wait_event
from resilient_task.service.completion import Completions
from resilient_task.service.grab import Grabber
from resilient_task.service.limit_waits import LimitWaits
from resilient_task.service.outage import OutageLog
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.run import Job, Runner
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.service.timeouts import Watchdog
from resilient_task.service.workers import WorkerPool

__all__ = ["ProcessingTimeoutError", "TaskExecutor"]

log = logging.getLogger("resilient_task.executor")


class TaskExecutor:
    """Runs triggered tasks on this node, within the handlers' concurrency limits."""

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._dao = dao
        self._observer = observer
        self._registry = registry
        self._clock = clock
        self._props = properties
        self.stats: Counter[str] = Counter()
        """Counts of what happened on this node: grabbed, done, retried, error, stale, fenced..."""
        db = OutageLog(log, "database", observer)
        # Transactional tasks hold a pooled connection while they run (see Admission).
        capacity = getattr(dao, "max_connections", None)
        self._admission = Admission(
            handlers=registry.handlers, properties=properties, max_connections=capacity
        )
        self._grabber = Grabber(
            dao=dao, registry=registry, clock=clock, properties=properties, observer=observer,
            outage=db, stats=self.stats,
        )  # fmt: skip
        self._completer = Completions(
            dao=dao, clock=clock, observer=observer, outage=db, stats=self.stats
        )
        self._grabs, self._completions = self._grabber.batcher, self._completer.batcher
        self._watchdog = Watchdog(clock)
        self._runner = Runner(
            dao=dao, registry=registry, clock=clock, properties=properties, observer=observer,
            admission=self._admission, completions=self._completer, stats=self.stats,
            finished=self._finished, watchdog=self._watchdog,
        )  # fmt: skip
        self._workers: WorkerPool[Job] = WorkerPool(self._runner.execute)
        self._limits = LimitWaits(self._grabber, self._admission, clock)
        self._tg: anyio.abc.TaskGroup | None = None
        self._running = 0
        self._idle: anyio.Event | None = None  # created when shutdown waits for running tasks
        self._grace = properties.shutdown_grace
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()

    @property
    def running(self) -> int:
        """How many tasks this node is processing now."""
        return self._running

    async def run(
        self,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept triggers until :meth:`stop`; use with ``await task_group.start(executor.run)``."""
        if self._tg is not None:
            raise ConfigurationError("executor already running")
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._watchdog.run)  # processing timeouts
                self._tg = tg
                self._admission.accepting = True
                task_status.started()
                await self._stop_requested.wait()
                self.stop_accepting()
                if self._running:
                    self._idle = anyio.Event()
                    await _wait(self._idle, self._grace.total_seconds(), self._clock)
                if self._running:
                    log.warning(
                        "shutdown grace over: cancelling %d running task(s); they stay "
                        "PROCESSING and are recovered after their deadline",
                        self._running,
                    )
                for scope in list(self._runner.blocking_scopes):  # stop waiting for their threads
                    scope.cancel()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._admission.accepting = False
            self._stopped.set()

    def stop_accepting(self) -> None:
        """Refuse new triggers, including those waiting for a free slot (first shutdown step).

        Refused triggers are not grabbed: the tasks stay SUBMITTED and another node (or this
        one after a restart) takes them once their pick-up deadline passes.
        """
        self._admission.close()

    async def stop(self, grace: timedelta | None = None) -> None:
        """Stop taking work; let running tasks finish for ``grace``, then cancel them.

        Cancelled tasks stay PROCESSING and are recovered after their deadline: never lost.
        """
        self.stop_accepting()
        if self._tg is None:
            return
        self._grace = self._props.shutdown_grace if grace is None else grace
        self._stop_requested.set()
        await self._stopped.wait()

    async def on_trigger(self, base: BaseTask) -> None:
        """Handle one trigger: wait for room, grab the task, start it in the background.

        Returns once the task is grabbed or the trigger is found stale, so a broker may
        acknowledge the trigger. Waits (backpressure) while the node or the handler is full.
        The trigger only routes: the handler that runs is the stored task's.
        """
        admission = self._admission
        if not admission.accepting or self._tg is None:
            log.debug("task %s: trigger ignored, executor not accepting work", base.id)
            return
        handler = self._registry.find(base)
        held = await admission.admit(handler)  # step 1
        if held is None:
            log.debug("task %s: trigger dropped, node shutting down", base.id)
            return
        task: Task | None = None
        try:
            if admission.accepting:
                task = await self._limits.grab(base, handler)  # step 2
            if task is not None and (task.type != base.type or task.sub_type != base.sub_type):
                handler = await self._reroute(base, task, handler, held)
            if task is not None and handler is None:
                now = self._clock.now()
                if await self._completer.write(task, unhandled(task, now=now)):
                    self.stats["no_handler"] += 1
            elif task is not None and handler is not None and self._tg is not None:
                self._running += 1
                self._workers.submit(self._tg, (handler, task, held))  # step 3
                held = None  # the job releases it
        finally:
            if held is not None:
                admission.release(held)
                if task is not None:
                    self._observer.task_released(task.type)

    def slot_freed(self, task: BaseTask) -> None:
        """``task`` left PROCESSING outside this node's runs (the resumer resolved it stuck).

        Its global concurrency slot is free: the triggers waiting for its key grab again now,
        not a ``recheck_interval`` later.
        """
        handler = self._registry.find(task)
        if handler is not None:
            self._limits.ended(handler)

    def _finished(self, handler: TaskHandler) -> None:
        """A job ended: one task fewer running (shutdown waits for none)."""
        self._limits.ended(handler)
        self._running -= 1
        if self._running == 0 and self._idle is not None:
            self._idle.set()

    async def _reroute(
        self, base: BaseTask, task: Task, handler: TaskHandler | None, held: Held
    ) -> TaskHandler | None:
        """The trigger disagreed with the stored task (forged or buggy): use the stored one."""
        actual = self._registry.find(task.base)
        log.warning(
            "task %s: trigger says type=%s sub_type=%s but the stored task is type=%s "
            "sub_type=%s; routing by the stored task",
            task.id,
            loggable(base.type),
            loggable(base.sub_type),
            loggable(task.type),
            loggable(task.sub_type),
            extra=task_extra(task),
        )
        if actual is not None and actual is not handler:
            await self._admission.switch(held, actual)
        return actual


async def _wait(event: anyio.Event, seconds: float, clock: Clock) -> bool:
    """Wait for ``event`` at most ``seconds`` of ``clock`` time; True if it was set.

    Also at most ``seconds`` of real time (the same on the system clock): on a fake clock
    nobody advances -- a test that failed inside the node's block -- shutdown cannot hang.
    """
    with anyio.move_on_after(seconds):
        return await wait_event(event, seconds, clock)
    return event.is_set()

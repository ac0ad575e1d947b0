"""Cron jobs on a node: one task handler per job, and the start-up step that creates their tasks.

The engine does the scheduling: each job is one task that its handler runs and returns
``COMMIT_AND_RETRY``; :class:`~resilient_task.domain.cron.CronRetryPolicy` moves it to the next
tick in the version-checked write that records the run, so one run per tick happens however
many nodes run the job. Wiring, in the composition root::

    cron = CronJobs(jobs)
    registry = HandlerRegistry([*handlers, *cron.handlers])
    ...  # once the node runs:
    await cron.ensure(service, clock=clock)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from resilient_task.domain.cron import CronJob
from resilient_task.domain.handler import Processor, TaskHandler
from resilient_task.domain.policies import SimpleConcurrencyPolicy, SimpleProcessingPolicy
from resilient_task.domain.requests import AddTaskRequest
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import FINAL_STATUSES, Task, TaskStatus
from resilient_task.errors import ConfigurationError, VersionConflictError
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.service.task_service import TaskService

__all__ = ["CronJobs"]

log = logging.getLogger("resilient_task.cron")

_ENSURE_ATTEMPTS = 3
"""Reads and writes of a job's task at start-up when other nodes change it meanwhile."""


class CronJobs:
    """The cron jobs of a node: their handlers, and :meth:`ensure` to run once it started."""

    def __init__(self, jobs: Iterable[CronJob] = ()) -> None:
        self.jobs: tuple[CronJob, ...] = tuple(jobs)
        names: set[str] = set()
        for job in self.jobs:
            if not isinstance(job, CronJob):
                raise ConfigurationError(f"expected a CronJob, got {type(job).__name__}")
            if job.name in names:
                raise ConfigurationError(f"two cron jobs are named {job.name!r}")
            names.add(job.name)
        self.handlers: tuple[TaskHandler, ...] = tuple(_handler(job) for job in self.jobs)

    async def ensure(self, service: TaskService, *, clock: Clock) -> None:
        """Create each job's task if missing; move it to the next tick if its schedule changed.

        Safe on every node at once (the task id is the job's; the change is version-checked).
        A job whose task is in ERROR, or in a final status, is logged at ERROR: it does not run.
        """
        for job in self.jobs:
            await _ensure(job, service, clock)


def _handler(job: CronJob) -> TaskHandler:
    return TaskHandler(
        types={job.task_type},
        processor=_processor(job),
        retry_policy=job.retry_policy,
        concurrency_policy=SimpleConcurrencyPolicy(1),
        processing_policy=SimpleProcessingPolicy(timeout=job.timeout),
        transactional=job.transactional,
        name=f"cron job {job.name}",
    )


def _processor(job: CronJob) -> Processor:
    async def run_cron_job(task: Task) -> ProcessResult:
        run = job.run_for(task)
        if job.skips(run):
            log.warning(
                "cron job %s: the run for %s started %s late (over its misfire grace of %s, "
                "missed=SKIP): skipped, the job waits for its next tick",
                job.name,
                run.tick.isoformat(),
                run.started - run.tick,
                job.misfire_grace,
            )
            return ProcessResult.COMMIT_AND_RETRY
        try:
            await job.processor(run)
        except Exception as exc:
            if job.max_failures is not None and task.processing_tries_count >= job.max_failures:
                log.error(
                    "cron job %s stopped: %d runs in a row failed, the last with %s: %s; its task "
                    "%s goes to ERROR and the job runs again once an operator resumes it "
                    "(resilient-task tasks resume %s)",
                    job.name,
                    task.processing_tries_count,
                    type(exc).__name__,
                    loggable(exc),
                    task.id,
                    task.id,
                )
            raise
        return ProcessResult.COMMIT_AND_RETRY

    run_cron_job.__qualname__ = f"cron job {job.name}"
    return run_cron_job


async def _ensure(job: CronJob, service: TaskService, clock: Clock) -> None:
    for _ in range(_ENSURE_ATTEMPTS):
        now = clock.now()
        first = job.cron.next_after(now)
        added = await service.add_task(
            AddTaskRequest(type=job.task_type, task_id=job.task_id, run_after_time=first)
        )
        if added.created:
            log.info("cron job %s: task %s added, first run at %s", job.name, job.task_id, first)
            return
        task = await service.get_task(job.task_id)
        if task is None:
            continue  # deleted meanwhile (a finished task the cleaner removed): add it again
        if task.type != job.task_type:
            raise ConfigurationError(
                f"cron job {job.name!r}: task {job.task_id} has type {loggable(task.type)}, "
                f"not {job.task_type!r}"
            )
        if _stale(task, now=now, first=first):
            try:
                await service.reschedule_task(task.id, first, version=task.version)
            except VersionConflictError:
                continue  # it ran or another node moved it meanwhile: look again
            log.info(
                "cron job %s: schedule %r (%s) changed; next run moved from %s to %s",
                job.name,
                job.schedule,
                job.timezone,
                task.next_event_time.isoformat(),
                first.isoformat(),
            )
            return
        _report(job, task)
        return
    log.warning("cron job %s: its task kept changing while this node started", job.name)


def _stale(task: Task, *, now: datetime, first: datetime) -> bool:
    """Whether a WAITING task's next run is not the schedule's next tick (a changed schedule).

    An overdue task is left to run. A task is moved earlier only to a tick after its last
    change: a node whose clock lags must not move it back to a tick that already ran.
    """
    if task.status is not TaskStatus.WAITING or task.next_event_time <= now:
        return False
    if first > task.next_event_time:
        return True
    return first < task.next_event_time and first > task.updated_at


def _report(job: CronJob, task: Task) -> None:
    if task.status is TaskStatus.ERROR:
        log.error(
            "cron job %s is stopped: its task %s is in ERROR (%s); it runs again once an "
            "operator resumes it (resilient-task tasks resume %s)",
            job.name,
            task.id,
            loggable(task.last_error or "no error recorded"),
            task.id,
        )
    elif task.status in FINAL_STATUSES:
        log.error(
            "cron job %s does not run: its task %s is %s, a final status; the job starts "
            "again when a node starts after the cleaner deleted that task",
            job.name,
            task.id,
            task.status.value,
        )

"""The executor: turns triggers into grabbed tasks, runs processors, records the outcome.

At-least-once with fencing: the grab is a version-checked SUBMITTED -> PROCESSING update, so a
duplicate or stale trigger finds nothing to grab; the completion is version-checked too, so a
run whose task was recovered by another node meanwhile cannot complete it (and, for
transactional handlers, its writes roll back).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import anyio
import anyio.abc

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import BaseTask, Task
from resilient_task.errors import (
    BackendError,
    ConfigurationError,
    ProcessingTimeoutError,
    VersionConflictError,
)
from resilient_task.ports.clock import Clock
from resilient_task.ports.task_dao import GrabRequest, TaskChange, TaskDAO
from resilient_task.properties import TaskProperties
from resilient_task.service.batcher import Batcher
from resilient_task.service.context import ProcessingContext, set_context
from resilient_task.service.outage import OutageLog
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.workers import WorkerPool

__all__ = ["ProcessingTimeoutError", "TaskExecutor"]

log = logging.getLogger("resilient_task.executor")

_WRITE_ATTEMPTS = 6


_Job = tuple[TaskHandler, Task, anyio.Semaphore]
"""A grabbed task to run: its handler, the task, and the policy slot it holds."""


class _FencedError(Exception):
    """The completion lost its version check: the task was taken away from this node."""


class TaskExecutor:
    """Runs triggered tasks on this node, within the handlers' concurrency limits."""

    def __init__(
        self,
        *,
        dao: TaskDAO,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
    ) -> None:
        self._dao = dao
        self._registry = registry
        self._clock = clock
        self._props = properties
        self._node_slots = anyio.Semaphore(properties.max_triggers_in_memory)
        self._policy_slots: dict[int, anyio.Semaphore] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._accepting = False
        self._running = 0
        self._idle: anyio.Event | None = None  # created when shutdown waits for running tasks
        self._workers: WorkerPool[_Job] = WorkerPool(self._execute)
        self._waiting: set[anyio.CancelScope] = set()
        self._unlimited = anyio.Semaphore(2**31)  # the "policy" of tasks without a handler
        self._grabs: Batcher[GrabRequest, Task | None] = Batcher(self._grab_batch)
        self._completions: Batcher[TaskChange, bool] = Batcher(self._dao.apply)
        self._grace = properties.shutdown_grace
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        self._db = OutageLog(log, "database")
        self.stats: Counter[str] = Counter()
        """Counts of what happened on this node: grabbed, done, retried, error, stale, fenced..."""

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
                self._tg = tg
                self._accepting = True
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
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._accepting = False
            self._stopped.set()

    def stop_accepting(self) -> None:
        """Refuse new triggers, including those waiting for a free slot (first shutdown step).

        Refused triggers are not grabbed: the tasks stay SUBMITTED and another node (or this
        one after a restart) takes them once their pick-up deadline passes.
        """
        self._accepting = False
        for scope in list(self._waiting):
            scope.cancel()

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
        if not self._accepting or self._tg is None:
            log.debug("task %s: trigger ignored, executor not accepting work", base.id)
            return
        handler = self._registry.find(base)
        slots = self._slots_for(handler) if handler is not None else self._unlimited
        if not await self._acquire(slots):
            log.debug("task %s: trigger dropped, node shutting down", base.id)
            return
        held = [slots]  # the policy slot currently held (none if re-acquiring was cancelled)
        started = False
        try:
            task = await self._grab(base, handler) if self._accepting else None
            if task is not None and (task.type != base.type or task.sub_type != base.sub_type):
                handler = await self._reroute(base, task, handler, held)
            if task is not None and handler is None:
                await self._reject_unhandled(task)
            elif task is not None and handler is not None and self._tg is not None:
                self._running += 1
                self._workers.submit(self._tg, (handler, task, held[0]))
                started = True
        finally:
            if not started:
                for policy_slots in held:
                    policy_slots.release()
                self._node_slots.release()

    async def _reroute(
        self,
        base: BaseTask,
        task: Task,
        handler: TaskHandler | None,
        held: list[anyio.Semaphore],
    ) -> TaskHandler | None:
        """The trigger disagreed with the stored task (forged or buggy): use the stored one."""
        actual = self._registry.find(task.base)
        log.warning(
            "task %s: trigger says type=%r sub_type=%r but the stored task is type=%r "
            "sub_type=%r; routing by the stored task",
            task.id,
            base.type,
            base.sub_type,
            task.type,
            task.sub_type,
        )
        if actual is not None and actual is not handler:
            slots = self._slots_for(actual)
            if slots is not held[0]:
                held.pop().release()
                await slots.acquire()
                held.append(slots)
        return actual

    async def _acquire(self, policy_slots: anyio.Semaphore) -> bool:
        """Take a node slot and a policy slot; False (holding none) when shutdown began."""
        if _try_acquire(self._node_slots):  # fast path: no waiting, no cancel scope
            if _try_acquire(policy_slots):
                return True
            self._node_slots.release()
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                await self._node_slots.acquire()
                try:
                    await policy_slots.acquire()
                except BaseException:
                    self._node_slots.release()
                    raise
            finally:
                self._waiting.discard(scope)
        if scope.cancelled_caught:
            return False
        if not self._accepting:
            policy_slots.release()
            self._node_slots.release()
            return False
        return True

    def _slots_for(self, handler: TaskHandler) -> anyio.Semaphore:
        policy = handler.concurrency_policy
        slots = self._policy_slots.get(id(policy))
        if slots is None:
            slots = anyio.Semaphore(policy.max_concurrency)
            self._policy_slots[id(policy)] = slots
        return slots

    async def _grab(self, base: BaseTask, handler: TaskHandler | None) -> Task | None:
        now = self._clock.now()
        timeout = (
            self._registry.timeout(handler, self._props)
            if handler is not None
            else self._props.task_stuck_timeout
        )
        deadline = now + timeout + self._props.processing_grace
        request = GrabRequest(base.id, base.version, self._props.node_id, deadline)
        try:
            task = await self._grabs.submit(request)
        except BackendError as exc:
            self._db.failed(exc, f"grabbing task {base.id}")
            self.stats["grab_failed"] += 1
            return None
        self._db.succeeded()
        if task is None:
            self.stats["stale"] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "task %s v%d: stale or duplicate trigger, nothing grabbed",
                    base.id,
                    base.version,
                )
            return None
        self.stats["grabbed"] += 1
        if log.isEnabledFor(logging.INFO):
            log.info(
                "task %s type=%s SUBMITTED -> PROCESSING attempt=%d node=%s",
                task.id,
                task.type,
                task.processing_tries_count,
                self._props.node_id,
            )
        return task

    async def _grab_batch(self, requests: Sequence[GrabRequest]) -> list[Task | None]:
        """One round trip for every grab queued meanwhile (group commit)."""
        grabbed = await self._dao.grab(requests, now=self._clock.now())
        by_key = {(t.id, t.version - 1): t for t in grabbed}
        # A duplicate trigger in the same batch must not run the task twice: first one wins.
        return [by_key.pop((r.task_id, r.version), None) for r in requests]

    async def _reject_unhandled(self, task: Task) -> None:
        """No handler for the stored task: ERROR with the reason, visible to operators."""
        reason = f"no handler accepts task type {task.type!r}"
        now = self._clock.now()
        if await self._write(
            task, TaskChange(task.mark_error(now=now, reason=reason), task.version)
        ):
            self.stats["no_handler"] += 1

    async def _execute(self, job: _Job) -> None:
        handler, task, policy_slots = job
        holding_policy_slot = True
        try:
            if handler.transactional:
                await self._execute_in_transaction(handler, task)
            else:
                outcome = await self._call(handler, task, None)
                # The handler is done running: its concurrency slot is free while the outcome
                # is written (the node-wide slot still bounds what this node holds).
                policy_slots.release()
                holding_policy_slot = False
                await self._write(task, self._decide(handler, task, outcome))
        except Exception:  # a bug of ours must not kill the node; the deadline recovers it
            log.exception("task %s: unexpected executor failure", task.id)
        finally:
            if holding_policy_slot:
                policy_slots.release()
            self._node_slots.release()
            self._running -= 1
            if self._running == 0 and self._idle is not None:
                self._idle.set()

    async def _execute_in_transaction(self, handler: TaskHandler, task: Task) -> None:
        failure: BaseException | None = None
        try:
            async with self._dao.transaction() as tx:
                outcome = await self._call(handler, task, tx)
                if isinstance(outcome, BaseException):
                    failure = outcome
                    raise outcome  # roll the handler's writes back
                change = self._decide(handler, task, outcome)
                written = await self._dao.apply([change], transaction=tx)
                if not written[0]:
                    raise _FencedError
            self._log_outcome(task, change)
            return
        except (_FencedError, VersionConflictError) as exc:
            if exc is not failure:  # the processor's own conflict is a failed attempt
                self.stats["fenced"] += 1
                log.warning(
                    "task %s: taken away from this node meanwhile (version %d is "
                    "stale); its completion and the handler's writes were rolled back",
                    task.id,
                    task.version,
                )
                return
        except BackendError as exc:
            failure = failure or exc
        except Exception as exc:
            failure = failure or exc
        await self._write(task, self._decide(handler, task, failure))

    async def _call(self, handler: TaskHandler, task: Task, tx: Any) -> ProcessResult | Exception:
        """Run the processor under its timeout; returns its result or the failure."""
        timeout = self._registry.timeout(handler, self._props)
        now = self._clock.now()
        context = ProcessingContext(
            task=task, node_id=self._props.node_id, timeout_at=now + timeout, transaction=tx
        )
        token = set_context(context)
        outcome: ProcessResult | Exception | None = None
        try:
            with self._clock.timeout_scope(timeout.total_seconds()) as scope:
                try:
                    outcome = await handler.processor(task)
                except Exception as exc:
                    outcome = exc
        finally:
            set_context(None)
            del token
        timed_out = scope.cancel_called
        if timed_out:
            return ProcessingTimeoutError(f"processing exceeded its timeout of {timeout}")
        if outcome is None or not isinstance(outcome, (ProcessResult, Exception)):
            return TypeError(f"processor returned {outcome!r}; expected a ProcessResult")
        return outcome

    def _decide(
        self, handler: TaskHandler, task: Task, outcome: ProcessResult | BaseException | None
    ) -> TaskChange:
        now = self._clock.now()
        if outcome is ProcessResult.DONE:
            return TaskChange(task.complete(now=now), task.version)
        if outcome is ProcessResult.DONE_AND_DELETE:
            return TaskChange(task.complete(now=now), task.version, delete=True)
        policy = handler.retry_policy
        if outcome is ProcessResult.COMMIT_AND_RETRY:
            reset = policy.reset_tries_on_repeat
            basis = task if not reset else _with_tries(task, 1)
            run_at = policy.next_run(basis, now=now)
            if run_at is None:
                return TaskChange(task.complete(now=now), task.version)
            return TaskChange(
                task.schedule(now=now, run_at=run_at, reset_tries=reset), task.version
            )
        error = _describe(outcome)
        run_at = policy.next_run(task, now=now)
        if run_at is None:
            reason = f"gave up after {task.processing_tries_count} attempt(s): {error}"
            return TaskChange(task.mark_error(now=now, reason=reason), task.version)
        return TaskChange(task.schedule(now=now, run_at=run_at, error=error), task.version)

    async def _write(self, task: Task, change: TaskChange) -> bool:
        """Persist a completion, retrying transient failures until shortly before the deadline."""
        delay = 0.05
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                written = await self._completions.submit(change)
            except BackendError as exc:
                self._db.failed(exc, f"recording the outcome of task {task.id}")
                if not exc.transient or attempt == _WRITE_ATTEMPTS:
                    log.error(
                        "task %s: outcome not recorded (%s); it stays PROCESSING and is "
                        "recovered after its deadline",
                        task.id,
                        exc,
                    )
                    return False
                await self._clock.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._db.succeeded()
            if not written:
                self.stats["fenced"] += 1
                log.warning(
                    "task %s: outcome rejected, version %d is stale (the task was "
                    "recovered by another node meanwhile)",
                    task.id,
                    task.version,
                )
                return False
            self._log_outcome(task, change)
            return True
        return False

    def _log_outcome(self, task: Task, change: TaskChange) -> None:
        new = change.task
        kind = (
            "deleted"
            if change.delete
            else "retried"
            if new.status == "WAITING" and new.last_error
            else "repeated"
            if new.status == "WAITING"
            else new.status.value.lower()
        )
        self.stats[kind] += 1
        level = (
            logging.ERROR
            if new.status == "ERROR"
            else (logging.WARNING if kind == "retried" else logging.INFO)
        )
        if log.isEnabledFor(level):
            log.log(
                level,
                "task %s type=%s PROCESSING -> %s attempt=%d%s%s",
                task.id,
                task.type,
                "DELETED" if change.delete else new.status.value,
                task.processing_tries_count,
                f" next_run={new.next_event_time.isoformat()}" if new.status == "WAITING" else "",
                f" error={new.last_error!r}" if new.last_error else "",
            )


def _with_tries(task: Task, tries: int) -> Task:
    return replace(task, processing_tries_count=tries)


def _describe(outcome: object) -> str:
    if isinstance(outcome, BaseException):
        text = str(outcome)
        return f"{type(outcome).__name__}: {text}" if text else type(outcome).__name__
    return f"unexpected outcome {outcome!r}"


async def _wait(event: anyio.Event, seconds: float, clock: Clock) -> bool:
    """Wait for ``event`` at most ``seconds`` of ``clock`` time; True if it was set."""
    if event.is_set():
        return True
    async with anyio.create_task_group() as tg:

        async def timer() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(timer)
        await event.wait()
        tg.cancel_scope.cancel()
    return event.is_set()


def _try_acquire(semaphore: anyio.Semaphore) -> bool:
    try:
        semaphore.acquire_nowait()
    except anyio.WouldBlock:
        return False
    return True

"""The executor: turns triggers into grabbed tasks, runs processors, records the outcome.

At-least-once with fencing: the grab is a version-checked SUBMITTED -> PROCESSING update, so a
duplicate or stale trigger finds nothing to grab; the completion is version-checked too, so a
run whose task was recovered by another node meanwhile cannot complete it (and, for
transactional handlers, its writes roll back).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
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
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer, ProcessOutcome
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


_Job = tuple[TaskHandler, Task, anyio.Semaphore, "anyio.Semaphore | None"]
"""A grabbed task to run: its handler, the task, the policy slot and connection slot it holds."""

_CONNECTION_HEADROOM = 2
"""Pooled connections left to grabs and completions (one batch each at a time) when
transactional tasks, each holding a connection while it runs, are bounded by the pool."""


class _FencedError(Exception):
    """The completion lost its version check: the task was taken away from this node."""


class _RollBackError(Exception):
    """The processor failed: roll its transaction back, then record the failure."""


class _Expired:
    """The grabbed task's deadline passed before its processor could start."""


_EXPIRED = _Expired()


class TaskExecutor:
    """Runs triggered tasks on this node, within the handlers' concurrency limits."""

    def __init__(
        self,
        *,
        dao: TaskDAO,
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
        self._node_slots = anyio.Semaphore(properties.max_triggers_in_memory)
        self._policy_slots: dict[int, anyio.Semaphore] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._accepting = False
        self._running = 0
        self._idle: anyio.Event | None = None  # created when shutdown waits for running tasks
        self._workers: WorkerPool[_Job] = WorkerPool(self._execute)
        self._waiting: set[anyio.CancelScope] = set()
        self._unlimited = anyio.Semaphore(2**31)  # the "policy" of tasks without a handler
        # Transactional tasks hold a pooled connection while they run: when the handlers allow
        # more of them than the pool holds, they wait for one of these before being grabbed.
        self._connection_slots: anyio.Semaphore | None = None
        self._bound_transactional_tasks()
        self._blocking_scopes: set[anyio.CancelScope] = set()  # see blocking_processor
        self._grabs: Batcher[GrabRequest, Task | Exception | None] = Batcher(self._grab_batch)
        self._completions: Batcher[TaskChange, bool] = Batcher(self._dao.apply)
        self._grace = properties.shutdown_grace
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        self._db = OutageLog(log, "database", observer)
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
                for scope in list(self._blocking_scopes):  # stop waiting for their threads
                    scope.cancel()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._accepting = False
            self._stopped.set()

    def _bound_transactional_tasks(self) -> None:
        """Let no more transactional tasks run at once than the store's pool can serve.

        A transactional task holds a pooled connection while its processor runs. Grabbed
        beyond the pool's size, it would wait for a connection after the grab -- past its
        deadline, or until the pool's timeout fails it. Bounded here, the surplus waits for a
        slot *before* the grab instead, like any concurrency limit.

        Raises:
            ConfigurationError: the pool cannot hold a running transactional task and the
                connection that grabs and completions need beside it.
        """
        capacity = getattr(self._dao, "max_connections", None)
        limits = {
            id(h.concurrency_policy): h.concurrency_policy.max_concurrency
            for h in self._registry.handlers
            if h.transactional
        }
        wanted = min(sum(limits.values()), self._props.max_triggers_in_memory)
        if not isinstance(capacity, int) or not limits or wanted + _CONNECTION_HEADROOM <= capacity:
            return
        if capacity < _CONNECTION_HEADROOM:
            raise ConfigurationError(
                f"transactional handlers need a database pool of at least "
                f"{_CONNECTION_HEADROOM} connections (one held by each running task, one for "
                f"grabs and completions); this pool holds {capacity}"
            )
        allowed = max(1, capacity - _CONNECTION_HEADROOM)
        self._connection_slots = anyio.Semaphore(allowed)
        log.warning(
            "transactional handlers allow %d task(s) at once but the database pool holds %d "
            "connection(s): at most %d transactional task(s) run at once on this node, the "
            "others wait before being grabbed (raise pool_size / max_overflow, or lower the "
            "handlers' concurrency_policy)",
            wanted,
            capacity,
            allowed,
        )

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
        received = self._clock.now()
        handler = self._registry.find(base)
        slots = self._slots_for(handler) if handler is not None else self._unlimited
        connection = self._connection_slots if handler and handler.transactional else None
        if not await self._acquire(slots, connection):
            log.debug("task %s: trigger dropped, node shutting down", base.id)
            return
        # The policy and connection slots held (None: none, e.g. re-acquiring was cancelled).
        held: list[anyio.Semaphore | None] = [slots, connection]
        started = False
        task: Task | None = None
        try:
            task = await self._grab(base, handler, received) if self._accepting else None
            if task is not None and (task.type != base.type or task.sub_type != base.sub_type):
                handler = await self._reroute(base, task, handler, held)
            if task is not None and handler is None:
                await self._reject_unhandled(task)
            elif task is not None and handler is not None and self._tg is not None:
                assert held[0] is not None
                self._running += 1
                self._workers.submit(self._tg, (handler, task, held[0], held[1]))
                started = True
        finally:
            if not started:
                _release(held)
                self._node_slots.release()
                if task is not None:
                    self._observer.task_released(task.type)

    async def _reroute(
        self,
        base: BaseTask,
        task: Task,
        handler: TaskHandler | None,
        held: list[anyio.Semaphore | None],
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
            connection = self._connection_slots if actual.transactional else None
            for index, slots in enumerate((self._slots_for(actual), connection)):
                if slots is not held[index]:
                    _release([held[index]])
                    held[index] = None
                    if slots is not None:
                        await slots.acquire()
                        held[index] = slots
        return actual

    async def _acquire(
        self, policy_slots: anyio.Semaphore, connection_slots: anyio.Semaphore | None
    ) -> bool:
        """Take a node, a policy and (if given) a connection slot; False when shutdown began.

        On False, or when this raises, no slot is held.
        """
        if _try_acquire(self._node_slots):  # fast path: no waiting, no cancel scope
            if _try_acquire(policy_slots):
                if connection_slots is None or _try_acquire(connection_slots):
                    return True
                policy_slots.release()
            self._node_slots.release()
        taken: list[anyio.Semaphore | None] = []
        try:
            with anyio.CancelScope() as scope:
                self._waiting.add(scope)
                try:
                    for slots in (self._node_slots, policy_slots, connection_slots):
                        if slots is not None:
                            await slots.acquire()
                            taken.append(slots)
                finally:
                    self._waiting.discard(scope)
        except BaseException:
            _release(taken)
            raise
        if scope.cancelled_caught or not self._accepting:
            _release(taken)
            return False
        return True

    def _slots_for(self, handler: TaskHandler) -> anyio.Semaphore:
        policy = handler.concurrency_policy
        slots = self._policy_slots.get(id(policy))
        if slots is None:
            slots = anyio.Semaphore(policy.max_concurrency)
            self._policy_slots[id(policy)] = slots
        return slots

    async def _grab(
        self, base: BaseTask, handler: TaskHandler | None, received: datetime
    ) -> Task | None:
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
            if isinstance(task, Exception):
                raise task  # this request failed on its own (see _grab_batch)
        except BackendError as exc:
            self._db.failed(exc, f"grabbing task {base.id}")
            self.stats["grab_failed"] += 1
            return None
        except Exception as exc:  # the store refused this trigger's values: not an outage
            self.stats["grab_failed"] += 1
            log.warning(
                "task %s v%s: trigger not grabbed, the store refused it: %s",
                base.id,
                loggable(base.version),
                loggable(_describe(exc)),
                extra=task_extra(base),
            )
            return None
        self._db.succeeded()
        if task is None:
            self.stats["stale"] += 1
            self._observer.task_stale()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "task %s v%d: stale or duplicate trigger, nothing grabbed",
                    base.id,
                    base.version,
                )
            return None
        self.stats["grabbed"] += 1
        self._observer.task_grabbed(task.type, (task.updated_at - received).total_seconds())
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

    async def _grab_batch(self, requests: Sequence[GrabRequest]) -> list[Task | Exception | None]:
        """One round trip for every grab queued meanwhile (group commit).

        A batch the store refuses for another reason than a backend failure (a value out of
        range in one forged trigger...) is split in halves and retried, down to the single
        requests at fault: their result is the error, every other request is grabbed now.
        """
        try:
            grabbed = await self._dao.grab(requests, now=self._clock.now())
        except BackendError:
            raise  # an outage or a transient failure: every request of the batch shares it
        except Exception:
            if len(requests) == 1:
                raise
            half = len(requests) // 2
            results: list[Task | Exception | None] = []
            for part in (requests[:half], requests[half:]):
                try:
                    results += await self._grab_batch(part)
                except Exception as exc:
                    results += [exc] * len(part)
            return results
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
        handler, task, policy_slots, connection_slots = job
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
                if not isinstance(outcome, _Expired):
                    await self._write(task, self._decide(handler, task, outcome))
        except Exception:  # a bug of ours must not kill the node; the deadline recovers it
            log.exception("task %s: unexpected executor failure", task.id, extra=task_extra(task))
        finally:
            self._observer.task_released(task.type)
            if holding_policy_slot:
                policy_slots.release()
            if connection_slots is not None:
                connection_slots.release()
            self._node_slots.release()
            self._running -= 1
            if self._running == 0 and self._idle is not None:
                self._idle.set()

    async def _execute_in_transaction(self, handler: TaskHandler, task: Task) -> None:
        failure: BaseException | None = None
        try:
            async with self._dao.transaction() as tx:
                outcome = await self._call(handler, task, tx)
                if isinstance(outcome, _Expired):
                    return
                if not isinstance(outcome, ProcessResult):
                    failure = outcome
                    raise _RollBackError  # roll the handler's writes back
                change = self._decide(handler, task, outcome)
                written = await self._dao.apply([change], transaction=tx)
                if not written[0]:
                    raise _FencedError
            self._log_outcome(task, change)
            return
        except _RollBackError:
            pass
        except (_FencedError, VersionConflictError):
            self.stats["fenced"] += 1
            self._observer.task_processed(task.type, ProcessOutcome.FENCED, 0.0)
            log.warning(
                "task %s: taken away from this node meanwhile (version %d is stale); its "
                "completion and the handler's writes were rolled back",
                task.id,
                task.version,
                extra=task_extra(task),
            )
            return
        except Exception as exc:  # BEGIN or COMMIT failed, or the store refused the handle's use
            failure = exc
        await self._write(task, self._decide(handler, task, failure))

    async def _call(
        self, handler: TaskHandler, task: Task, tx: Any
    ) -> ProcessResult | BaseException | _Expired:
        """Run the processor under its timeout; returns its result or the failure.

        Whatever the processor raises is its task's failure -- ``CancelledError`` of its own
        or of a future someone else cancelled, ``KeyboardInterrupt``, ``SystemExit`` -- except
        a real cancellation (the timeout, or the node stopping), which only ends this run.
        """
        timeout = self._registry.timeout(handler, self._props)
        now = self._clock.now()
        if now >= task.next_event_time:
            self.stats["expired"] += 1
            log.warning(
                "task %s type=%s: not started, its deadline %s passed while it waited%s; it "
                "stays PROCESSING and is recovered",
                task.id,
                loggable(task.type),
                task.next_event_time.isoformat(),
                " for a database connection" if tx is not None else "",
                extra=task_extra(task),
            )
            return _EXPIRED
        context = ProcessingContext(
            task=task,
            node_id=self._props.node_id,
            timeout_at=now + timeout,
            transaction=tx,
            blocking_scopes=self._blocking_scopes,
        )
        set_context(context)
        outcome: object = None
        try:
            with self._clock.timeout_scope(timeout.total_seconds()) as scope:
                try:
                    outcome = await handler.processor(task)
                except BaseException as exc:
                    if _stops_the_run(exc):
                        raise
                    outcome = exc
        finally:
            set_context(None)
        if scope.cancel_called:
            self._observer.task_timed_out(task.type)
            return ProcessingTimeoutError(f"processing exceeded its timeout of {timeout}")
        if isinstance(outcome, (ProcessResult, BaseException)):
            return outcome
        return TypeError(f"processor returned {_shown(outcome)}; expected a ProcessResult")

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
                        loggable(exc),
                        extra=task_extra(task),
                    )
                    return False
                await self._clock.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._db.succeeded()
            if not written:
                self.stats["fenced"] += 1
                self._observer.task_processed(task.type, ProcessOutcome.FENCED, 0.0)
                log.warning(
                    "task %s: outcome rejected, version %d is stale (the task was "
                    "recovered by another node meanwhile)",
                    task.id,
                    task.version,
                    extra=task_extra(task),
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
        # The grab and the decision each stamped updated_at: no extra clock read.
        seconds = (new.updated_at - task.updated_at).total_seconds()
        self._observer.task_processed(task.type, _OUTCOMES.get(kind, ProcessOutcome.ERROR), seconds)
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
                loggable(task.type),
                "DELETED" if change.delete else new.status.value,
                task.processing_tries_count,
                f" next_run={new.next_event_time.isoformat()}" if new.status == "WAITING" else "",
                f" error={loggable(new.last_error)}" if new.last_error else "",
                extra=task_extra(task),
            )


_OUTCOMES = {
    "done": ProcessOutcome.DONE,
    "deleted": ProcessOutcome.DELETED,
    "repeated": ProcessOutcome.REPEAT,
    "retried": ProcessOutcome.RETRY,
    "error": ProcessOutcome.ERROR,
}
"""The observer's outcome of each ``stats`` kind of a recorded run."""


def _with_tries(task: Task, tries: int) -> Task:
    return replace(task, processing_tries_count=tries)


def _describe(outcome: object) -> str:
    """The error text recorded for a failed run; never raises."""
    if isinstance(outcome, BaseException):
        name = type(outcome).__name__
        try:
            text = str(outcome)
        except BaseException:  # a broken __str__ must not lose the failure
            return f"{name} (no message: str() of the exception raised)"
        return f"{name}: {text}" if text else name
    return f"unexpected outcome {_shown(outcome)}"


def _shown(value: object) -> str:
    """``repr(value)``, cut to a log line's length; never raises."""
    try:
        return loggable(repr(value))
    except Exception:
        return f"a {type(value).__name__}"


def _stops_the_run(exc: BaseException) -> bool:
    """Whether ``exc`` ends the processor's run without failing its task.

    A real cancellation (the timeout, or the node stopping) reaches the processor through a
    cancelled scope: ``current_effective_deadline()`` is then ``-inf``. A ``CancelledError``
    the processor raised itself, or got from a future someone else cancelled, comes with no
    cancelled scope and is the task's failure. ``GeneratorExit`` closes the coroutine.
    """
    if isinstance(exc, GeneratorExit):
        return True
    return (
        isinstance(exc, anyio.get_cancelled_exc_class())
        and anyio.current_effective_deadline() == -math.inf
    )


def _release(slots: Sequence[anyio.Semaphore | None]) -> None:
    for semaphore in slots:
        if semaphore is not None:
            semaphore.release()


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

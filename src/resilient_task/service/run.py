"""The run: a grabbed task's processor, under its timeout, then its outcome recorded.

Each job runs on a reused worker task (:mod:`~resilient_task.service.workers`) with the
task's :class:`ProcessingContext` installed. A transactional handler's run, its completion and
its own writes share one store transaction: a failed processor or a fenced completion rolls
them all back. Non-transactional runs free their concurrency slot before the outcome is
written (:mod:`~resilient_task.service.completion`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable

import anyio

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.outcome import decide
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import Task
from resilient_task.errors import ProcessingTimeoutError, VersionConflictError
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import Observer
from resilient_task.properties import TaskProperties
from resilient_task.service.admission import Admission, Held
from resilient_task.service.completion import Completions, change_of
from resilient_task.service.context import ProcessingContext, set_context
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.service.timeouts import Watchdog

__all__ = ["Job", "Runner"]

log = logging.getLogger("resilient_task.executor")

Job = tuple[TaskHandler, Task, Held]
"""A grabbed task to run: its handler, the task and the slots it holds."""


class _FencedError(Exception):
    """The completion lost its version check: the task was taken away from this node."""


class _RollBackError(Exception):
    """The processor failed: roll its transaction back, then record the failure."""


class Runner:
    """Runs grabbed tasks' processors for one executor."""

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
        observer: Observer,
        admission: Admission,
        completions: Completions,
        stats: Counter[str],
        finished: Callable[[TaskHandler], None],
        watchdog: Watchdog,
    ) -> None:
        self._dao = dao
        self._registry = registry
        self._clock = clock
        self._props = properties
        self._observer = observer
        self._admission = admission
        self._completions = completions
        self._stats = stats
        self._finished = finished
        self._watchdog = watchdog
        self.blocking_scopes: set[anyio.CancelScope] = set()
        """Scopes of tasks waiting for a thread (see blocking_processor); stop cancels them."""

    async def execute(self, job: Job) -> None:
        """Run one grabbed task and record its outcome; never raises (a worker runs it)."""
        handler, task, held = job
        try:
            if handler.transactional:
                await self._execute_in_transaction(handler, task)
            else:
                outcome = await self.call(handler, task, None)
                # The handler is done running: its concurrency slot is free while the outcome
                # is written (the node-wide slot still bounds what this node holds).
                self._admission.release_policy(held)
                if outcome is not None:  # step 4
                    now = self._clock.now()
                    await self._completions.write(
                        task, decide(task, outcome, handler.retry_policy, now=now)
                    )
        except Exception:  # a bug of ours must not kill the node; the deadline recovers it
            log.exception("task %s: unexpected executor failure", task.id, extra=task_extra(task))
        finally:
            self._observer.task_released(task.type)
            self._admission.release(held)
            self._finished(handler)

    async def _execute_in_transaction(self, handler: TaskHandler, task: Task) -> None:
        failure: BaseException | None = None
        try:
            async with self._dao.transaction() as tx:
                outcome = await self.call(handler, task, tx)
                if outcome is None:
                    return
                if not isinstance(outcome, ProcessResult):
                    failure = outcome
                    raise _RollBackError  # roll the handler's writes back
                decision = decide(task, outcome, handler.retry_policy, now=self._clock.now())
                written = await self._dao.apply([change_of(task, decision)], transaction=tx)
                if not written[0]:
                    raise _FencedError
            self._completions.record(task, decision)
            return
        except _RollBackError:
            pass
        except (_FencedError, VersionConflictError):
            self._completions.fenced(task, rolled_back=True)
            return
        except Exception as exc:  # BEGIN or COMMIT failed, or the store refused the handle's use
            failure = exc
        assert failure is not None
        decision = decide(task, failure, handler.retry_policy, now=self._clock.now())
        await self._completions.write(task, decision)

    async def call(
        self, handler: TaskHandler, task: Task, tx: object
    ) -> ProcessResult | BaseException | None:
        """Run the processor under its timeout; its result, its failure, or None: not started.

        Whatever the processor raises is its task's failure -- ``CancelledError`` of its own
        or of a future someone else cancelled, ``KeyboardInterrupt``, ``SystemExit`` -- except
        a real cancellation (the timeout, or the node stopping), which only ends this run.
        """
        timeout = self._registry.timeout(handler, self._props)
        now = self._clock.now()
        if now >= task.next_event_time:
            self._stats["expired"] += 1
            log.warning(
                "task %s type=%s: not started, its deadline %s passed while it waited%s; it "
                "stays PROCESSING and is recovered",
                task.id,
                loggable(task.type),
                task.next_event_time.isoformat(),
                " for a database connection" if tx is not None else "",
                extra=task_extra(task),
            )
            return None
        set_context(
            ProcessingContext(
                task=task, node_id=self._props.node_id, timeout_at=now + timeout,
                transaction=tx, blocking_scopes=self.blocking_scopes,
            )
        )  # fmt: skip
        outcome: object = None
        try:
            # Cancelled by the executor's watchdog at the deadline (a timer per run costs more).
            with anyio.CancelScope() as scope:
                deadline = self._watchdog.watch(scope, now + timeout, now=now)
                try:
                    outcome = await handler.processor(task)
                except BaseException as exc:
                    if _stops_the_run(exc):
                        raise
                    outcome = exc
                finally:
                    self._watchdog.forget(deadline)
        finally:
            set_context(None)
        if scope.cancel_called:
            self._observer.task_timed_out(task.type)
            return ProcessingTimeoutError(f"processing exceeded its timeout of {timeout}")
        if isinstance(outcome, (ProcessResult, BaseException)):
            return outcome
        return TypeError(f"processor returned {_shown(outcome)}; expected a ProcessResult")


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

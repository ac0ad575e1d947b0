"""The resumer: the database-polling safety net behind every trigger.

Each poll (every ``resumer.polling_interval``, on every node, no leader needed):

1. due WAITING tasks are claimed (WAITING -> SUBMITTED) and triggered;
2. SUBMITTED tasks past their pick-up deadline are re-submitted and triggered again -- or run
   on this node when the trigger cannot be sent (the broker is down);
3. PROCESSING tasks past their deadline (their node died or hung) follow the handler's
   stuck-task strategy; RETRY is capped by ``max_recoveries``, then ERROR. A recovered task
   is started on this node at once (when its executor has room) as well as triggered: the
   dead node's trigger partitions deliver nothing until the consumer group has waited out the
   dead member's session.

Claims are compare-and-set (and ``SKIP LOCKED`` in PostgreSQL), so nodes polling at once
never take the same task twice; only the node whose compare-and-set won logs and counts a
change. :meth:`TaskResumer.stop_claiming` is the first step of a node's shutdown: a stopping
node must not claim tasks it can no longer run.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from uuid import UUID

import anyio
import anyio.abc

from resilient_task.domain.policies import SimpleProcessingPolicy, StuckTaskResolutionStrategy
from resilient_task.domain.task import BaseTask, Task, TaskStatus
from resilient_task.errors import BackendError, TriggerError
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer, RecoveryStrategy
from resilient_task.ports.task_dao import TaskChange
from resilient_task.ports.triggerer import Triggerer
from resilient_task.properties import TaskProperties
from resilient_task.service.executor import TaskExecutor
from resilient_task.service.outage import OutageLog, repeat_every
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO

__all__ = ["TaskResumer"]

log = logging.getLogger("resilient_task.resumer")
_DEFAULT_PROCESSING = SimpleProcessingPolicy()
_REMEMBERED_RETRIGGERS = 100_000
_TRIGGER_PATIENCE = 0.5
"""Seconds the resumer waits for the broker to take its triggers before running them itself."""
_S = StuckTaskResolutionStrategy


class TaskResumer:
    """Polls the store for due and stuck tasks. ``run()`` loops; ``run_once()`` is one poll."""

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        triggerer: Triggerer,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
        executor: TaskExecutor | None = None,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._dao = dao
        self._triggerer = triggerer
        self._registry = registry
        self._clock = clock
        self._props = properties
        self._executor = executor
        self._observer = observer
        self._db = OutageLog(log, "database", observer)
        self._broker = OutageLog(log, "trigger broker", observer)
        self._retriggered: OrderedDict[UUID, None] = OrderedDict()
        self._claiming = True
        self._background: anyio.abc.TaskGroup | None = None
        self.stats: Counter[str] = Counter()
        """Counts: resumed (due WAITING), retriggered, recovered, stuck_error, stuck_failed..."""

    async def run(self) -> None:
        """Poll forever, every polling interval; survives backend outages. Cancel to stop."""
        async with anyio.create_task_group() as background:
            self._background = background
            try:
                await repeat_every(
                    self.run_once,
                    seconds=self._props.resumer.polling_interval.total_seconds(),
                    clock=self._clock,
                    outage=self._db,
                    doing="polling for due and stuck tasks",
                )
            finally:
                self._background = None

    def stop_claiming(self) -> None:
        """Claim nothing from now on (a node's first shutdown step); a poll under way stops.

        A stopping node that moved due tasks to SUBMITTED could no longer run them: they would
        wait a whole ``expected_queue_time`` for another node. Idempotent.
        """
        if self._claiming:
            log.info("resumer stops claiming tasks: this node is stopping")
        self._claiming = False

    async def run_once(self) -> int:
        """One poll over due, overdue and stuck tasks; returns how many tasks it acted on."""
        if not self._claiming:
            return 0
        acted = await self._resume_due()
        if self._claiming:
            acted += await self._retrigger_overdue()
        if self._claiming:
            acted += await self._resolve_stuck()
        return acted

    async def _resume_due(self) -> int:
        total = 0
        batch = self._props.resumer.batch_size
        while self._claiming:
            now = self._clock.now()
            claimed = await self._dao.claim_due(
                now=now, limit=batch, deadline=now + self._props.expected_queue_time
            )
            if not claimed:
                return total
            total += len(claimed)
            self.stats["resumed"] += len(claimed)
            for task in claimed:
                log.info("task %s type=%s WAITING -> SUBMITTED (due)", task.id, loggable(task.type))
            await self._trigger(claimed)
            if len(claimed) < batch:
                return total
        return total

    async def _retrigger_overdue(self) -> int:
        total = 0
        batch = self._props.resumer.batch_size
        while self._claiming:
            now = self._clock.now()
            won = await self._dao.resubmit_overdue(
                now=now,
                limit=batch,
                deadline=now + self._props.expected_queue_time,
                deadlines={
                    type_: now + wait
                    for type_, wait in self._registry.queue_times_by_type().items()
                },
            )
            total += len(won)
            # A task this node already re-triggered that is overdue again was not delivered
            # although the broker accepted the trigger (e.g. a broker that lost its log): run
            # it here instead of trusting the broker a third time.
            again = [t for t in won if t.id in self._retriggered]
            fresh = [t for t in won if t.id not in self._retriggered]
            for task in fresh:
                self._retriggered[task.id] = None
            while len(self._retriggered) > _REMEMBERED_RETRIGGERS:
                self._retriggered.popitem(last=False)
            self.stats["retriggered"] += len(fresh)
            if log.isEnabledFor(logging.INFO):
                for task in fresh:
                    log.info(
                        "task %s type=%s overdue in SUBMITTED: triggering",
                        task.id,
                        loggable(task.type),
                    )
            if again:
                log.warning(
                    "%d task(s) stayed SUBMITTED after being triggered again; running them on "
                    "this node (is the broker delivering?)",
                    len(again),
                )
                for task in again:
                    self._retriggered.pop(task.id, None)
                await self._run_locally([t.base for t in again])
            await self._trigger(fresh)
            if len(won) < batch:
                return total
        return total

    async def _resolve_stuck(self) -> int:
        now = self._clock.now()
        stuck = await self._dao.find_overdue(
            TaskStatus.PROCESSING, now=now, limit=self._props.resumer.batch_size
        )
        changes: list[TaskChange] = []
        for task in stuck:
            change = self._resolution(task)
            if change is not None:
                changes.append(change)
        before = {t.id: t for t in stuck}
        won = await self._apply(changes)
        for task in won:  # only the node whose compare-and-set won logs and counts
            self._log_resolution(before[task.id], task)
            if self._executor is not None:  # no longer PROCESSING: its global slot is free
                self._executor.slot_freed(task.base)
        recovered = [t for t in won if t.status is TaskStatus.SUBMITTED]
        if recovered and self._executor is not None:
            # The dead node's trigger partitions deliver nothing until the group has waited out
            # its session: start the tasks here too (the trigger then finds them grabbed).
            await self._start_locally([t.base for t in recovered])
        await self._trigger(recovered, fallback=self._executor is None)
        return len(won)

    def _resolution(self, task: Task) -> TaskChange | None:
        now = self._clock.now()
        handler = self._registry.find(task.base)
        policy = handler.processing_policy if handler is not None else _DEFAULT_PROCESSING
        strategy = policy.stuck_strategy
        if strategy is _S.IGNORE:
            self.stats["stuck_ignored"] += 1
            log.warning(
                "task %s type=%s %s; strategy IGNORE leaves it",
                task.id,
                loggable(task.type),
                loggable(_stuck(task)),
                extra=task_extra(task),
            )
            return None
        if strategy is _S.MARK_AS_FAILED:
            return TaskChange(task.mark_failed(now=now, reason=_stuck(task)), task.version)
        if strategy is _S.RETRY and task.recovery_count < policy.max_recoveries:
            deadline = now + self._registry.expected_queue_time(task.base, self._props)
            return TaskChange(task.recover(now=now, deadline=deadline), task.version)
        reason = (
            _stuck(task)
            if strategy is _S.MARK_AS_ERROR
            else (f"{_stuck(task)}; recovered {task.recovery_count} time(s) already, the cap")
        )
        return TaskChange(task.mark_error(now=now, reason=reason), task.version)

    def _log_resolution(self, stuck: Task, resolved: Task) -> None:
        """Log and count one stuck task this node resolved (its compare-and-set won)."""
        if resolved.status is TaskStatus.SUBMITTED:
            self.stats["recovered"] += 1
            self._observer.tasks_recovered(stuck.type, RecoveryStrategy.RETRY)
            handler = self._registry.find(stuck.base)
            policy = handler.processing_policy if handler is not None else _DEFAULT_PROCESSING
            log.warning(
                "task %s type=%s %s -> SUBMITTED (recovery %d of %d)",
                stuck.id,
                loggable(stuck.type),
                loggable(_stuck(stuck)),
                resolved.recovery_count,
                policy.max_recoveries,
                extra=task_extra(stuck),
            )
        elif resolved.status is TaskStatus.FAILED:
            self.stats["stuck_failed"] += 1
            self._observer.tasks_recovered(stuck.type, RecoveryStrategy.MARK_AS_FAILED)
            log.error(
                "task %s type=%s %s -> FAILED",
                stuck.id,
                loggable(stuck.type),
                loggable(_stuck(stuck)),
                extra=task_extra(stuck),
            )
        else:
            self.stats["stuck_error"] += 1
            self._observer.tasks_recovered(stuck.type, RecoveryStrategy.MARK_AS_ERROR)
            log.error(
                "task %s type=%s -> ERROR: %s",
                stuck.id,
                loggable(stuck.type),
                loggable(resolved.last_error),
                extra=task_extra(stuck),
            )

    async def _apply(self, changes: Sequence[TaskChange]) -> list[Task]:
        if not changes:
            return []
        written = await self._dao.apply(changes)
        lost = written.count(False)
        if lost:
            self.stats["lost_races"] += lost
            log.debug("%d task(s) changed by another node meanwhile; skipped", lost)
        return [c.task for c, ok in zip(changes, written, strict=True) if ok]

    async def _trigger(self, tasks: Sequence[Task], *, fallback: bool = True) -> None:
        """Trigger ``tasks``; unless ``fallback`` is False, run them here when that fails."""
        if not tasks:
            return
        bases = [t.base for t in tasks]
        if self._broker.down and fallback:
            # The last trigger failed: run the tasks here first, then probe the broker with
            # the (by then stale, harmless) triggers to notice when it is back.
            await self._run_locally(bases)
        try:
            # A healthy broker acknowledges in milliseconds; waiting its whole send timeout
            # would only delay the fallback. Duplicates from a cut-short send are harmless.
            with self._clock.timeout_scope(_TRIGGER_PATIENCE) as scope:
                await self._triggerer.trigger(bases)
            if scope.cancel_called:
                raise TriggerError(
                    f"broker did not acknowledge within {_TRIGGER_PATIENCE} s", transient=True
                )
            self._broker.succeeded()
            self._observer.triggers_sent(len(bases))
        except (TriggerError, BackendError) as exc:
            self._observer.triggers_failed(len(bases))
            was_down = self._broker.down
            self._broker.failed(exc, f"triggering {len(bases)} task(s)")
            if not was_down and fallback:
                await self._run_locally(bases)

    async def _run_locally(self, bases: Sequence[BaseTask]) -> None:
        """Broker down: hand the tasks to this node's executor (they stay safe in the store)."""
        if self._executor is None:
            return
        self.stats["run_locally"] += len(bases)
        async with anyio.create_task_group() as tg:
            for base in bases:
                tg.start_soon(self._executor.on_trigger, base)

    async def _start_locally(self, bases: Sequence[BaseTask]) -> None:
        """Hand ``bases`` to this node's executor without waiting for room (when polling runs).

        The executor grabs each task when one of its slots is free; a task another node grabbed
        first is simply stale by then. Outside :meth:`run` (one :meth:`run_once`) the tasks are
        handed over before returning.
        """
        executor, background = self._executor, self._background
        if executor is None:
            return
        if background is None:
            await self._run_locally(bases)
            return
        self.stats["run_locally"] += len(bases)
        for base in bases:
            background.start_soon(executor.on_trigger, base)


def _stuck(task: Task) -> str:
    """Why a stuck task is resolved (stored as its error; pass it through loggable to log it)."""
    return f"stuck in PROCESSING past its deadline (node {task.processing_node})"

"""The observability port: what happens to tasks on this node, as events.

The engine reports every event below to one :class:`Observer`; what is done with it (counted
in :attr:`TaskExecutor.stats`, exported to Prometheus, traced) is the adapter's business.
Events are plain method calls with a task type and numbers: no task object crosses the port,
so an adapter cannot keep a task (or its payload) alive.

Contract, for every adapter:

- Methods return quickly and never raise: they are called on the executor's hot path, inside
  its bookkeeping, where an exception would lose a task's outcome.
- ``task_type`` is the stored task's type, untrusted (a forged trigger cannot choose it, but
  any producer can add any type): an adapter that turns it into a label must bound its
  values (the Prometheus adapter maps unregistered types to ``other``).
- Each grabbed task gets exactly one :meth:`Observer.task_released` when this node stops
  holding it (finished, fenced, expired, failed to record), so a gauge of running tasks
  cannot drift.

Events::

    task_added         tasks stored by this node's TaskService
    task_grabbed       SUBMITTED -> PROCESSING won by this node (with the queue delay)
    task_processed     a run's recorded outcome: done, retry, error, repeat, deleted, fenced
    task_timed_out     a processor exceeded its timeout (its outcome follows as retry/error)
    task_stale         a trigger found nothing to grab (stale or duplicate)
    task_released      this node stopped holding a grabbed task
    tasks_recovered    stuck PROCESSING tasks resolved by this node (strategy)
    tasks_cleaned      finished tasks deleted by this node
    triggers_sent      triggers the broker accepted / triggers_failed: it refused
    outage             a dependency (database, trigger broker) became unreachable / came back
    consumer_lag       triggers of a Kafka partition this node consumes not yet handled and
                       committed (measured periodically; None once the partition is no longer
                       this node's)

:class:`NullObserver` is the default: every method does nothing.
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["NULL_OBSERVER", "NullObserver", "Observer", "ProcessOutcome", "RecoveryStrategy"]


class ProcessOutcome(enum.StrEnum):
    """How one run of a task ended, as recorded in the store (or not, when fenced)."""

    DONE = "done"
    DELETED = "deleted"
    REPEAT = "repeat"
    RETRY = "retry"
    ERROR = "error"
    FENCED = "fenced"


class RecoveryStrategy(enum.StrEnum):
    """What the resumer did with a task stuck in PROCESSING past its deadline."""

    RETRY = "retry"
    MARK_AS_FAILED = "mark_as_failed"
    MARK_AS_ERROR = "mark_as_error"


class Observer(Protocol):
    """Receives the engine's events; see the module docstring for the contract."""

    def task_added(self, task_type: str, count: int = 1) -> None:
        """``count`` tasks of ``task_type`` were stored by this node."""
        ...

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        """This node grabbed a task; ``queue_delay`` seconds passed since it was due."""
        ...

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        """A run ended with ``outcome`` after ``seconds`` of processing (0 when unknown)."""
        ...

    def task_timed_out(self, task_type: str) -> None:
        """A processor was cancelled by its timeout."""
        ...

    def task_stale(self) -> None:
        """A trigger found nothing to grab: stale, duplicate, or taken by another node."""
        ...

    def task_released(self, task_type: str) -> None:
        """This node no longer holds a task it grabbed (exactly once per grab)."""
        ...

    def tasks_recovered(self, task_type: str, strategy: RecoveryStrategy) -> None:
        """The resumer resolved a stuck task of ``task_type`` with ``strategy``."""
        ...

    def tasks_cleaned(self, count: int) -> None:
        """The cleaner deleted ``count`` finished tasks."""
        ...

    def triggers_sent(self, count: int) -> None:
        """The trigger broker accepted ``count`` triggers."""
        ...

    def triggers_failed(self, count: int) -> None:
        """``count`` triggers could not be sent (the tasks stay safe in the store)."""
        ...

    def outage(self, dependency: str, *, down: bool) -> None:
        """``dependency`` became unreachable (``down=True``) or reachable again."""
        ...

    def consumer_lag(self, topic: str, partition: int, lag: int | None) -> None:
        """``lag`` triggers of ``topic``'s ``partition`` wait (this node consumes it).

        The lag is the partition's log end minus the group's committed offset, as last
        measured. ``None``: this node no longer consumes the partition (revoked, or the consumer
        stopped); another node reports it now.
        """
        ...


class NullObserver:
    """The default observer: ignores every event (a method call, nothing else)."""

    def task_added(self, task_type: str, count: int = 1) -> None:
        """Ignored."""

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        """Ignored."""

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        """Ignored."""

    def task_timed_out(self, task_type: str) -> None:
        """Ignored."""

    def task_stale(self) -> None:
        """Ignored."""

    def task_released(self, task_type: str) -> None:
        """Ignored."""

    def tasks_recovered(self, task_type: str, strategy: RecoveryStrategy) -> None:
        """Ignored."""

    def tasks_cleaned(self, count: int) -> None:
        """Ignored."""

    def triggers_sent(self, count: int) -> None:
        """Ignored."""

    def triggers_failed(self, count: int) -> None:
        """Ignored."""

    def outage(self, dependency: str, *, down: bool) -> None:
        """Ignored."""

    def consumer_lag(self, topic: str, partition: int, lag: int | None) -> None:
        """Ignored."""


NULL_OBSERVER = NullObserver()
"""The shared no-op observer: the default of every service that reports events."""

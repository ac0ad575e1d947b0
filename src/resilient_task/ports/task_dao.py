"""The task store port: every read and compare-and-set write of tasks.

Contract (checked by ``resilient_task.testing.task_dao_contract`` against every adapter):

- Writes are compare-and-set on ``version``: a change applies only where the stored version
  equals ``expected_version``; otherwise nothing is written and the change reports ``False``.
  Adapters never raise for a lost race; they return ``False`` so callers can count and log it.
- Inserts deduplicate by task id and by ``(type, unique_key)``: an existing match is reported
  with ``created=False`` and the *existing* task id, and nothing is written. Concurrent inserts of
  the same key produce exactly one task.
- ``claim_due`` moves due WAITING tasks to SUBMITTED in one step, and two concurrent claimers
  never receive the same task (``FOR UPDATE SKIP LOCKED`` in PostgreSQL); likewise
  ``resubmit_overdue`` for SUBMITTED tasks past their pick-up deadline.
- Orderings: ``claim_due`` takes the oldest ``next_event_time`` first, then the lowest
  ``priority`` (``resubmit_overdue`` too); ``find_tasks`` orders by ``next_event_time``. Due
  means ``<= now`` for ``claim_due`` and overdue means ``< now`` for ``find_overdue`` and
  ``resubmit_overdue``.
- Inside ``transaction()``, a write whose version check no longer holds at commit raises
  :class:`~resilient_task.errors.VersionConflictError` and nothing of the transaction is kept.
- Times are UTC-aware datetimes in and out.
- Driver failures surface as :class:`~resilient_task.errors.BackendError` subclasses, never as
  driver exceptions; a lost connection is a transient :class:`BackendUnavailableError`.
- Optional: an adapter whose transactions hold pooled connections may expose
  ``max_connections: int | None`` (None: unbounded). The executor reads it (``getattr``) to keep
  transactional tasks within the pool: at most ``max_connections - 2`` run at once, the rest
  wait before their grab. An adapter without it is treated as unbounded.
- Optional: ``grab_limited(requests, *, now, limit: GrabLimit, hold_until) -> LimitedGrab``
  (see :class:`LimitedGrab`), needed by handlers with a ``GlobalConcurrencyPolicy``: like
  ``grab_queued``, but after it at most ``limit.limit`` tasks of ``limit.types`` are
  PROCESSING in the whole store, however many nodes grab at once. Requests whose task is
  SUBMITTED at that version but found no free slot come back in ``over_limit``; their task
  stays SUBMITTED at the same version, its pick-up deadline (``next_event_time``) moved to
  ``hold_until`` if later (the node holding the trigger keeps resumers from re-triggering it;
  if that node dies, the deadline passes). A task whose type is not in ``limit.types`` is not
  grabbed. A node refuses to start such handlers on an adapter without it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar
from uuid import UUID

from resilient_task.domain.task import Task, TaskStatus

__all__ = [
    "GrabLimit",
    "GrabRequest",
    "Grabbed",
    "InsertOutcome",
    "LimitedGrab",
    "TaskChange",
    "TaskDAO",
    "TxT",
]

TxT = TypeVar("TxT")
"""A store's transaction handle: what ``transaction()`` yields and ``transaction=`` accepts.

Code always names it: ``TaskDAO[InMemoryTransaction]`` or ``TaskDAO[AsyncConnection]`` is
checked by mypy; code that takes whichever store was chosen at run time says so with
``resilient_task.service.stores.AnyTaskDAO``."""


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    """Result of inserting one task: its id (the existing one on a duplicate) and whether new.

    ``triggered`` is True when the store itself sent the new task's trigger as part of the
    insert (PostgreSQL with NOTIFY triggers: ``pg_notify`` in the insert's transaction, so it
    is delivered exactly when the task commits); the caller then sends none of its own. It
    takes no part in comparisons.
    """

    task_id: UUID
    created: bool
    triggered: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class TaskChange:
    """Write ``task`` (a transition's result) where the stored version is ``expected_version``.

    With ``delete=True`` the task is removed instead (DONE_AND_DELETE), under the same check.
    """

    task: Task
    expected_version: int
    delete: bool = False


@dataclass(frozen=True, slots=True)
class GrabRequest:
    """Move task ``task_id`` from SUBMITTED at ``version`` to PROCESSING on ``node_id``."""

    task_id: UUID
    version: int
    node_id: str
    deadline: datetime


@dataclass(frozen=True, slots=True)
class Grabbed:
    """A grabbed task and when it became SUBMITTED (its ``updated_at`` before the grab).

    ``queued_at`` starts the task's wait in the queue: when it was added due, submitted by the
    resumer at its run time, re-submitted or recovered. The grab's ``now`` ends it.
    """

    task: Task
    queued_at: datetime


@dataclass(frozen=True, slots=True)
class GrabLimit:
    """At most ``limit`` tasks whose type is in ``types`` PROCESSING at once (named ``key``)."""

    key: str
    limit: int
    types: frozenset[str]


@dataclass(frozen=True, slots=True)
class LimitedGrab:
    """What ``grab_limited`` did: the grabbed tasks (request order), the ids left for the limit."""

    grabbed: list[Grabbed]
    over_limit: frozenset[UUID]


class TaskDAO(Protocol[TxT]):
    """Persistence of tasks, with transaction handles of type ``TxT``. See the module docstring."""

    async def insert_tasks(
        self, tasks: Sequence[Task], *, transaction: TxT | None = None
    ) -> list[InsertOutcome]:
        """Insert new tasks (status WAITING or SUBMITTED, version 0), deduplicating.

        Args:
            tasks: the tasks to insert, in order; outcomes come back in the same order.
            transaction: a transaction handle of this adapter (e.g. the caller's SQLAlchemy
                ``AsyncConnection`` or ``AsyncSession`` for PostgreSQL); None commits alone.
        """
        ...

    async def get_task(self, task_id: UUID) -> Task | None:
        """The task with its payload, or None."""
        ...

    async def grab(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Task]:
        """Apply :meth:`Task.grab` to each request whose task is SUBMITTED at that version.

        Returns the grabbed tasks (with payload); requests that lost a race are left out.
        """
        ...

    async def grab_queued(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Grabbed]:
        """:meth:`grab`, each task with when it became SUBMITTED (the executor's grab).

        Same round trip, same results in the same order; ``queued_at`` is the task's
        ``updated_at`` at the grabbed version.
        """
        ...

    async def apply(
        self, changes: Sequence[TaskChange], *, transaction: TxT | None = None
    ) -> list[bool]:
        """Compare-and-set each change; ``True`` where it was written, in order.

        The payload is immutable after insert: ``change.task.data`` is ignored (tasks returned
        by polls carry no payload), so applying such a task never erases the stored one.
        """
        ...

    async def claim_due(self, *, now: datetime, limit: int, deadline: datetime) -> list[Task]:
        """Submit up to ``limit`` WAITING tasks due at ``now`` (oldest first), without payload.

        Each returned task is already SUBMITTED with ``next_event_time=deadline``.
        """
        ...

    async def resubmit_overdue(
        self,
        *,
        now: datetime,
        limit: int,
        deadline: datetime,
        deadlines: Mapping[str, datetime] | None = None,
    ) -> list[Task]:
        """Re-submit up to ``limit`` SUBMITTED tasks overdue at ``now`` (oldest first).

        Overdue: ``next_event_time`` before ``now``. Each gets the transition of
        :meth:`Task.resubmit <resilient_task.domain.task.Task.resubmit>` -- ``version + 1``,
        ``updated_at=now``, ``next_event_time=deadlines.get(task.type, deadline)`` -- in one step
        (one statement in PostgreSQL), and is returned as stored, without payload, oldest
        ``next_event_time`` first, then lowest ``priority``. A task another session is changing
        meanwhile is skipped; two concurrent callers never receive the same task.

        Added before 1.0: a user adapter of this protocol must implement it (it may do so with
        :meth:`find_overdue`, :meth:`Task.resubmit` and :meth:`apply`, returning the winners).
        """
        ...

    async def find_overdue(self, status: TaskStatus, *, now: datetime, limit: int) -> list[Task]:
        """Up to ``limit`` tasks in ``status`` whose ``next_event_time`` is before ``now``.

        Used for SUBMITTED and PROCESSING past their deadlines. Payloads may be left empty.
        """
        ...

    async def find_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        type: str | None = None,
        limit: int = 100,
    ) -> list[Task]:
        """Tasks filtered by status and type, oldest ``next_event_time`` first (operators)."""
        ...

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status (absent statuses count zero)."""
        ...

    async def delete_finished(self, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` DONE/FAILED/CANCELLED tasks finished before ``before``."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[TxT]:
        """A unit of work: commits on normal exit, rolls back on an exception.

        The handle it yields is accepted by ``transaction=`` and handed to transactional
        handlers through :func:`resilient_task.current_transaction`.
        """
        ...

    def after_commit(self, transaction: TxT, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` once ``transaction`` has committed; never if it rolls back."""
        ...

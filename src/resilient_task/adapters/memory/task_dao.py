"""The in-memory task store: the embedded default and a supported fake for users' unit tests.

It honours the whole :class:`~resilient_task.ports.task_dao.TaskDAO` contract (the same
contract suite runs against it and against PostgreSQL) and adds test helpers::

    dao = InMemoryTaskDAO()
    ...
    assert dao.tasks[task_id].status is TaskStatus.DONE   # read-only view of committed tasks
    dao.put(task)                                          # seed a task in any state
    dao.fail_next(2)                                       # simulate an outage
    dao.reset()                                            # forget everything

Concurrency: one event loop, no threads. Every operation first yields once (like real I/O,
so concurrent callers interleave) and then checks and writes without awaiting, so each call is
atomic without a lock.

Transactions are optimistic: writes made with ``transaction=tx`` are staged, re-checked and
applied together at commit. PostgreSQL locks rows instead, so there a concurrent writer waits
for the transaction; here it wins and the transaction fails at commit with
:class:`~resilient_task.errors.VersionConflictError`. Either way exactly one writer wins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from uuid import UUID

import anyio

from resilient_task.adapters.validation import (
    check_change,
    check_deadlines,
    check_filters,
    check_limit,
    check_new,
    check_time,
)
from resilient_task.domain.task import FINAL_STATUSES, Task, TaskStatus, status_of
from resilient_task.errors import BackendUnavailableError, ValidationError, VersionConflictError
from resilient_task.ports.task_dao import (
    Grabbed,
    GrabLimit,
    GrabRequest,
    InsertOutcome,
    LimitedGrab,
    TaskChange,
)

__all__ = ["InMemoryTaskDAO", "InMemoryTransaction"]

_Key = tuple[str, str]


def _key(task: Task) -> _Key | None:
    return None if task.unique_key is None else (task.type, task.unique_key)


def _order(task: Task) -> tuple[datetime, int, int]:
    return task.next_event_time, task.priority, task.id.int


class _View:
    """Tasks by id plus the ``(type, unique_key)`` index; the write rules live here."""

    def get(self, task_id: UUID) -> Task | None:
        raise NotImplementedError

    def owner(self, key: _Key) -> UUID | None:
        raise NotImplementedError

    def _set(self, task_id: UUID, task: Task | None, key: _Key | None, owner: UUID | None) -> None:
        raise NotImplementedError

    def put(self, task: Task) -> None:
        old = self.get(task.id)
        new_key = _key(task)
        if new_key is not None and self.owner(new_key) not in (None, task.id):
            raise ValidationError(f"unique key {new_key} already belongs to another task")
        if old is not None and _key(old) not in (None, new_key):
            self._set(old.id, old, _key(old), None)
        self._set(task.id, task, new_key, task.id)

    def remove(self, task_id: UUID) -> None:
        old = self.get(task_id)
        if old is not None:
            self._set(task_id, None, _key(old), None)

    def insert(self, task: Task) -> InsertOutcome:
        if self.get(task.id) is not None:
            return InsertOutcome(task.id, created=False)
        key = _key(task)
        existing = None if key is None else self.owner(key)
        if existing is not None:
            return InsertOutcome(existing, created=False)
        self.put(task)
        return InsertOutcome(task.id, created=True)

    def apply(self, change: TaskChange) -> bool:
        stored = self.get(change.task.id)
        if stored is None or stored.version != change.expected_version:
            return False
        if change.delete:
            self.remove(stored.id)
        else:
            # The payload is immutable: polls return tasks without it (as PostgreSQL does).
            task = change.task
            self.put(task if task.data is stored.data else replace(task, data=stored.data))
        return True


class _Store(_View):
    """The committed state."""

    def __init__(self) -> None:
        self.tasks: dict[UUID, Task] = {}
        self.keys: dict[_Key, UUID] = {}

    def get(self, task_id: UUID) -> Task | None:
        return self.tasks.get(task_id)

    def owner(self, key: _Key) -> UUID | None:
        return self.keys.get(key)

    def _set(self, task_id: UUID, task: Task | None, key: _Key | None, owner: UUID | None) -> None:
        if task is None:
            self.tasks.pop(task_id, None)
        else:
            self.tasks[task_id] = task
        if key is not None:
            if owner is None:
                self.keys.pop(key, None)
            else:
                self.keys[key] = owner


class _Overlay(_View):
    """Staged changes over a live :class:`_Store`; ``None`` marks a deletion."""

    def __init__(self, base: _Store) -> None:
        self.base = base
        self.tasks: dict[UUID, Task | None] = {}
        self.keys: dict[_Key, UUID | None] = {}

    def get(self, task_id: UUID) -> Task | None:
        return self.tasks[task_id] if task_id in self.tasks else self.base.get(task_id)

    def owner(self, key: _Key) -> UUID | None:
        return self.keys[key] if key in self.keys else self.base.owner(key)

    def _set(self, task_id: UUID, task: Task | None, key: _Key | None, owner: UUID | None) -> None:
        self.tasks[task_id] = task
        if key is not None:
            self.keys[key] = owner

    def flush(self) -> None:
        for task_id, task in self.tasks.items():
            if task is None:
                self.base.remove(task_id)
            else:
                self.base.put(task)


class InMemoryTransaction:
    """The handle :meth:`InMemoryTaskDAO.transaction` yields; pass it as ``transaction=``.

    Inserts and changes made with it are invisible to everyone else until the ``async with``
    block exits normally; then they are re-checked and become visible all at once.
    """

    def __init__(self, dao: InMemoryTaskDAO, store: _Store) -> None:
        self._dao = dao
        self._view = _Overlay(store)
        self._staged: list[Task | TaskChange] = []
        self._callbacks: list[Callable[[], Awaitable[None]]] = []
        self._active = True

    @property
    def active(self) -> bool:
        """True until the transaction commits or rolls back."""
        return self._active

    @property
    def staged(self) -> int:
        """How many successful inserts and changes wait for the commit."""
        return len(self._staged)

    def _commit(self, store: _Store) -> None:
        # Replay on a fresh overlay: a concurrent writer may have won since each call.
        check = _Overlay(store)
        for item in self._staged:
            if isinstance(item, Task):
                if not check.insert(item).created:
                    raise VersionConflictError(item.id, 0)
            elif not check.apply(item):
                raise VersionConflictError(item.task.id, item.expected_version)
        check.flush()


class InMemoryTaskDAO:
    """A :class:`~resilient_task.ports.task_dao.TaskDAO` keeping tasks in a dict.

    Args:
        tasks: tasks to start with, stored as given (any status or version); see :meth:`put`.
    """

    def __init__(self, *, tasks: Iterable[Task] = ()) -> None:
        self._store = _Store()
        self._faults: list[tuple[str | None, Exception | None]] = []
        self.put(*tasks)

    # -- test helpers -------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[UUID, Task]:
        """A live, read-only view of the committed tasks by id (payloads included)."""
        return MappingProxyType(self._store.tasks)

    def put(self, *tasks: Task) -> None:
        """Store ``tasks`` as given (any status or version), replacing any with the same id."""
        for task in tasks:
            self._store.put(task)

    def reset(self) -> None:
        """Forget every task and pending injected failure."""
        self._store.tasks.clear()
        self._store.keys.clear()
        self._faults.clear()

    def fail_next(
        self, count: int = 1, *, error: Exception | None = None, operation: str | None = None
    ) -> None:
        """Make the next ``count`` operations raise, to test outage handling.

        Args:
            count: how many operations fail.
            error: what they raise; a transient ``BackendUnavailableError`` by default.
            operation: only fail this one: a port method name (``"apply"``, ``"claim_due"``,
                ...), ``"transaction"`` (entering) or ``"commit"`` (the commit then rolls back).
                None counts every operation, including ``get_task``.
        """
        self._faults.extend([(operation, error)] * count)

    def _enter(self, operation: str) -> None:
        for index, (only, error) in enumerate(self._faults):
            if only is None or only == operation:
                del self._faults[index]
                raise error or BackendUnavailableError(f"injected failure of {operation}")

    def _view(self, transaction: InMemoryTransaction | None) -> _View:
        return self._store if transaction is None else self._open(transaction)._view

    def _open(self, transaction: object) -> InMemoryTransaction:
        if not isinstance(transaction, InMemoryTransaction) or transaction._dao is not self:
            raise ValidationError(f"not a transaction of this InMemoryTaskDAO: {transaction!r}")
        if not transaction.active:
            raise ValidationError("the transaction has already committed or rolled back")
        return transaction

    # -- the port -----------------------------------------------------------------------

    async def insert_tasks(
        self, tasks: Sequence[Task], *, transaction: InMemoryTransaction | None = None
    ) -> list[InsertOutcome]:
        """Insert new tasks (WAITING or SUBMITTED, version 0); see the port for dedup rules."""
        await anyio.lowlevel.checkpoint()
        self._enter("insert_tasks")
        view = self._view(transaction)
        for task in tasks:
            check_new(task)
        outcomes = [view.insert(task) for task in tasks]
        if transaction is not None:
            transaction._staged.extend(t for t, o in zip(tasks, outcomes, strict=True) if o.created)
        return outcomes

    async def get_task(self, task_id: UUID) -> Task | None:
        """The committed task with its payload, or None."""
        await anyio.lowlevel.checkpoint()
        self._enter("get_task")
        return self._store.get(task_id)

    async def grab(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Task]:
        """Grab each request's task if it is SUBMITTED at the requested version."""
        return [grabbed.task for grabbed in await self.grab_queued(requests, now=now)]

    async def grab_queued(self, requests: Sequence[GrabRequest], *, now: datetime) -> list[Grabbed]:
        """:meth:`grab`, with when each task became SUBMITTED."""
        await anyio.lowlevel.checkpoint()
        self._enter("grab")
        check_time("now", now)
        grabbed = []
        for request in requests:
            check_time("deadline", request.deadline)
            task = self._store.get(request.task_id)
            if task and task.status is TaskStatus.SUBMITTED and task.version == request.version:
                queued_at = task.updated_at
                task = task.grab(node_id=request.node_id, now=now, deadline=request.deadline)
                self._store.put(task)
                grabbed.append(Grabbed(task, queued_at))
        return grabbed

    async def grab_limited(
        self,
        requests: Sequence[GrabRequest],
        *,
        now: datetime,
        limit: GrabLimit,
        hold_until: datetime,
    ) -> LimitedGrab:
        """:meth:`grab_queued` within ``limit``: the requests past its free slots stay SUBMITTED."""
        await anyio.lowlevel.checkpoint()
        self._enter("grab")
        check_time("now", now)
        check_time("hold_until", hold_until)
        running = sum(
            1
            for task in self._store.tasks.values()
            if task.status is TaskStatus.PROCESSING and task.type in limit.types
        )
        free = limit.limit - running
        eligible: dict[UUID, GrabRequest] = {}
        for request in requests:
            check_time("deadline", request.deadline)
            task = self._store.get(request.task_id)
            if (
                task is not None
                and task.status is TaskStatus.SUBMITTED
                and task.version == request.version
                and task.type in limit.types
            ):
                eligible.setdefault(task.id, request)
        # The free slots go to the lowest priority values first, as in PostgreSQL.
        chosen = sorted(
            eligible.values(), key=lambda r: (self._store.tasks[r.task_id].priority, r.task_id)
        )
        taken = {r.task_id for r in chosen[: max(free, 0)]}
        over = set(eligible) - taken
        for task_id in over:  # the pick-up deadline held off while a node waits with it
            held = self._store.tasks[task_id]
            if held.next_event_time < hold_until:
                self._store.put(replace(held, next_event_time=hold_until))
        grabbed = []
        for request in requests:
            if request.task_id not in taken:
                continue
            taken.discard(request.task_id)
            task = self._store.tasks[request.task_id]
            queued_at = task.updated_at
            task = task.grab(node_id=request.node_id, now=now, deadline=request.deadline)
            self._store.put(task)
            grabbed.append(Grabbed(task, queued_at))
        return LimitedGrab(grabbed, frozenset(over))

    async def apply(
        self, changes: Sequence[TaskChange], *, transaction: InMemoryTransaction | None = None
    ) -> list[bool]:
        """Compare-and-set each change in order; inside a transaction, staged until commit."""
        await anyio.lowlevel.checkpoint()
        self._enter("apply")
        view = self._view(transaction)
        for change in changes:
            check_change(change)
        results = [view.apply(change) for change in changes]
        if transaction is not None:
            transaction._staged.extend(c for c, ok in zip(changes, results, strict=True) if ok)
        return results

    async def claim_due(self, *, now: datetime, limit: int, deadline: datetime) -> list[Task]:
        """Submit up to ``limit`` due WAITING tasks, earliest then most urgent first."""
        await anyio.lowlevel.checkpoint()
        self._enter("claim_due")
        check_time("now", now)
        check_time("deadline", deadline)
        due = self._select(lambda t: t.status is TaskStatus.WAITING and t.next_event_time <= now)
        claimed = [task.submit(now=now, deadline=deadline) for task in due[: check_limit(limit)]]
        self.put(*claimed)
        return [replace(task, data=b"") for task in claimed]

    async def resubmit_overdue(
        self,
        *,
        now: datetime,
        limit: int,
        deadline: datetime,
        deadlines: Mapping[str, datetime] | None = None,
    ) -> list[Task]:
        """Re-submit up to ``limit`` overdue SUBMITTED tasks, earliest then most urgent first."""
        await anyio.lowlevel.checkpoint()
        self._enter("resubmit_overdue")
        check_time("now", now)
        check_time("deadline", deadline)
        per_type = check_deadlines(deadlines)
        overdue = self._select(
            lambda t: t.status is TaskStatus.SUBMITTED and t.next_event_time < now
        )
        resubmitted = [
            task.resubmit(now=now, deadline=per_type.get(task.type, deadline))
            for task in overdue[: check_limit(limit)]
        ]
        self.put(*resubmitted)
        return [replace(task, data=b"") for task in resubmitted]

    async def find_overdue(self, status: TaskStatus, *, now: datetime, limit: int) -> list[Task]:
        """Up to ``limit`` tasks in ``status`` past their ``next_event_time``, without payload."""
        await anyio.lowlevel.checkpoint()
        self._enter("find_overdue")
        check_time("now", now)
        status = status_of(status)
        found = self._select(lambda t: t.status is status and t.next_event_time < now)
        return [replace(task, data=b"") for task in found[: check_limit(limit)]]

    async def find_tasks(
        self, *, status: TaskStatus | None = None, type: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks filtered by status and type, earliest ``next_event_time`` first."""
        await anyio.lowlevel.checkpoint()
        self._enter("find_tasks")
        status = check_filters(status, type)
        limit = check_limit(limit)
        found = self._select(
            lambda t: (status is None or t.status is status) and (type is None or t.type == type)
        )
        return found[:limit]

    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status, every status present."""
        await anyio.lowlevel.checkpoint()
        self._enter("count_by_status")
        counts = dict.fromkeys(TaskStatus, 0)
        for task in self._store.tasks.values():
            counts[task.status] += 1
        return counts

    async def delete_finished(self, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` final tasks finished before ``before``, oldest first."""
        await anyio.lowlevel.checkpoint()
        self._enter("delete_finished")
        check_time("before", before)
        done = self._select(lambda t: t.status in FINAL_STATUSES and t.next_event_time < before)
        for task in done[: check_limit(limit)]:
            self._store.remove(task.id)
        return min(len(done), check_limit(limit))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryTransaction]:
        """Stage writes made with the yielded handle; commit them atomically on normal exit.

        Raises:
            VersionConflictError: at commit, when a staged change no longer matches the
                stored version or a staged insert now collides; nothing is then written.
        """
        await anyio.lowlevel.checkpoint()
        self._enter("transaction")
        tx = InMemoryTransaction(self, self._store)
        try:
            yield tx
            self._enter("commit")
            tx._commit(self._store)
        finally:
            tx._active = False
        for callback in tx._callbacks:
            await callback()

    def after_commit(
        self, transaction: InMemoryTransaction, callback: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``callback`` after ``transaction`` commits, never if it rolls back.

        Callbacks run in registration order once the commit is done; an exception from one
        propagates out of the ``async with`` block (the commit stands, later callbacks are
        skipped).
        """
        self._open(transaction)._callbacks.append(callback)

    def _select(self, keep: Callable[[Task], bool]) -> list[Task]:
        return sorted((t for t in self._store.tasks.values() if keep(t)), key=_order)

"""Processing timeouts: one watchdog per executor instead of a timer per run.

A run's processor runs in a cancel scope without a deadline of its own; the run registers
the scope here with its deadline (:meth:`Watchdog.watch`) and forgets it when the processor
returns (:meth:`Watchdog.forget`): a set insert and a set removal. The watchdog task sleeps
on the node's :class:`~resilient_task.ports.clock.Clock` until the earliest deadline it knows
of, cancels every scope whose deadline has passed -- as a timeout scope would have -- and
sleeps again until the next one. A timer per run (``move_on_after``: a timer handle pushed on
the event loop's heap, then cancelled) was the executor's largest own cost on a quick
processor.

The watchdog wakes once per deadline it slept for, not once per run: under a steady load of
quick runs, the run it slept for has long ended when it wakes; it then sleeps until the
earliest deadline of the runs going on. A new deadline earlier than the one it sleeps for
(a handler with a shorter timeout) wakes it to sleep again for that one.

An idle spell does not wake it either. Finding no run going on, the watchdog still sleeps
until the latest deadline it was given (not forever): the next run's deadline -- same
timeout, later start -- lies past that wake-up, so its ``watch`` cancels no sleep. Waking
the sleeping watchdog (cancelling its sleep's scope, then one more task switch) cost an
idle worker's run more than the rest of its start together. Once the latest deadline has
passed with nothing watched, the watchdog sleeps until a run wakes it.
"""

from __future__ import annotations

from datetime import datetime

import anyio
import anyio.abc

from resilient_task.ports.clock import Clock

__all__ = ["Deadline", "Watchdog"]


class Deadline:
    """A running processor's cancel scope and when it must be cancelled."""

    __slots__ = ("at", "scope")

    def __init__(self, at: datetime, scope: anyio.CancelScope) -> None:
        self.at = at
        self.scope = scope


class Watchdog:
    """Cancels the scopes of processors that outlive their deadline (see the module doc)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._watched: set[Deadline] = set()
        self._wake_at: datetime | None = None
        """When the watchdog wakes next (None: only when a deadline is watched)."""
        self._latest: datetime | None = None
        """The latest deadline ever watched: an idle watchdog sleeps until then."""
        self.wakes = 0
        """How many times a new deadline woke the sleeping watchdog (for tests)."""
        self._nap: anyio.CancelScope | None = None
        """The watchdog's current sleep; cancelled to wake it for an earlier deadline."""

    @property
    def watched(self) -> int:
        """How many running processors have a deadline (for tests and statistics)."""
        return len(self._watched)

    def watch(
        self, scope: anyio.CancelScope, at: datetime, *, now: datetime | None = None
    ) -> Deadline:
        """Cancel ``scope`` at ``at`` (clock time) unless forgotten before; at once if past.

        ``now``: the clock's time, when the caller just read it (saves a read).
        """
        deadline = Deadline(at, scope)
        if at <= (self._clock.now() if now is None else now):
            scope.cancel()
            return deadline
        self._watched.add(deadline)
        if self._latest is None or at > self._latest:
            self._latest = at
        if self._wake_at is None or at < self._wake_at:
            self._wake_at = at
            if self._nap is not None:
                self.wakes += 1
                self._nap.cancel()
        return deadline

    def forget(self, deadline: Deadline) -> None:
        """The processor returned: its scope is no longer cancelled at its deadline."""
        self._watched.discard(deadline)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Cancel overdue scopes, forever; run it in the executor's task group."""
        task_status.started()
        clock = self._clock
        while True:
            now = clock.now()
            earliest: datetime | None = None
            for deadline in list(self._watched):
                if deadline.at <= now:
                    self._watched.discard(deadline)
                    deadline.scope.cancel()
                elif earliest is None or deadline.at < earliest:
                    earliest = deadline.at
            if earliest is None and self._latest is not None and self._latest > now:
                earliest = self._latest  # idle: later runs' deadlines lie past it
            self._wake_at = earliest
            with anyio.CancelScope() as self._nap:
                if earliest is None:
                    await anyio.sleep_forever()
                else:
                    await clock.sleep((earliest - now).total_seconds())
            self._nap = None

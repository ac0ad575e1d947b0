"""A clock that moves only when the test says so."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """Manual time for tests: ``now()`` is fixed until :meth:`advance`; sleepers wake on it.

    :meth:`advance` wakes every sleeper now due and returns once the work it woke has run as
    far as it can without more time passing (see :meth:`settle`), so a retry due in 5 s has run
    when ``await clock.advance(5)`` returns.

    Example::

        clock = FakeClock()
        await clock.advance(timedelta(seconds=5))   # wakes sleepers due by then, lets them run
    """

    def __init__(self, *, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self._sleepers: list[tuple[datetime, anyio.Event]] = []
        self._scopes: list[tuple[datetime, anyio.CancelScope]] = []

    def now(self) -> datetime:
        """The fake current time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake time has advanced by ``seconds``."""
        wake_at = self._now + timedelta(seconds=max(0.0, seconds))
        if wake_at <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (wake_at, event)
        self._sleepers.append(entry)
        try:
            await event.wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def timeout_scope(self, seconds: float) -> anyio.CancelScope:
        """A cancel scope cancelled when the fake time reaches now + ``seconds``."""
        scope = anyio.CancelScope()
        wake_at = self._now + timedelta(seconds=max(0.0, seconds))
        if wake_at <= self._now:
            scope.cancel()
        else:
            self._scopes.append((wake_at, scope))
        return scope

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock."""
        return len(self._sleepers)

    def next_wake(self) -> datetime | None:
        """When the earliest sleeper wakes or timeout scope fires; None when nothing waits."""
        times = [wake_at for wake_at, _ in self._sleepers]
        times += [wake_at for wake_at, scope in self._scopes if not scope.cancel_called]
        return min(times, default=None)

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward, wake every sleeper now due, and :meth:`settle`."""
        if isinstance(delta, int | float):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError("time cannot go backwards")
        self._now += delta
        for wake_at, event in list(self._sleepers):
            if wake_at <= self._now:
                event.set()
        due = [entry for entry in self._scopes if entry[0] <= self._now]
        self._scopes = [entry for entry in self._scopes if entry[0] > self._now]
        for _, scope in due:
            scope.cancel()
        # Let woken tasks run before the caller looks at the results.
        await self.settle()

    async def settle(self, *, max_checkpoints: int = 10_000) -> None:
        """Let every other task run until it waits on something (time, I/O, an event, a lock).

        Returns when all other tasks are blocked at once, or after ``max_checkpoints`` yields
        (a task that never blocks, e.g. a busy loop). Work waiting on the fake time waits for
        the next :meth:`advance`; work waiting on real I/O, a thread or real time may still be
        pending, so await its outcome (or poll for it) in that case.
        """
        if _running_on_trio():
            import trio.testing

            with anyio.move_on_after(max_checkpoints * 0.001):
                await trio.testing.wait_all_tasks_blocked()
            return
        await anyio.lowlevel.checkpoint()
        for _ in range(max_checkpoints):
            if _other_asyncio_tasks_blocked():
                return
            await anyio.lowlevel.checkpoint()

    def set(self, now: datetime) -> None:
        """Jump to ``now`` without waking sleepers (use :meth:`advance` to wake them)."""
        self._now = now


def _running_on_trio() -> bool:
    trio = sys.modules.get("trio")  # never imported here: a test that runs trio imported it
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _other_asyncio_tasks_blocked() -> bool:
    """Whether every asyncio task but the current one awaits a future not yet resolved.

    The check trio's ``wait_all_tasks_blocked`` makes, done the way anyio's asyncio backend
    does it (``Task._fut_waiter``), but with a checkpoint between tries instead of a 0.1 s sleep.
    """
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current:
            continue
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return False
    return True

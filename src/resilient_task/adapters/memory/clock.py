"""A clock that moves only when the test says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """Manual time for tests: ``now()`` is fixed until :meth:`advance`; sleepers wake on it.

    Example::

        clock = FakeClock()
        await clock.advance(timedelta(seconds=5))   # wakes sleepers due by then
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

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward, wake every sleeper now due, and let them run."""
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
        for _ in range(5):
            await anyio.lowlevel.checkpoint()

    def set(self, now: datetime) -> None:
        """Jump to ``now`` without waking sleepers (use :meth:`advance` to wake them)."""
        self._now = now

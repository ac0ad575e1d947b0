"""The clock port: the only way services learn the time or wait.

Contract: ``now()`` is timezone-aware UTC and never goes backwards within a process;
``sleep(seconds)`` returns after at least ``seconds`` of this clock's time;
``timeout_scope(seconds)`` is a cancel scope cancelled once ``seconds`` of this clock's time
have passed. A fake clock advances only when told, so tests of retries, timeouts and polling
need no wall-clock sleeps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import anyio

__all__ = ["Clock"]


class Clock(Protocol):
    """Time source for services."""

    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time; cancellable."""
        ...

    def timeout_scope(self, seconds: float) -> anyio.CancelScope:
        """A cancel scope cancelled after ``seconds`` of this clock's time (processing timeouts).

        ``scope.cancel_called`` tells afterwards whether the time ran out.
        """
        ...

"""The clock port: the only way services learn the time or wait.

Contract: ``now()`` is timezone-aware UTC and never goes backwards within a process;
``sleep(seconds)`` returns after at least ``seconds`` of this clock's time. A fake clock
advances only when told, so tests of retries and polling need no wall-clock sleeps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

__all__ = ["Clock"]


class Clock(Protocol):
    """Time source for services."""

    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time; cancellable."""
        ...

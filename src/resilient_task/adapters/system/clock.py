"""The wall clock."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio

__all__ = ["SystemClock"]


class SystemClock:
    """UTC wall-clock time and real sleeps."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (at least zero)."""
        await anyio.sleep(max(0.0, seconds))

    def timeout_scope(self, seconds: float) -> anyio.CancelScope:
        """``anyio.move_on_after(seconds)``: a deadline on the event loop's clock."""
        return anyio.move_on_after(max(0.0, seconds))

"""What the triggerers' receiving sides share: reconnect backoff and draining callbacks at stop.

Both the Kafka consumer and the PostgreSQL ``LISTEN`` listener run each trigger's callback in
its own asyncio task and reconnect to a service that went away; these are the pieces that
behave the same in both.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Set

from resilient_task.domain.backoff import capped_exponential

__all__ = ["Backoff", "drain_callbacks"]


class Backoff:
    """Delays doubling from ``first`` up to ``cap`` seconds, each jittered down to half of it.

    The schedule is :func:`~resilient_task.domain.backoff.capped_exponential`; this adds the
    attempt count and the jitter.
    """

    def __init__(self, *, first: float = 0.1, cap: float = 5.0) -> None:
        self._first, self._cap, self._attempt = first, cap, 0

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        ceiling = capped_exponential(self._attempt, first=self._first, cap=self._cap)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self._attempt = 0


async def drain_callbacks(
    handlers: Set[asyncio.Task[None]], stop_timeout: float, logger: logging.Logger
) -> None:
    """Wait ``stop_timeout`` for the running callback tasks, then cancel (and reap) the rest."""
    if not handlers:
        return
    _, late = await asyncio.wait(set(handlers), timeout=stop_timeout)
    for handler in late:
        handler.cancel()
    if late:
        logger.warning("cancelled %d trigger callback(s) still running at stop", len(late))
        await asyncio.gather(*late, return_exceptions=True)

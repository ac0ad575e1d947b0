"""The triggerer port: tells nodes that a task is ready, fast.

Contract (``resilient_task.testing.triggerer_contract``, run against every adapter):

- ``trigger`` delivers each task reference at least once to some started node's callback, or
  raises :class:`~resilient_task.errors.TriggerError`. Triggers are hints: the store stays the
  truth, and a duplicate or stale trigger is harmless because the grab is version-checked.
- ``start`` begins delivery to ``on_trigger``. The callback returns when the trigger is handled
  (grabbed, or found stale); it may wait while the node is full, and the triggerer must then
  stop fetching rather than buffer without bound.
- ``stop`` stops delivery; triggers not yet handled are delivered again later (for Kafka:
  their offsets are not committed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from resilient_task.domain.task import BaseTask

__all__ = ["TriggerCallback", "Triggerer"]

TriggerCallback = Callable[[BaseTask], Awaitable[None]]


class Triggerer(Protocol):
    """Delivers task triggers from the node that added a task to a node that runs it."""

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Send triggers for ``tasks``; raise TriggerError if they could not be sent."""
        ...

    async def start(self, on_trigger: TriggerCallback) -> None:
        """Start delivering triggers to ``on_trigger``; returns once delivery is running."""
        ...

    async def stop(self) -> None:
        """Stop delivering; idempotent."""
        ...

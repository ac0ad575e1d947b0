"""Triggers over a cluster-wide concurrency limit wait here for a slot of their key.

A handler with a :class:`~resilient_task.domain.policies.GlobalConcurrencyPolicy` grabs with
the store's limited grab; over the limit, the grab takes nothing and the trigger waits --
holding its node slots -- until a task of the key ends on this node, or the policy's
``recheck_interval`` passes (a slot may free on another node), then grabs again. The task stays
SUBMITTED meanwhile: if this node stops or dies, its pick-up deadline passes and the resumer
re-triggers it. No store round trip is made while waiting.
"""

from __future__ import annotations

from collections import Counter

import anyio

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.policies import GlobalConcurrencyPolicy
from resilient_task.domain.task import BaseTask, Task
from resilient_task.ports.clock import Clock
from resilient_task.service.admission import Admission
from resilient_task.service.grab import OVER_LIMIT, Grabber

__all__ = ["LimitWaits"]


class LimitWaits:
    """The grab of step 2, waiting while a global limit is reached."""

    def __init__(self, grabber: Grabber, admission: Admission, clock: Clock) -> None:
        self._grabber = grabber
        self._admission = admission
        self._clock = clock
        self._freed: dict[str, anyio.Event] = {}
        """Per global key: set when a task of the key ends on this node (waiters grab again)."""
        self._ended: Counter[str] = Counter()
        """Per global key: how many of its tasks ended on this node (a grab that raced an end
        retries at once instead of waiting)."""

    async def grab(self, base: BaseTask, handler: TaskHandler | None) -> Task | None:
        """The grabbed task, or None (stale trigger, store failure, or shutting down)."""
        policy = handler.concurrency_policy if handler is not None else None
        if not isinstance(policy, GlobalConcurrencyPolicy):
            grabbed = await self._grabber.grab(base, handler)
            return None if grabbed is OVER_LIMIT else grabbed  # never over: no global limit
        while True:
            ended = self._ended[policy.key]
            grabbed = await self._grabber.grab(base, handler)
            if grabbed is not OVER_LIMIT:
                return grabbed
            if self._ended[policy.key] != ended:
                continue  # a task of the key ended here during the grab: its slot is free
            freed = self._freed.setdefault(policy.key, anyio.Event())
            seconds = policy.recheck_interval.total_seconds()
            if not await self._admission.pause(freed, seconds, self._clock):
                return None  # shutting down: the task stays SUBMITTED

    def ended(self, handler: TaskHandler) -> None:
        """A task of ``handler`` ended on this node: wake the triggers waiting for its key."""
        policy = handler.concurrency_policy
        if isinstance(policy, GlobalConcurrencyPolicy):
            self._ended[policy.key] += 1
            freed = self._freed.pop(policy.key, None)
            if freed is not None:
                freed.set()

"""The grab: an admitted trigger's task moves SUBMITTED -> PROCESSING on this node.

The grab is a version-checked update, so a duplicate or stale trigger finds nothing to grab.
Grabs of concurrent triggers share one store round trip (:class:`Batcher`, group commit).

A handler with a :class:`~resilient_task.domain.policies.GlobalConcurrencyPolicy` grabs with
``dao.grab_limited`` (one batcher per key): a task over the key's limit stays SUBMITTED and
its grab returns :data:`OVER_LIMIT`.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Final, Literal
from uuid import UUID

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.outcome import describe
from resilient_task.domain.policies import GlobalConcurrencyPolicy
from resilient_task.domain.task import BaseTask, Task
from resilient_task.errors import BackendError, ConfigurationError
from resilient_task.logsetup import task_extra
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import Observer
from resilient_task.ports.task_dao import Grabbed, GrabLimit, GrabRequest, LimitedGrab
from resilient_task.properties import TaskProperties
from resilient_task.service.batcher import Batcher
from resilient_task.service.outage import OutageLog
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO

__all__ = ["OVER_LIMIT", "Grabber", "OverLimit", "global_limits"]

log = logging.getLogger("resilient_task.executor")


class OverLimit(enum.Enum):
    """The task is SUBMITTED but its key's global limit is reached: not grabbed, try later."""

    OVER_LIMIT = "over limit"


OVER_LIMIT: Final = OverLimit.OVER_LIMIT

GrabResult = Grabbed | Exception | OverLimit | None


def global_limits(handlers: Iterable[TaskHandler]) -> dict[str, GrabLimit]:
    """The store-side limit of each GlobalConcurrencyPolicy key: its limit and task types.

    Raises:
        ConfigurationError: two policies of one key disagree on the limit.
    """
    limits: dict[str, GrabLimit] = {}
    for handler in handlers:
        policy = handler.concurrency_policy
        if not isinstance(policy, GlobalConcurrencyPolicy):
            continue
        assert handler.types is not None  # TaskHandler requires it with this policy
        known = limits.get(policy.key)
        if known is not None and known.limit != policy.limit:
            raise ConfigurationError(
                f"global concurrency key {policy.key!r} has two limits: {known.limit} and "
                f"{policy.limit}"
            )
        types = frozenset(handler.types) | (known.types if known else frozenset())
        limits[policy.key] = GrabLimit(policy.key, policy.limit, types)
    return limits


class Grabber:
    """Grabs triggered tasks for one executor, batching concurrent grabs."""

    def __init__(
        self,
        *,
        dao: AnyTaskDAO,
        registry: HandlerRegistry,
        clock: Clock,
        properties: TaskProperties,
        observer: Observer,
        outage: OutageLog,
        stats: Counter[str],
    ) -> None:
        self._dao = dao
        self._registry = registry
        self._clock = clock
        self._props = properties
        self._observer = observer
        self._db = outage
        self._stats = stats
        self.batcher: Batcher[GrabRequest, GrabResult] = Batcher(self._batch)
        self.limits = global_limits(registry.handlers)
        """The GlobalConcurrencyPolicy keys of the handlers, with their limit and types."""
        if self.limits and not callable(getattr(dao, "grab_limited", None)):
            raise ConfigurationError(
                f"handlers with a GlobalConcurrencyPolicy need a store enforcing it "
                f"(grab_limited); {type(dao).__name__} has none"
            )
        self._holds = _holds(registry.handlers, properties)
        self._limited = {key: self._limited_batcher(limit) for key, limit in self.limits.items()}

    def _limited_batcher(self, limit: GrabLimit) -> Batcher[GrabRequest, GrabResult]:
        grab_limited: Callable[..., Awaitable[LimitedGrab]] = self._dao.grab_limited  # type: ignore[attr-defined]

        async def grab(requests: Sequence[GrabRequest]) -> list[GrabResult]:
            now = self._clock.now()
            hold_until = now + self._holds[limit.key]
            result = await grab_limited(requests, now=now, limit=limit, hold_until=hold_until)
            return _in_order(requests, result.grabbed, result.over_limit)

        return Batcher(lambda requests: self._split(requests, grab))

    async def grab(
        self, base: BaseTask, handler: TaskHandler | None
    ) -> Task | Literal[OverLimit.OVER_LIMIT] | None:
        """The grabbed task, or None: stale or duplicate trigger, or a failed grab (logged).

        :data:`OVER_LIMIT`: the handler's global limit is reached; the task stays SUBMITTED.
        """
        now = self._clock.now()
        timeout = (
            self._registry.timeout(handler, self._props)
            if handler is not None
            else self._props.task_stuck_timeout
        )
        deadline = now + timeout + self._props.processing_grace
        request = GrabRequest(base.id, base.version, self._props.node_id, deadline)
        policy = handler.concurrency_policy if handler is not None else None
        batcher = (
            self._limited[policy.key]
            if isinstance(policy, GlobalConcurrencyPolicy)
            else self.batcher
        )
        try:
            grabbed = await batcher.submit(request)
            if isinstance(grabbed, Exception):
                raise grabbed  # this request failed on its own (see _batch)
        except BackendError as exc:
            self._db.failed(exc, f"grabbing task {base.id}")
            self._stats["grab_failed"] += 1
            return None
        except Exception as exc:  # the store refused this trigger's values: not an outage
            self._stats["grab_failed"] += 1
            log.warning(
                "task %s v%s: trigger not grabbed, the store refused it: %s",
                base.id,
                loggable(base.version),
                loggable(describe(exc)),
                extra=task_extra(base),
            )
            return None
        self._db.succeeded()
        if grabbed is OVER_LIMIT:
            self._stats["over_limit"] += 1
            return OVER_LIMIT
        if grabbed is None:
            self._stats["stale"] += 1
            self._observer.task_stale()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "task %s v%d: stale or duplicate trigger, nothing grabbed",
                    base.id,
                    base.version,
                )
            return None
        task = grabbed.task
        self._stats["grabbed"] += 1
        # Due -> start: from when the task became SUBMITTED to its grab (the store's clock
        # and this node's may disagree a little: never negative).
        delay = (task.updated_at - grabbed.queued_at).total_seconds()
        self._observer.task_grabbed(task.type, delay if delay > 0 else 0.0)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "task %s type=%s SUBMITTED -> PROCESSING attempt=%d node=%s",
                task.id,
                loggable(task.type),
                task.processing_tries_count,
                self._props.node_id,
                extra=task_extra(task),
            )
        return task

    async def _batch(self, requests: Sequence[GrabRequest]) -> list[GrabResult]:
        """One round trip for every grab queued meanwhile (group commit)."""

        async def grab(part: Sequence[GrabRequest]) -> list[GrabResult]:
            grabbed = await self._dao.grab_queued(part, now=self._clock.now())
            return _in_order(part, grabbed, frozenset())

        return await self._split(requests, grab)

    async def _split(
        self,
        requests: Sequence[GrabRequest],
        grab: Callable[[Sequence[GrabRequest]], Awaitable[list[GrabResult]]],
    ) -> list[GrabResult]:
        """``grab(requests)``; a batch refused for another reason than a backend failure.

        (a value out of range in one forged trigger...) is split in halves and retried, down
        to the single requests at fault: their result is the error, every other request is
        grabbed now.
        """
        try:
            return await grab(requests)
        except BackendError:
            raise  # an outage or a transient failure: every request of the batch shares it
        except Exception:
            if len(requests) == 1:
                raise
            half = len(requests) // 2
            results: list[GrabResult] = []
            for part in (requests[:half], requests[half:]):
                try:
                    results += await self._split(part, grab)
                except Exception as exc:
                    results += [exc] * len(part)
            return results


def _holds(handlers: Iterable[TaskHandler], properties: TaskProperties) -> dict[str, timedelta]:
    """Per global key: how far a waiting trigger holds off its task's re-trigger.

    The task's expected queue time, and at least two rechecks: the waiting node renews it at
    every recheck, so resumers re-trigger the task only once that node is gone.
    """
    holds: dict[str, timedelta] = {}
    for handler in handlers:
        policy = handler.concurrency_policy
        if isinstance(policy, GlobalConcurrencyPolicy):
            queue = handler.processing_policy.expected_queue_time or properties.expected_queue_time
            hold = max(queue, 2 * policy.recheck_interval)
            holds[policy.key] = max(hold, holds.get(policy.key, hold))
    return holds


def _in_order(
    requests: Sequence[GrabRequest], grabbed: Sequence[Grabbed], over_limit: frozenset[UUID]
) -> list[GrabResult]:
    """Each request's result: its grabbed task, OVER_LIMIT, or None (stale)."""
    by_key = {(g.task.id, g.task.version - 1): g for g in grabbed}
    # A duplicate trigger in the same batch must not run the task twice: first one wins.
    results: list[GrabResult] = []
    for r in requests:
        found = by_key.pop((r.task_id, r.version), None)
        results.append(
            found if found is not None else OVER_LIMIT if r.task_id in over_limit else None
        )
    return results

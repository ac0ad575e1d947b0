"""Opt-in latency breakdown (``--breakdown``): where a trigger's milliseconds go in the worker.

Only for diagnosis, never for the headline numbers: it wraps, in the worker process only,
``TaskExecutor.on_trigger`` (trigger delivered to the executor) and ``TaskDAO.grab_queued``
(the grab round trip, for every task of its batch; the executor calls it, ``grab`` only wraps
it) to record ``time.time()`` per task id. The handler start is recorded by the bench handler
as always. Nothing in ``src/`` is changed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.common import percentiles

marks: dict[str, dict[str, float]] = {"trigger": {}, "grab_start": {}, "grab_end": {}}


def install_executor_hook() -> None:
    from resilient_task.service.executor import TaskExecutor

    original = TaskExecutor.on_trigger

    async def on_trigger(self: Any, base: Any) -> None:
        marks["trigger"].setdefault(str(base.id), time.time())
        await original(self, base)

    TaskExecutor.on_trigger = on_trigger  # type: ignore[method-assign]


def install_dao_hook(app: Any) -> None:
    dao = app.dao
    original = dao.grab_queued

    async def grab_queued(requests: Sequence[Any], **kw: Any) -> Any:
        started = time.time()
        try:
            return await original(requests, **kw)
        finally:
            ended = time.time()
            for r in requests:
                marks["grab_start"].setdefault(str(r.task_id), started)
                marks["grab_end"].setdefault(str(r.task_id), ended)

    dao.grab_queued = grab_queued


def summarise(
    adds: dict[str, float], starts: dict[str, float], m: dict[str, Any]
) -> dict[str, Any]:
    """Percentiles of each leg: add returned -> trigger -> grab start -> grab end -> start."""
    legs = {
        "add_to_trigger_ms": (adds, m["trigger"]),
        "trigger_to_grab_ms": (m["trigger"], m["grab_start"]),
        "grab_round_trip_ms": (m["grab_start"], m["grab_end"]),
        "grab_to_start_ms": (m["grab_end"], starts),
    }
    out = {}
    for name, (a, b) in legs.items():
        out[name] = percentiles([(b[i] - a[i]) * 1000 for i in adds if i in a and i in b])
    return out

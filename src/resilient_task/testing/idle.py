"""Waiting for a node on a :class:`FakeClock` to finish its work, without private helpers.

Two helpers for tests of a :class:`~resilient_task.ResilientTask` node that runs workers over
a ``FakeClock`` (any store; usually the in-memory one)::

    async with ResilientTask(handlers=[handler], in_memory=True, clock=FakeClock()) as app:
        await app.service.add_task(AddTaskRequest(type="email"))
        await settle(app)           # the task ran: the fake time did not move
        await run_until_idle(app)   # retries, scheduled tasks...: the fake time moves as needed

Neither reads the wall clock for the node's behaviour; the only real-time bound is a safety
net (``real_timeout``) that turns a hang into a failure naming what is still pending.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio
import anyio.lowlevel

from resilient_task.adapters.memory.clock import FakeClock
from resilient_task.bootstrap import ResilientTask
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import ConfigurationError

__all__ = ["SettleError", "run_until_idle", "settle"]

_PENDING = (TaskStatus.WAITING, TaskStatus.SUBMITTED, TaskStatus.PROCESSING)
"""Statuses in which a task still has something ahead of it (ERROR waits for an operator)."""


class SettleError(AssertionError):
    """The node did not become idle within the bounds given; the message says what is left."""


async def settle(app: ResilientTask, *, max_rounds: int = 200, real_timeout: float = 10) -> None:
    """Let ``app`` run everything it can at the current fake time; time does not move.

    Returns when no task is running on the node and none is runnable now: no SUBMITTED task
    awaits pick-up and no WAITING task is due. Each round lets every task run until it blocks
    (:meth:`FakeClock.settle`), then polls once like the node's resumer would at this time, so
    a task due now is claimed without waiting for the next polling interval.

    Raises:
        SettleError: still busy after ``max_rounds`` rounds or ``real_timeout`` seconds, e.g. a
            handler waiting for the fake time to move (use :func:`run_until_idle`) or a trigger
            that was lost (its task runs once the clock passes its pick-up deadline).
        TypeError: the node does not run on a :class:`FakeClock`.
        ConfigurationError: the node is not started.
    """
    clock = _fake_clock(app)
    with anyio.move_on_after(real_timeout):
        if await _rounds(app, clock, max_rounds=max_rounds, until_stalled=False):
            return
    raise SettleError(f"node still busy at {clock.now().isoformat()}: {await _describe(app)}")


async def run_until_idle(
    app: ResilientTask,
    *,
    until: datetime | None = None,
    max_steps: int = 1000,
    real_timeout: float = 30,
) -> datetime:
    """Run ``app`` until no task has anything ahead of it, moving the fake time as needed.

    Repeats: run the node as :func:`settle` does (until idle, or until nothing changes any
    more, e.g. a handler waits for the fake time), then advance the clock to the earliest
    ``next_event_time`` of a WAITING, SUBMITTED or PROCESSING task (a run time or a deadline),
    or -- while a handler is still running -- to the next time a sleeper on the clock wakes.
    Returns the fake time reached: when only ERROR and final tasks remain, or the next event
    is after ``until``.

    Raises:
        SettleError: more than ``max_steps`` advances (e.g. a task rescheduling itself forever:
            pass ``until``) or ``real_timeout`` seconds.
        TypeError: the node does not run on a :class:`FakeClock`.
        ConfigurationError: the node is not started.
    """
    clock = _fake_clock(app)
    with anyio.move_on_after(real_timeout):
        for _ in range(max_steps):
            await _rounds(app, clock, max_rounds=200, until_stalled=True)
            target = await _next_time(app, clock)
            if target is None or (until is not None and target > until):
                return clock.now()
            await clock.advance(max(target - clock.now(), timedelta(0)))
    raise SettleError(
        f"still not idle after {max_steps} clock advances, at {clock.now().isoformat()}: "
        f"{await _describe(app)}"
    )


async def _rounds(
    app: ResilientTask, clock: FakeClock, *, max_rounds: int, until_stalled: bool
) -> bool:
    """Run rounds until the node is idle now (True), or stalled (False).

    Stalled, with ``until_stalled``: three rounds in a row changed nothing (e.g. a handler
    waits for the fake time).

    A round lets every task run until it blocks (:meth:`FakeClock.settle`), then polls once
    like the node's resumer would at this time.
    """
    stalled, before = 0, None
    for _ in range(max_rounds):
        await clock.settle()
        acted = await app.resumer.run_once()
        await clock.settle()
        if acted == 0 and await _idle_now(app, clock.now()):
            return True
        state = (acted, app.executor.running, await app.dao.count_by_status())
        stalled = stalled + 1 if acted == 0 and state == before else 0
        if until_stalled and stalled >= 3:
            return False
        before = state
        # Work on a thread or real I/O (not the fake time) needs a moment of real time.
        await anyio.sleep(0.001)
    return False


def _fake_clock(app: ResilientTask) -> FakeClock:
    try:
        clock = app.clock
    except (AttributeError, ConfigurationError):  # not started (has no clock yet)
        raise ConfigurationError(
            "start the node first: use these inside `async with app:`"
        ) from None
    if not isinstance(clock, FakeClock):
        raise TypeError(f"the node must run on a FakeClock, not {type(clock).__name__}")
    return clock


async def _idle_now(app: ResilientTask, now: datetime) -> bool:
    if app.executor.running:
        return False
    if await app.dao.find_tasks(status=TaskStatus.SUBMITTED, limit=1):
        return False
    due = await app.dao.find_tasks(status=TaskStatus.WAITING, limit=1)
    return not due or due[0].next_event_time > now


async def _next_time(app: ResilientTask, clock: FakeClock) -> datetime | None:
    """The next fake time worth advancing to (None: nothing ahead of any task)."""
    times = []
    for status in _PENDING:
        earliest = await app.dao.find_tasks(status=status, limit=1)
        if earliest:
            times.append(earliest[0].next_event_time)
    if not times and not app.executor.running:
        return None
    later = [t for t in times if t > clock.now()]
    wake = clock.next_wake()
    if wake is not None and (app.executor.running or not later):
        later.append(wake)
    return min(later, default=None)


async def _describe(app: ResilientTask) -> str:
    counts = await app.dao.count_by_status()
    pending = ", ".join(f"{counts[s]} {s.value}" for s in _PENDING if counts.get(s))
    return f"{app.executor.running} task(s) running; pending: {pending or 'none'}"

"""Watchdog: one task cancels overdue processors' scopes at their deadline (no timer per run)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from resilient_task.adapters.memory import FakeClock
from resilient_task.service.timeouts import Watchdog

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)


async def test_a_watched_scope_is_cancelled_at_its_deadline_not_before() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    async with anyio.create_task_group() as tg:
        await tg.start(watchdog.run)
        scope = anyio.CancelScope()
        watchdog.watch(scope, clock.now() + 10 * SECOND)
        await clock.advance(9.9)
        assert not scope.cancel_called
        await clock.advance(0.1)
        assert scope.cancel_called
        assert watchdog.watched == 0
        tg.cancel_scope.cancel()


async def test_a_forgotten_scope_is_never_cancelled() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    async with anyio.create_task_group() as tg:
        await tg.start(watchdog.run)
        scope = anyio.CancelScope()
        watchdog.forget(watchdog.watch(scope, clock.now() + 10 * SECOND))
        await clock.advance(60)
        assert not scope.cancel_called
        tg.cancel_scope.cancel()


async def test_an_earlier_deadline_wakes_the_watchdog_sleeping_for_a_later_one() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    async with anyio.create_task_group() as tg:
        await tg.start(watchdog.run)
        late, early = anyio.CancelScope(), anyio.CancelScope()
        watchdog.watch(late, clock.now() + 60 * SECOND)
        await clock.settle()  # the watchdog sleeps until the late deadline
        watchdog.watch(early, clock.now() + 5 * SECOND)
        await clock.advance(5)
        assert early.cancel_called
        assert not late.cancel_called
        await clock.advance(55)
        assert late.cancel_called
        tg.cancel_scope.cancel()


async def test_a_deadline_already_past_cancels_at_once() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    scope = anyio.CancelScope()
    watchdog.watch(scope, clock.now())
    assert scope.cancel_called
    assert watchdog.watched == 0


async def test_an_overrunning_processor_is_cancelled_by_its_watched_scope() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    outcome: list[str] = []

    async def processor() -> None:
        with anyio.CancelScope() as scope:
            deadline = watchdog.watch(scope, clock.now() + 10 * SECOND)
            try:
                await anyio.sleep_forever()
            finally:
                watchdog.forget(deadline)
        outcome.append("timed out" if scope.cancelled_caught else "returned")

    async with anyio.create_task_group() as tg:
        await tg.start(watchdog.run)
        tg.start_soon(processor)
        await clock.settle()  # the processor runs and the watchdog sleeps for its deadline
        await clock.advance(9)
        assert outcome == []
        await clock.advance(1)
        assert outcome == ["timed out"]
        tg.cancel_scope.cancel()


async def test_an_idle_watchdog_is_not_woken_by_the_next_run_of_the_same_timeout() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    async with anyio.create_task_group() as tg:
        await tg.start(watchdog.run)
        await clock.settle()  # asleep, nothing watched
        for _ in range(3):  # quick runs one after the other, the node idle in between
            watchdog.forget(watchdog.watch(anyio.CancelScope(), clock.now() + 10 * SECOND))
            await clock.settle()
            await clock.advance(1)
        assert watchdog.wakes == 1  # only the first run woke it
        scope = anyio.CancelScope()
        watchdog.watch(scope, clock.now() + 10 * SECOND)
        await clock.settle()
        assert watchdog.wakes == 1
        await clock.advance(9.9)
        assert not scope.cancel_called
        await clock.advance(0.1)
        assert scope.cancel_called  # on time all the same
        tg.cancel_scope.cancel()


async def test_past_the_latest_deadline_an_idle_watchdog_sleeps_until_woken() -> None:
    clock = FakeClock()
    watchdog = Watchdog(clock)
    async with anyio.create_task_group() as tg:
        await tg.start(watchdog.run)
        watchdog.forget(watchdog.watch(anyio.CancelScope(), clock.now() + 10 * SECOND))
        await clock.advance(20)  # the latest deadline passed: nothing left to sleep for
        scope = anyio.CancelScope()
        watchdog.watch(scope, clock.now() + 5 * SECOND)
        await clock.advance(5)
        assert scope.cancel_called
        assert watchdog.wakes == 2
        tg.cancel_scope.cancel()

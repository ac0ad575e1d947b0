"""FakeClock.advance and settle: work woken by the fake time has run when they return."""

from __future__ import annotations

import itertools

import anyio
import pytest

from resilient_task.adapters.memory import FakeClock

pytestmark = pytest.mark.anyio

DEPTH = 200  # far more hand-offs than a fixed handful of checkpoints would let through


async def _relay(inbox: anyio.Event, outbox: anyio.Event) -> None:
    await inbox.wait()
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    outbox.set()


async def test_settle_lets_a_long_chain_of_woken_tasks_run_to_its_end() -> None:
    clock = FakeClock()
    events = [anyio.Event() for _ in range(DEPTH + 1)]
    async with anyio.create_task_group() as tg:
        for inbox, outbox in itertools.pairwise(events):
            tg.start_soon(_relay, inbox, outbox)
        await clock.settle()
        assert not events[-1].is_set()

        events[0].set()
        await clock.settle()

        assert events[-1].is_set()


async def test_advance_returns_after_the_work_it_woke_has_run() -> None:
    clock = FakeClock()
    done = anyio.Event()
    events = [anyio.Event() for _ in range(DEPTH)]

    async def sleeper() -> None:
        await clock.sleep(5)
        events[0].set()

    async with anyio.create_task_group() as tg:
        for inbox, outbox in itertools.pairwise([*events, done]):
            tg.start_soon(_relay, inbox, outbox)
        tg.start_soon(sleeper)
        await clock.settle()
        assert clock.sleepers == 1

        await clock.advance(4)
        assert not done.is_set()
        await clock.advance(1)

        assert done.is_set()


async def test_settle_does_not_wait_for_work_blocked_on_real_time() -> None:
    clock = FakeClock()
    finished = anyio.Event()

    async def slow() -> None:
        await anyio.sleep(30)
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        with anyio.fail_after(5):
            await clock.settle()
        assert not finished.is_set()
        tg.cancel_scope.cancel()


async def test_settle_gives_up_on_a_task_that_never_blocks() -> None:
    clock = FakeClock()

    async def busy() -> None:
        while True:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(busy)
        with anyio.fail_after(20):
            await clock.settle(max_checkpoints=100)
        tg.cancel_scope.cancel()

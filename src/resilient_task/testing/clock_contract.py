# ruff: noqa: D102 -- each test is named as the sentence it checks
"""The Clock port's contract, run against every clock (system and fake)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from resilient_task.ports.clock import Clock

__all__ = ["ClockContract"]


class ClockContract:
    """Behaviour the ``Clock`` port promises; see ``resilient_task.ports.clock``.

    Subclasses override the ``clock`` fixture (a fresh clock) and :meth:`advance`.
    """

    @pytest.fixture
    def clock(self) -> Clock:
        """A fresh clock for one test (the subclass's factory hook)."""
        raise NotImplementedError("subclasses override the clock fixture")

    async def advance(self, clock: Clock, seconds: float) -> None:
        """Let ``seconds`` pass on ``clock`` (real sleep, or a fake clock's advance)."""
        raise NotImplementedError("subclasses say how time passes on their clock")

    @pytest.mark.anyio
    async def test_now_is_timezone_aware_utc(self, clock: Clock) -> None:
        now = clock.now()
        assert now.utcoffset() == timedelta(0)

    @pytest.mark.anyio
    async def test_now_never_goes_backwards(self, clock: Clock) -> None:
        earlier = clock.now()
        await self.advance(clock, 0.01)
        assert clock.now() >= earlier

    @pytest.mark.anyio
    async def test_sleep_returns_after_at_least_the_time_asked(self, clock: Clock) -> None:
        start = clock.now()
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 0.05)
            await self.advance(clock, 0.06)
        assert clock.now() - start >= timedelta(seconds=0.05)

    @pytest.mark.anyio
    async def test_timeout_scope_cancels_work_that_outlives_it(self, clock: Clock) -> None:
        finished = False

        async def work() -> None:
            nonlocal finished
            with clock.timeout_scope(0.05) as scope:
                await anyio.sleep_forever()
            finished = True
            assert scope.cancel_called

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                await self.advance(clock, 0.06)
        assert finished

    @pytest.mark.anyio
    async def test_timeout_scope_leaves_quick_work_alone(self, clock: Clock) -> None:
        with clock.timeout_scope(60) as scope:
            await anyio.lowlevel.checkpoint()
        assert not scope.cancel_called

from __future__ import annotations

import anyio
import pytest

from resilient_task.adapters.memory import FakeClock
from resilient_task.adapters.system import SystemClock
from resilient_task.ports.clock import Clock
from resilient_task.testing.clock_contract import ClockContract


class TestSystemClock(ClockContract):
    @pytest.fixture
    def clock(self) -> Clock:
        return SystemClock()

    async def advance(self, clock: Clock, seconds: float) -> None:
        await anyio.sleep(seconds)


class TestFakeClock(ClockContract):
    @pytest.fixture
    def clock(self) -> Clock:
        return FakeClock()

    async def advance(self, clock: Clock, seconds: float) -> None:
        assert isinstance(clock, FakeClock)
        for _ in range(5):  # let the sleepers register first
            await anyio.lowlevel.checkpoint()
        await clock.advance(seconds)

"""examples/cron_settle_payouts.py runs its job once a second, on the system clock."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from examples.cron_settle_payouts import Payouts, demo, settle_payouts

from resilient_task.domain.cron import MissedRuns

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_example_job_runs_once_a_second() -> None:
    runs = await demo(2.6)

    ticks = [run.tick for run in runs]
    assert 1 <= len(ticks) <= 3
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))


def test_the_example_job_settles_every_five_minutes_in_london() -> None:
    job = settle_payouts(Payouts())

    assert (job.name, job.schedule, job.timezone) == (
        "settle-payouts",
        "*/5 * * * *",
        "Europe/London",
    )
    assert job.missed is MissedRuns.RUN_ONCE

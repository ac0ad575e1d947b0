"""A recurring job for docs/cron.md: settle payouts every five minutes, London time.

Run the demo (in memory, a job every second for a few seconds)::

    python examples/cron_settle_payouts.py 5

In production the job is declared the same way on every worker node, with the PostgreSQL
store: however many nodes run, each tick runs once. The node takes the jobs' handlers and
creates their tasks when it starts (``ResilientTask(cron_jobs=...)``).
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta

import anyio

from resilient_task import ResilientTask, TaskProperties, TaskResumerProperties
from resilient_task.domain.cron import CronJob, CronRun, MissedRuns

log = logging.getLogger("payouts")


class Payouts:
    """Settles the payouts due at each tick (here: records the ticks it ran for)."""

    def __init__(self) -> None:
        self.settled: list[CronRun] = []

    async def settle(self, run: CronRun) -> None:
        """One run: everything due up to ``run.tick``. Raise to fail the run."""
        self.settled.append(run)
        log.info("settling payouts due by %s", run.tick.isoformat())


def settle_payouts(payouts: Payouts, schedule: str = "*/5 * * * *") -> CronJob:
    """The job: every five minutes in London; after an outage, one run catches up."""
    return CronJob(
        name="settle-payouts",
        schedule=schedule,
        processor=payouts.settle,
        timezone="Europe/London",
        missed=MissedRuns.RUN_ONCE,
        timeout=timedelta(minutes=2),
    )


async def demo(seconds: float) -> list[CronRun]:
    """Run the job every second, in memory, for ``seconds``; return its runs."""
    payouts = Payouts()
    # Due ticks are picked up by the resumer's poll: poll well within the shortest interval.
    properties = TaskProperties(
        resumer=TaskResumerProperties(polling_interval=timedelta(milliseconds=100))
    )
    job = settle_payouts(payouts, schedule="* * * * * *")
    async with ResilientTask(cron_jobs=[job], properties=properties):
        await anyio.sleep(seconds)
    return payouts.settled


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    runs = anyio.run(demo, float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    print(f"{len(runs)} runs, one per second")

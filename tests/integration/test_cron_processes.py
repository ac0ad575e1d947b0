"""Three worker processes run one job every second: one run per tick, none twice.

The workers (``tests/integration/cron_app.py``) share the test's PostgreSQL schema and Kafka
namespace, started and stopped by the fault tests' harness.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from tests.integration.cron_app import parse_run
from tests.integration.faults import harness
from tests.integration.faults.harness import Cluster, Store, scenario, time_limit, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 3
WINDOW = 20
"""Seconds of ticks counted (after the first run, so that start-up does not count)."""


def recorded_runs(cluster: Cluster) -> list[tuple[str, str, float]]:
    """Every run any worker recorded: ``(tick, node id, started)``."""
    runs = []
    for worker in cluster.workers:
        if worker.exec_path.exists():
            runs += [parse_run(line) for line in worker.exec_path.read_text().splitlines()]
    return runs


async def test_three_nodes_run_a_job_every_second_once_per_tick(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "WORKER_APP", "tests.integration.cron_app:app")
    with time_limit(150):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    # Due ticks are claimed by the resumers' polls: poll well within a tick.
                    cluster.start(WORKERS, RESILIENT_TASK_RESUMER_POLLING_INTERVAL_S="0.1")
                    await cluster.wait_ready()
                    await wait_for(lambda: recorded_runs(cluster), 30, "the job's first run")
                    first = min(datetime.fromisoformat(t) for t, _, _ in recorded_runs(cluster))
                    window = (first + timedelta(seconds=2), first + timedelta(seconds=2 + WINDOW))
                    await anyio.sleep((window[1] - datetime.now(UTC)).total_seconds() + 2)
                    cluster.assert_alive()
                    runs = recorded_runs(cluster)
                    rows = await store.rows()
                    stopped = await cluster.stop_gracefully(harness.GRACEFUL_EXIT + 5)
                finally:
                    await store.close()
            cluster.assert_stopped_gracefully(stopped)

    twice = {t: n for t, n in Counter(t for t, _, _ in runs).items() if n > 1}
    assert not twice, f"ticks run more than once: {twice}"
    in_window = [t for t, _, _ in runs if window[0] <= datetime.fromisoformat(t) < window[1]]
    assert WINDOW - 1 <= len(in_window) <= WINDOW + 1, sorted(in_window)
    assert len(rows) == 1
    assert [row.status for row in rows.values()] != ["ERROR"]

"""PostgreSQL restarted mid-run: workers ride it out, log it once, and every task finishes.

Needs the database to be a local Debian/Ubuntu cluster this test may restart
(``pg_ctlcluster``, port of the URL); skipped otherwise -- failed under ``CI=true``.
It restarts that whole cluster, so it runs only when ``RESILIENT_TASK_TEST_ALLOW_PG_RESTART=1``
(``.ci/run`` sets it): a developer running ``make test`` against their own cluster is never
surprised by a restart.
Duplicates are allowed here (a completion that could not be written is recovered after its
deadline and runs again), but never overlapping runs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from tests.integration.faults.harness import (
    Cluster,
    Store,
    add_tasks,
    client,
    counts,
    run_problems,
    scenario,
    time_limit,
    unavailable,
    unfinished,
)
from tests.integration.postgres_env import require_restart_allowed

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 3
BEFORE, AFTER = 2000, 500
LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}


def local_cluster(database_url: str) -> list[str]:
    """The ``pg_ctlcluster`` command restarting the cluster behind ``database_url``."""
    require_restart_allowed()
    pg_ctlcluster, pg_lsclusters = shutil.which("pg_ctlcluster"), shutil.which("pg_lsclusters")
    if pg_ctlcluster is None or pg_lsclusters is None:
        unavailable("pg_ctlcluster is not installed: cannot restart PostgreSQL")
    url = sa.make_url(database_url)
    if url.host not in LOCAL_HOSTS:
        unavailable(f"PostgreSQL at {url.host} is not local: cannot restart it")
    port = url.port or 5432
    listing = subprocess.run(
        [pg_lsclusters, "--no-header"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    for line in listing.splitlines():
        version, name, cluster_port, status, *_ = line.split()
        if int(cluster_port) == port and status.startswith("online"):
            return [pg_ctlcluster, "--skip-systemctl-redirect", version, name, "restart"]
    unavailable(f"no online local cluster on port {port} (pg_lsclusters: {listing.strip()!r})")


async def test_database_restart_mid_run_loses_nothing_and_workers_keep_running(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    restart = local_cluster(database_url)
    with time_limit(150):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    cluster.start(WORKERS)
                    await cluster.wait_ready()
                    async with client(world) as app:
                        warm = await cluster.warm_up(app, store)
                        before = await add_tasks(app, BEFORE)
                    await store.wait_done_at_least(len(warm) + BEFORE // 4, within=30)
                    began = time.monotonic()
                    with anyio.fail_after(60):
                        done = await anyio.run_process(restart, check=False)
                    restart_took = time.monotonic() - began
                    assert done.returncode == 0, f"restart failed: {done.stderr.decode()}"
                    # A new client: the first one's pool died with the server.
                    async with client(world) as app:
                        after = await add_tasks(app, AFTER)
                    total = len(warm) + BEFORE + AFTER
                    status = await store.wait_all_done(total, within=60)
                    executions, rows, stopped = await cluster.finish(store)
                finally:
                    await store.close()

    assert status == {"DONE": total}, (
        f"not all DONE: {dict(status)}\n{unfinished(rows)}\n{cluster.logs()}"
    )
    ids = [*warm, *before, *after]
    assert set(rows) == set(ids)
    ran = counts(executions)
    assert set(ran) == set(ids), "tasks DONE without an execution record, or unknown records"
    problems = run_problems(executions, rows)
    assert not problems, "\n".join(problems[:10])

    # The outage is logged once-ish per component, not once per task.
    unavailable_lines = {
        w.node_id: sum("unavailable" in line for line in w.log().splitlines())
        for w in cluster.workers
    }
    twice = sum(1 for n in ran.values() if n > 1)
    print(
        f"\ndatabase restart took {restart_took:.1f} s; {twice} task(s) ran twice; "
        f"'unavailable' log lines per worker: {unavailable_lines}; "
        f"graceful stops: { {n: (c, round(t, 2)) for n, (c, t) in stopped.items()} }"
    )
    for node_id, lines in unavailable_lines.items():
        assert lines <= 10, f"{node_id} logged the outage {lines} times\n{cluster.logs()}"
    cluster.assert_stopped_gracefully(stopped)

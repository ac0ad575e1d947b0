"""A worker killed with SIGKILL mid-run: nothing is lost, and only its tasks may run twice."""

from __future__ import annotations

import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from tests.integration.faults.harness import (
    Cluster,
    Execution,
    Store,
    add_tasks,
    client,
    describe,
    run_problems,
    scenario,
    time_limit,
    unfinished,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 3
TASKS = 2400
BATCH = 200
SLEEP_MS = 50


async def test_kill_9_of_a_worker_loses_nothing_and_reruns_only_its_running_tasks(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    with time_limit(120):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    # 50 ms of work per task: the victim always has tasks in flight.
                    cluster.start(WORKERS, RT_FAULTS_SLEEP_MS=str(SLEEP_MS))
                    await cluster.wait_ready()
                    victim = cluster.workers[0]
                    async with client(world) as app:
                        ids = await cluster.warm_up(app, store)
                        ids += await add_tasks(app, TASKS // 2, batch=BATCH)
                        await wait_running_on(store, victim.node_id, at_least=5, within=30)
                        victim.signal(signal.SIGKILL)
                        killed_at = time.time()
                        victim.process.wait(timeout=10)
                        # Dead: what it was running stays PROCESSING until recovered.
                        orphans = {
                            row.id
                            for row in (await store.rows()).values()
                            if row.status == "PROCESSING" and row.processing_node == victim.node_id
                        }
                        ids += await add_tasks(app, TASKS - len(ids), batch=BATCH)
                    status = await store.wait_all_done(len(ids), within=60)
                    executions, rows, stopped = await cluster.finish(store, except_for=[victim])
                finally:
                    await store.close()

    by_task: dict[uuid.UUID, list[Execution]] = defaultdict(list)
    for execution in executions:
        by_task[execution.task_id].append(execution)
    twice = {task_id: runs for task_id, runs in by_task.items() if len(runs) > 1}
    print(
        f"\nkill -9 hit {len(orphans)} running task(s); {len(twice)} ran twice; "
        f"graceful stops: { {n: (c, round(t, 2)) for n, (c, t) in stopped.items()} }"
    )
    assert status == {"DONE": len(ids)}, (
        f"not all DONE: {dict(status)}\n{unfinished(rows)}\n{cluster.logs()}"
    )
    assert set(rows) == set(ids)
    assert set(by_task) == set(ids), "tasks DONE without an execution record, or unknown records"
    assert orphans, "the kill hit no running task: the scenario proved nothing"
    problems = run_problems(executions, rows)
    assert not problems, "\n".join(problems[:10])

    # Only what the victim was running may run again, once, on a survivor, after the kill.
    assert set(twice) <= orphans, (
        f"tasks that were not running on the killed worker ran twice: "
        f"{describe({t: twice[t] for t in set(twice) - orphans})}"
    )
    for task_id, runs in twice.items():
        nodes = [r.node_id for r in runs]
        assert len(runs) == 2, f"{task_id} ran on {nodes}"
        assert nodes.count(victim.node_id) == 1, f"{task_id} ran on {nodes}"
        again = next(r for r in runs if r.node_id != victim.node_id)
        assert again.started > killed_at, f"{task_id} ran again before the kill: {runs}"
    for task_id in orphans:
        row = rows[task_id]
        assert row.recovery_count >= 1, f"{task_id} was not recovered: {row}"
        assert row.processing_node != victim.node_id, f"{task_id} finished by the dead: {row}"
    cluster.assert_stopped_gracefully(stopped)


async def wait_running_on(store: Store, node_id: str, *, at_least: int, within: float) -> None:
    """Wait until ``node_id`` has ``at_least`` tasks in PROCESSING."""
    deadline = time.monotonic() + within
    while True:
        rows = (await store.rows()).values()
        if sum(r.status == "PROCESSING" and r.processing_node == node_id for r in rows) >= at_least:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{node_id} never ran {at_least} tasks at once", pytrace=False)
        await anyio.sleep(0.05)

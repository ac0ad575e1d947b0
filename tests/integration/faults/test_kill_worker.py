"""A worker killed with SIGKILL mid-run: nothing is lost, and only its tasks may run twice.

The workers run with Kafka's default 10 s consumer session, longer than the tasks' deadline:
the killed worker's trigger partitions deliver nothing until the group has waited out its
session, so a recovered task re-runs in time only if the recovering node runs it itself.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from tests.integration.faults.harness import (
    HANDLER_TIMEOUT,
    POLLING_INTERVAL,
    PROCESSING_GRACE,
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
SESSION_TIMEOUT_MS = 10_000  # aiokafka's and the triggerer's default
RERUN_WITHIN = HANDLER_TIMEOUT + PROCESSING_GRACE + POLLING_INTERVAL + 1.0
"""Seconds after the kill by which a recovered task must run again: its deadline (at most the
processing timeout plus grace after the kill), one polling interval, one second of slack."""


async def test_kill_9_of_a_worker_loses_nothing_and_reruns_only_its_running_tasks(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    with time_limit(120):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    # 50 ms of work per task: the victim always has tasks in flight.
                    cluster.start(
                        WORKERS,
                        RT_FAULTS_SLEEP_MS=str(SLEEP_MS),
                        RT_FAULTS_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
                    )
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
    rerun_after = {
        task_id: round(
            min(r.started for r in by_task[task_id] if r.node_id != victim.node_id) - killed_at, 2
        )
        for task_id in orphans
        if any(r.node_id != victim.node_id for r in by_task.get(task_id, ()))
    }
    print(
        f"\nkill -9 hit {len(orphans)} running task(s); {len(twice)} ran twice; "
        f"re-run after the kill: max {max(rerun_after.values(), default=0):.2f} s "
        f"(bound {RERUN_WITHIN:.1f} s); "
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
    late = {t: s for t, s in rerun_after.items() if s > RERUN_WITHIN}
    assert not late, (
        f"recovered tasks re-ran later than {RERUN_WITHIN:.1f} s after the kill (deadline + "
        f"polling interval + 1 s), seconds: {describe(late)}\n{cluster.logs()}"
    )
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

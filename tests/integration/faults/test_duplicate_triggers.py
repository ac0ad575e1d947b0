"""Forged duplicates and replays in the triggers topic never run a task twice.

Written straight into the topic with aiokafka, as a misbehaving producer, a replayed
partition or a reset consumer group would deliver them:

- replays of every version each finished task ever had (its original trigger included);
- for tasks waiting for their first trigger: three copies of it on three partitions (so
  three workers race for it at once), plus triggers one version behind and one ahead.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from resilient_task.adapters.kafka.messages import encode_trigger
from resilient_task.domain.task import BaseTask
from tests.integration.faults.harness import (
    PARTITIONS,
    Cluster,
    Message,
    Store,
    TaskRow,
    add_tasks,
    client,
    counts,
    describe,
    produce,
    run_problems,
    scenario,
    silent_client,
    time_limit,
    unfinished,
    wait_consumed,
)
from tests.integration.faults.worker_app import TASK_TYPE

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 3
FINISHED, PENDING = 1000, 1000


def trigger(task_id: uuid.UUID, version: int, partition: int | None = None) -> Message:
    """The trigger message the library itself would send, keyed by the task id."""
    value = encode_trigger(BaseTask(task_id, version, TASK_TYPE, None, 5))
    return Message(value, key=task_id.bytes, partition=partition)


def replays(rows: dict[uuid.UUID, TaskRow], ids: list[uuid.UUID]) -> list[Message]:
    """A trigger for every version 0..current of each task."""
    return [trigger(i, v) for i in ids for v in range(rows[i].version + 1)]


async def test_duplicate_and_replayed_triggers_never_run_a_task_twice(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    shuffle = random.Random(4).shuffle
    with time_limit(120):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    cluster.start(WORKERS)
                    await cluster.wait_ready()
                    async with client(world) as app:
                        warm = await cluster.warm_up(app, store)
                        finished = await add_tasks(app, FINISHED)
                    await store.wait_all_done(len(warm) + FINISHED, within=30)
                    old = replays(await store.rows(), finished)

                    # Pending tasks: stored, never triggered; we forge their triggers.
                    async with silent_client(world) as quiet:
                        pending = await add_tasks(quiet, PENDING)
                    rows = await store.rows(pending)
                    forged: list[Message] = []
                    for n, task_id in enumerate(pending):
                        version = rows[task_id].version
                        forged += [
                            trigger(task_id, version, (n + k) % PARTITIONS) for k in (0, 1, 2)
                        ]
                        forged += [trigger(task_id, version - 1), trigger(task_id, version + 1)]
                    batch = old + forged
                    shuffle(batch)
                    await produce(world, batch)
                    total = len(warm) + FINISHED + PENDING
                    status = await store.wait_all_done(total, within=45)
                    await wait_consumed(world, within=30)

                    # Replay the whole history once more, after everything finished.
                    rows = await store.rows()
                    again = replays(rows, list(rows))
                    await produce(world, again)
                    await wait_consumed(world, within=30)
                    executions, final, stopped = await cluster.finish(store)
                finally:
                    await store.close()

    ran = counts(executions)
    twice = {task_id: n for task_id, n in ran.items() if n > 1}
    # Added at version 0, grabbed (1), DONE (2): it ran from a forged trigger, before any
    # resumer re-submitted it.
    by_forged = sum(1 for t in pending if final[t].version == 2)
    print(
        f"\nforged {len(batch)} duplicate/replayed triggers, then {len(again)} replays; "
        f"{len(twice)} task(s) ran twice; {by_forged} pending task(s) ran from a forged trigger; "
        f"graceful stops: { {n: (c, round(t, 2)) for n, (c, t) in stopped.items()} }"
    )
    assert status == {"DONE": total}, (
        f"not all DONE: {dict(status)}\n{unfinished(final)}\n{cluster.logs()}"
    )
    assert not twice, f"{len(twice)} task(s) ran more than once: {describe(twice)}"
    assert set(ran) == set(final) == {*warm, *finished, *pending}
    assert all(row.status == "DONE" for row in final.values()), unfinished(final)
    problems = run_problems(executions, final)
    assert not problems, "\n".join(problems[:10])
    cluster.assert_stopped_gracefully(stopped)

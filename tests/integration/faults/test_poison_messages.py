"""Messages that are not triggers are skipped; the partitions behind them keep flowing.

Every partition gets the same set of poison messages before and between two bulks of real
tasks. The real tasks must run once each, through the broker (not the resumer's fallback), and
the group must commit past the poison.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.integration.faults.harness import (
    EXPECTED_QUEUE_TIME,
    PARTITIONS,
    Cluster,
    Message,
    Store,
    add_tasks,
    client,
    counts,
    describe,
    percentiles,
    produce,
    run_problems,
    scenario,
    silent_client,
    start_latencies,
    time_limit,
    unfinished,
    wait_consumed,
)
from tests.integration.faults.worker_app import TASK_TYPE

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 3
BULK = 1000
MISROUTED = 300


def _document(**changes: object) -> bytes:
    document: dict[str, object] = {
        "v": 1,
        "id": str(uuid.uuid4()),
        "version": 0,
        "type": TASK_TYPE,
        "sub_type": None,
        "priority": 5,
    }
    document.update(changes)
    return json.dumps(document).encode()


MALFORMED: list[bytes | None] = [
    os.urandom(64),
    b"\xff\xfe\x00garbage",
    b"",
    None,  # a tombstone
    b"not json",
    b'{"v": 1, "id": ',
    b"null",
    b"[1, 2, 3]",
    b'"a string"',
    _document(v=2),
    _document(v="1"),
    _document(id="not-a-uuid"),
    _document(id=None),
    _document(version="3"),
    _document(version=True),
    _document(type=""),
    _document(type=7),
    _document(priority=None),
    _document(sub_type=[]),
    b"{" * 10_000,
    os.urandom(200_000),
]
"""Each is logged as malformed and skipped."""

HARMLESS: list[bytes] = [
    _document(),  # well-formed, for a task that does not exist
    _document(type="no-such-handler"),  # well-formed, unknown type, no such task
    _document(extra_field="ignored"),
]
"""Well-formed triggers for tasks that do not exist: stale, nothing to grab."""


def poison() -> list[Message]:
    """The poison set on every partition."""
    return [
        Message(value, key=b"poison", partition=p)
        for p in range(PARTITIONS)
        for value in [*MALFORMED, *HARMLESS]
    ]


async def test_poison_messages_are_skipped_and_every_task_runs_once(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    with time_limit(120):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    cluster.start(WORKERS)
                    await cluster.wait_ready()
                    async with client(world) as app:
                        warm = await cluster.warm_up(app, store)
                        await produce(world, poison())
                        first = await add_tasks(app, BULK)
                        await produce(world, poison())
                        second = await add_tasks(app, BULK)
                    total = len(warm) + 2 * BULK
                    status = await store.wait_all_done(total, within=45)
                    await wait_consumed(world, within=30)
                    executions, rows, stopped = await cluster.finish(store)
                finally:
                    await store.close()

    skipped = sum(w.log().count("skipping malformed trigger message") for w in cluster.workers)
    latencies = start_latencies([*first, *second], rows, executions)
    print(
        f"\npoison: {2 * len(MALFORMED) * PARTITIONS} malformed messages, {skipped} skipped "
        f"(logged); tasks after the poison: trigger->start {percentiles(latencies)}; "
        f"graceful stops: { {n: (c, round(t, 2)) for n, (c, t) in stopped.items()} }"
    )
    assert status == {"DONE": total}, (
        f"not all DONE: {dict(status)}\n{unfinished(rows)}\n{cluster.logs()}"
    )
    ran = counts(executions)
    twice = {task_id: n for task_id, n in ran.items() if n > 1}
    assert not twice, f"{len(twice)} task(s) ran more than once: {describe(twice)}"
    assert set(ran) == set(rows) == {*warm, *first, *second}
    problems = run_problems(executions, rows)
    assert not problems, "\n".join(problems[:10])
    # Every malformed message was seen and skipped (a rebalance may show one twice).
    assert skipped >= 2 * len(MALFORMED) * PARTITIONS, cluster.logs()
    # The poison stalled no partition: tasks ran from their triggers, not the fallback, which
    # would wait for the expected queue time and re-submit them (a version beyond 2).
    resubmitted = [t for t in [*first, *second] if rows[t].version > 2]
    assert not resubmitted, (
        f"{len(resubmitted)} task(s) waited {EXPECTED_QUEUE_TIME} s for the resumer: "
        f"{percentiles(latencies)}"
    )
    cluster.assert_stopped_gracefully(stopped)


async def test_a_trigger_whose_type_disagrees_with_the_stored_task_changes_nothing(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Well-formed, right id and version, wrong ``type``: the store is the truth, not the message.

    The trigger must neither route the task to another handler nor put it in ERROR as
    "unhandled": the task runs once, by its own handler, as if the trigger were a plain one.
    """
    with time_limit(90):
        async with scenario(database_url, kafka_bootstrap, tmp_path) as world:
            store = Store(world)
            with Cluster(world) as cluster:
                try:
                    cluster.start(WORKERS)
                    await cluster.wait_ready()
                    async with client(world) as app:
                        warm = await cluster.warm_up(app, store)
                    async with silent_client(world) as quiet:
                        pending = await add_tasks(quiet, MISROUTED)
                    forged = [
                        Message(
                            _document(id=str(task_id), type="no-such-handler"),
                            key=task_id.bytes,
                        )
                        for task_id in pending
                    ]
                    await produce(world, forged)
                    total = len(warm) + MISROUTED
                    status = await store.wait_all_done(total, within=30)
                    executions, rows, stopped = await cluster.finish(store)
                finally:
                    await store.close()

    assert status == {"DONE": total}, (
        f"forged types changed the tasks: {dict(status)}\n{unfinished(rows)}\n{cluster.logs()}"
    )
    ran = counts(executions)
    assert set(ran) == set(rows)
    assert max(ran.values()) == 1
    cluster.assert_stopped_gracefully(stopped)

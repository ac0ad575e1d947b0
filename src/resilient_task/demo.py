"""A payment flow on one node: ``resilient-task demo`` (in-memory, or PostgreSQL with a URL).

On PostgreSQL the demo writes to a schema of its own, :data:`DEMO_SCHEMA` (created if missing),
never to your tasks' tables, and leaves its tasks there for you to look at -- including the two
that end in ERROR on purpose. ``DROP SCHEMA resilient_task_demo CASCADE`` removes them.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

import anyio

from resilient_task.bootstrap import ResilientTask
from resilient_task.domain import (
    AddTaskRequest,
    ExponentialRetryPolicy,
    NoRetryPolicy,
    ProcessResult,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    Task,
    TaskHandler,
    TaskStatus,
)
from resilient_task.properties import TaskProperties, TaskResumerProperties
from resilient_task.settings import PostgresOptions

__all__ = ["DEMO_SCHEMA", "run_demo"]

DEMO_SCHEMA = "resilient_task_demo"
"""The PostgreSQL schema the demo's tables live in."""

attempts: Counter[str] = Counter()


async def capture_payment(task: Task) -> ProcessResult:
    """Always succeeds."""
    attempts[task.type] += 1
    return ProcessResult.DONE


async def notify_bank(task: Task) -> ProcessResult:
    """Fails twice (a flaky partner API), then succeeds."""
    attempts[task.type] += 1
    if attempts[task.type] < 3:
        raise ConnectionError("bank API answered 503")
    return ProcessResult.DONE


async def refund_card(task: Task) -> ProcessResult:
    """Always fails: exhausts its retries and lands in ERROR for an operator."""
    attempts[task.type] += 1
    raise ValueError("card expired")


async def fraud_check(task: Task) -> ProcessResult:
    """Hangs; its processing timeout cancels it."""
    attempts[task.type] += 1
    await anyio.sleep(60)
    return ProcessResult.DONE


def handlers() -> list[TaskHandler]:
    """The demo's handlers, with fast retry settings so the demo ends in seconds."""
    fast = ExponentialRetryPolicy(delay=timedelta(milliseconds=200), multiplier=2, max_count=2)
    shared = SimpleConcurrencyPolicy(4)
    return [
        TaskHandler(
            types={"capture_payment", "send_receipt"},
            processor=capture_payment,
            concurrency_policy=shared,
        ),
        TaskHandler(
            types={"notify_bank"},
            processor=notify_bank,
            retry_policy=fast,
            concurrency_policy=shared,
        ),
        TaskHandler(types={"refund_card"}, processor=refund_card, retry_policy=fast),
        TaskHandler(
            types={"fraud_check"},
            processor=fraud_check,
            retry_policy=NoRetryPolicy(),
            processing_policy=SimpleProcessingPolicy(timeout=timedelta(seconds=1)),
        ),
    ]


async def run_demo(database_url: str | None = None, *, wait_seconds: float = 15.0) -> int:
    """Run the flow and print a summary; returns the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-7s %(name)s: %(message)s")
    props = TaskProperties(
        resumer=TaskResumerProperties(polling_interval=timedelta(milliseconds=200)),
        shutdown_grace=timedelta(seconds=2),
    )
    store = f"PostgreSQL, schema {DEMO_SCHEMA}" if database_url else "in-memory store"
    print(f"resilient-task demo: payment flow on one node ({store})\n")
    async with ResilientTask(
        handlers=handlers(),
        properties=props,
        database_url=database_url,
        postgres=PostgresOptions(migrate=True, schema=DEMO_SCHEMA),
    ) as app:
        add = app.service.add_task
        order = datetime.now(UTC).strftime("%H%M%S%f")
        ids: dict[str, UUID] = {}
        ids["capture_payment (immediate)"] = (
            await add(
                AddTaskRequest(
                    type="capture_payment",
                    data=b'{"order": 1, "amount": "12.50"}',
                    unique_key=f"capture-{order}",
                )
            )
        ).task_id
        duplicate = await add(
            AddTaskRequest(type="capture_payment", data=b"{}", unique_key=f"capture-{order}")
        )
        ids["send_receipt (scheduled +1s)"] = (
            await add(
                AddTaskRequest(
                    type="send_receipt",
                    data=b'{"order": 1}',
                    run_after_time=datetime.now(UTC) + timedelta(seconds=1),
                )
            )
        ).task_id
        ids["notify_bank (flaky)"] = (await add(AddTaskRequest(type="notify_bank"))).task_id
        ids["refund_card (always fails)"] = (await add(AddTaskRequest(type="refund_card"))).task_id
        ids["fraud_check (hangs)"] = (await add(AddTaskRequest(type="fraud_check"))).task_id
        with anyio.move_on_after(wait_seconds):
            while not await _all_settled(app, ids.values()):  # noqa: ASYNC110 - polls the store
                await anyio.sleep(0.1)
        return await _report(
            app, ids, duplicate.result.value, duplicate.task_id, ids["capture_payment (immediate)"]
        )


async def _all_settled(app: ResilientTask, ids: object) -> bool:
    settled = {TaskStatus.DONE, TaskStatus.ERROR, TaskStatus.FAILED, TaskStatus.CANCELLED}
    for task_id in ids:  # type: ignore[attr-defined]
        task = await app.service.get_task(task_id)
        if task is None or task.status not in settled:
            return False
    return True


async def _report(
    app: ResilientTask, ids: dict[str, UUID], dup_result: str, dup_id: UUID, original: UUID
) -> int:
    expected = {
        "capture_payment (immediate)": TaskStatus.DONE,
        "send_receipt (scheduled +1s)": TaskStatus.DONE,
        "notify_bank (flaky)": TaskStatus.DONE,
        "refund_card (always fails)": TaskStatus.ERROR,
        "fraud_check (hangs)": TaskStatus.ERROR,
    }
    ok = dup_result == "ALREADY_EXISTS" and dup_id == original
    print(f"{'task':32} {'status':8} {'runs':>4}  note")
    for label, task_id in ids.items():
        task = await app.service.get_task(task_id)
        status = task.status.value if task else "MISSING"
        runs = task.processing_tries_count if task else 0
        note = (task.last_error or "") if task else ""
        mark = "ok" if task and task.status is expected[label] else "UNEXPECTED"
        ok = ok and mark == "ok"
        print(f"{label:32} {status:8} {runs:>4}  [{mark}] {note}")
    print(
        f"{'duplicate add of capture_payment':32} {dup_result:8} {'':>4}  same task id: "
        f"{dup_id == original}"
    )
    counts = await app.service.count_by_status()
    print("\nstore:", ", ".join(f"{s.value}={n}" for s, n in counts.items() if n))
    if app.in_memory:
        print("(the in-memory store goes with this process)")
    else:
        print(
            f"(the demo's tasks stay in schema {DEMO_SCHEMA}, the two ERROR ones included; "
            f"DROP SCHEMA {DEMO_SCHEMA} CASCADE removes them)"
        )
    print("demo", "succeeded" if ok else "FAILED")
    return 0 if ok else 1

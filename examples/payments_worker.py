"""A payments worker for docs/kafka.md: run several of these against one database and broker.

Each process is one node; Kafka spreads the triggers over them and PostgreSQL keeps the tasks::

    export RESILIENT_TASK_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
    export RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS=localhost:9092
    resilient-task db upgrade                                        # once
    resilient-task worker --app examples.payments_worker:app         # in two or more shells
    python examples/payments_worker.py add 100                       # in another one

Without ``RESILIENT_TASK_DATABASE_URL`` both refuse to start: a worker or producer on the
in-memory store would lose its tasks when it exits (``--in-memory`` lets a worker run so).

Every ``RESILIENT_TASK_*`` variable of :meth:`TaskProperties.from_env` applies (for example
``RESILIENT_TASK_KAFKA_TOPICS_NAMESPACE=payments``, ``RESILIENT_TASK_NODE_ID=worker-a``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta

import anyio

from resilient_task import (
    AddTaskRequest,
    AddTaskResultCode,
    ExponentialRetryPolicy,
    ProcessResult,
    ResilientTask,
    ResilientTaskError,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    Task,
    TaskHandler,
    current_context,
)

__all__ = ["app", "handlers"]

log = logging.getLogger("payments")


async def capture_payment(task: Task) -> ProcessResult:
    """Capture one order's payment (here: log it). Idempotent, as at-least-once requires."""
    order = json.loads(task.data)
    await anyio.sleep(0.01)  # the call to the payment provider
    log.warning(
        "captured order %s (%s %s) on node %s, attempt %d",
        order["order"],
        order["amount"],
        order["currency"],
        current_context().node_id,
        task.processing_tries_count,
    )
    return ProcessResult.DONE


handlers = [
    TaskHandler(
        types={"capture_payment"},
        processor=capture_payment,
        retry_policy=ExponentialRetryPolicy(
            delay=timedelta(seconds=5), multiplier=4, max_count=3, max_delay=timedelta(minutes=20)
        ),
        concurrency_policy=SimpleConcurrencyPolicy(20),
        processing_policy=SimpleProcessingPolicy(timeout=timedelta(seconds=30)),
    )
]

app = ResilientTask.from_env(handlers=handlers)
"""The node ``resilient-task worker --app examples.payments_worker:app`` runs."""


async def add_orders(count: int) -> None:
    """Add ``count`` payment tasks from a node that runs no workers itself."""
    async with ResilientTask.from_env(handlers=handlers, run_workers=False) as client:
        requests = [
            AddTaskRequest(
                type="capture_payment",
                data=json.dumps({"order": n, "amount": "12.50", "currency": "EUR"}).encode(),
                unique_key=f"order-{n}",
            )
            for n in range(count)
        ]
        results = await client.service.add_tasks(requests)
        added = sum(r.result is AddTaskResultCode.OK for r in results)
        print(f"added {added} task(s), {count - added} already existed")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "add" or not sys.argv[2].isdigit():
        sys.exit("usage: python examples/payments_worker.py add COUNT")
    try:
        anyio.run(add_orders, int(sys.argv[2]))
    except ResilientTaskError as exc:
        sys.exit(f"error: {exc}")

"""A producer process: ``python -m bench.producer '<json args>'``.

A ``run_workers=False`` node of the same mode adds the tasks and records, with ``time.time()``:

- ``e2e``: N tasks in ``add_tasks`` batches; the time just before the first add;
- ``latency``: tasks one at a time at a fixed interval; the time just before each
  ``add_task`` call and right after it returned (committed, and the trigger sent);
- ``scheduled``: tasks all due at one instant ``run_after`` (``now + delay``), one batch.

With ``warmup`` it first adds a few tasks of another type and waits until they are DONE, so
connections, the Kafka producer and the worker's consumer-group assignment are in place.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from bench.common import PAYLOAD_BYTES, TASK_TYPE, WARMUP_TYPE, Config, child_main, node, write_json


async def warm_up(app: Any, count: int = 3, limit: float = 90.0) -> float:
    """Add ``count`` warm-up tasks and wait for them to be DONE; returns the seconds it took."""
    from resilient_task import AddTaskRequest, TaskStatus

    started = time.monotonic()
    results = await app.service.add_tasks(
        [AddTaskRequest(type=WARMUP_TYPE, data=PAYLOAD_BYTES) for _ in range(count)]
    )
    with anyio.fail_after(limit):
        for r in results:
            while True:
                task = await app.service.get_task(r.task_id)
                if task is None or task.status is TaskStatus.DONE:  # None: DONE_AND_DELETE
                    break
                await anyio.sleep(0.02)
    return time.monotonic() - started


async def produce(args: dict[str, Any]) -> None:
    from resilient_task import AddTaskRequest

    cfg = Config(**args["cfg"])
    app = node(
        cfg,
        args["mode"],
        schema=args["schema"],
        namespace=args["namespace"],
        group=args["group"],
        run_workers=False,
    )
    result: dict[str, Any] = {}
    async with app:
        if args.get("warmup"):
            result["warmup_s"] = await warm_up(app)
        kind = args["kind"]
        n = int(args["n"])
        if kind == "e2e":
            batch = int(args.get("batch", 1000))
            print("START", flush=True)  # the parent starts its CPU meters
            cpu = time.process_time()
            result["t_first_add"] = time.time()
            for start in range(0, n, batch):
                size = min(batch, n - start)
                await app.service.add_tasks(
                    [AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES) for _ in range(size)]
                )
            result["t_last_add"] = time.time()
            result["cpu_s"] = time.process_time() - cpu
        elif kind == "latency":
            interval = float(args.get("interval", 0.02))
            adds: dict[str, float] = {}
            called_at: dict[str, float] = {}
            calls: list[float] = []
            tick = time.monotonic()
            for _ in range(n):
                called = time.time()
                r = await app.service.add_task(AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES))
                adds[str(r.task_id)] = time.time()
                called_at[str(r.task_id)] = called
                calls.append((adds[str(r.task_id)] - called) * 1000)
                tick += interval
                await anyio.sleep(max(0.0, tick - time.monotonic()))
            result["adds"] = adds
            result["called"] = called_at
            result["add_call_ms"] = calls
        elif kind == "scheduled":
            run_after = datetime.now(UTC) + timedelta(seconds=float(args.get("delay", 3.0)))
            await app.service.add_tasks(
                [
                    AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES, run_after_time=run_after)
                    for _ in range(n)
                ]
            )
            result["run_after"] = run_after.timestamp()
            result["t_added"] = time.time()
        else:
            raise ValueError(f"unknown kind {kind!r}")
    write_json(args["results"], result)


def main() -> None:
    child_main(produce)


if __name__ == "__main__":
    main()

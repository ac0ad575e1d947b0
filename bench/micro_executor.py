"""Executor micro-benchmark: CPU per task of trigger -> grab -> run -> complete, nothing else.

``python -m bench.micro_executor [--n 20000] [--concurrency 10] [--backend asyncio|trio]
[--repeat 3] [--profile FILE] [--metrics]``

One in-memory node (``ResilientTask`` with an ``InMemoryTaskDAO`` and the in-process
triggerer, library defaults otherwise). N SUBMITTED tasks are seeded into the store and their
triggers queued *before* the clock starts, so the timed part is only the executor's work (and
the in-memory adapters it calls): no adds, no database, no broker. The handler is a no-op
returning DONE. Prints the wall time and CPU time per task; ``--profile`` writes cProfile
stats of one run (read them with ``python -m pstats FILE``). ``--metrics`` alternates runs
without and with the Prometheus observer (``PrometheusObserver``) and prints the CPU per task
of each and the difference: the hot-path cost of metrics.
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio


async def _one_run(
    n: int, concurrency: int | None, profiler: cProfile.Profile | None, metrics: bool = False
) -> float:
    from resilient_task import (
        ProcessResult,
        ResilientTask,
        SimpleConcurrencyPolicy,
        Task,
        TaskHandler,
        TaskStatus,
    )
    from resilient_task.adapters.memory import InMemoryTaskDAO
    from resilient_task.ids import uuid7

    done = 0

    async def process(task: Task) -> ProcessResult:
        nonlocal done
        done += 1
        return ProcessResult.DONE

    policy: dict[str, Any] = {}
    if concurrency is not None:
        policy["concurrency_policy"] = SimpleConcurrencyPolicy(concurrency)
    handler = TaskHandler(types={"micro"}, processor=process, **policy)
    now = datetime.now(UTC)
    tasks = [
        Task(
            id=uuid7(),
            type="micro",
            data=b"x" * 100,
            status=TaskStatus.SUBMITTED,
            next_event_time=now + timedelta(minutes=30),
            created_at=now,
            updated_at=now,
        )
        for _ in range(n)
    ]
    dao = InMemoryTaskDAO(tasks=tasks)
    app = ResilientTask(handlers=[handler], dao=dao)
    if metrics:
        from resilient_task.adapters.prometheus import PrometheusObserver

        app.observer = PrometheusObserver(task_types={"micro"})
    async with app:
        # Every trigger queued at once; delivery starts once this task waits below.
        pending = [t.base for t in tasks]
        await app.triggerer.trigger(pending)
        started, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        while app.executor.stats["done"] < n:  # noqa: ASYNC110 - a benchmark may poll
            await anyio.sleep(0.001)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert done == n
        assert all(dao.tasks[t.id].status is TaskStatus.DONE for t in tasks)
    batches = [getattr(app.executor, name).batches for name in ("_grabs", "_completions")]
    print(
        f"  {n} tasks: {wall:.3f} s wall, {n / wall:,.0f} tasks/s, {cpu / n * 1e6:.1f} us CPU/task"
        f" (round trips: {batches[0]} grabs, {batches[1]} completions)"
    )
    return cpu / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.micro_executor")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=None, help="default: the library's")
    p.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", help="write cProfile stats of the last run here")
    p.add_argument("--metrics", action="store_true", help="alternate runs without and with metrics")
    args = p.parse_args()
    if args.metrics:
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for on in (False, True):
                print(f"metrics {'on' if on else 'off'}:")
                us = anyio.run(_one_run, args.n, args.concurrency, None, on, backend=args.backend)
                runs[on].append(us)
        off, on_ = statistics.median(runs[False]), statistics.median(runs[True])
        print(
            f"median {off:.1f} us CPU/task without metrics, {on_:.1f} with "
            f"({100 * (on_ - off) / off:+.1f} %, {args.backend})"
        )
        return
    results = []
    for i in range(args.repeat):
        profiler = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
        results.append(
            anyio.run(_one_run, args.n, args.concurrency, profiler, backend=args.backend)
        )
        if profiler is not None:
            profiler.dump_stats(args.profile)
    print(f"median {statistics.median(results):.1f} us CPU/task ({args.backend})")


if __name__ == "__main__":
    main()

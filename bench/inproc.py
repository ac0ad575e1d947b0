"""Memory mode in one process: ``python -m bench.inproc '<json args>'``.

The in-memory store cannot be shared between processes, so producer and worker are one node
(``ResilientTask()`` with the no-op handler) and compete for one CPU; the producer is an anyio
task adding batches while the executor runs. Kinds: ``e2e``, ``latency``, ``rss``.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import anyio

from bench.common import (
    PAYLOAD_BYTES,
    TASK_TYPE,
    Config,
    child_main,
    monitored,
    node,
    rss_mb,
    write_json,
)
from bench.producer import warm_up
from bench.recorder import Recorder, node_stats


def _requests(size: int, **kw: Any) -> list[Any]:
    from resilient_task import AddTaskRequest

    return [AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES, **kw) for _ in range(size)]


async def _wait_for(predicate: Any, limit: float, step: float = 0.001) -> None:
    """Poll ``predicate`` (a benchmark may poll: it must not add hooks to the code it measures)."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(step)


def _verify(app: Any, n: int) -> dict[str, Any]:
    from resilient_task import TaskStatus

    mine = [t for t in app.dao.tasks.values() if t.type == TASK_TYPE]
    done = [t for t in mine if t.status is TaskStatus.DONE]
    once = sum(1 for t in done if t.processing_tries_count == 1)
    return {
        "rows": len(mine),
        "done": len(done),
        "done_tried_once": once,
        "max_tries": max((t.processing_tries_count for t in mine), default=0),
        "ok": len(mine) == n and len(done) == n and once == n,
    }


def _done(app: Any) -> int:
    from resilient_task import TaskStatus

    return sum(
        1 for t in app.dao.tasks.values() if t.type == TASK_TYPE and t.status is TaskStatus.DONE
    )


async def run(args: dict[str, Any]) -> None:
    cfg = Config(**args["cfg"])
    kind, n, timeout = args["kind"], int(args["n"]), float(args["timeout"])
    recorder = Recorder(
        track_ids=kind != "rss", delete=kind == "rss", concurrency=args.get("concurrency")
    )
    app = node(
        cfg,
        "memory",
        schema=None,
        namespace="",
        group="",
        handlers=[recorder.handler()],
        run_workers=True,
    )
    result: dict[str, Any] = {}
    monitoring = monitored(app, args.get("metrics", False))  # before start: sets the observer
    async with app, monitoring:
        result["warmup_s"] = await warm_up(app)
        if kind == "e2e":
            batch = int(args.get("batch", 1000))
            cpu = time.process_time()
            result["t_first_add"] = time.time()
            for start in range(0, n, batch):
                await app.service.add_tasks(_requests(min(batch, n - start)))
            result["t_last_add"] = time.time()
            await _wait_for(lambda: recorder.count >= n, timeout)
            with anyio.fail_after(30):
                while _done(app) < n:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
            result["t_done"] = time.time()
            result["cpu_s"] = time.process_time() - cpu  # adds and runs: one process
            result["db"] = _verify(app, n)
        elif kind == "latency":
            interval = float(args.get("interval", 0.02))
            adds: dict[str, float] = {}
            called_at: dict[str, float] = {}
            calls: list[float] = []
            tick = time.monotonic()
            for _ in range(n):
                called = time.time()
                r = await app.service.add_task(_requests(1)[0])
                adds[str(r.task_id)] = time.time()
                called_at[str(r.task_id)] = called
                calls.append((adds[str(r.task_id)] - called) * 1000)
                tick += interval
                await anyio.sleep(max(0.0, tick - time.monotonic()))
            await _wait_for(lambda: recorder.count >= n, timeout, step=0.01)
            await anyio.sleep(0.2)  # let the last completions land before verifying
            result["adds"] = adds
            result["called"] = called_at
            result["add_call_ms"] = calls
            result["db"] = _verify(app, n)
        elif kind == "rss":
            result.update(await _rss(app, recorder, args))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        out = recorder.summary(with_starts=kind == "latency")
        out["stats"] = node_stats(app)
        result["worker"] = out
    write_json(args["results"], result)


async def _rss(app: Any, recorder: Recorder, args: dict[str, Any]) -> dict[str, Any]:
    """Add N tasks in batches, at most ``lead`` ahead of execution; sample VmRSS meanwhile."""
    n, batch, warm = int(args["n"]), int(args.get("batch", 1000)), int(args.get("warm", 10_000))
    lead = int(args.get("lead", 5000))
    timeout = float(args["timeout"])
    gc.collect()
    out: dict[str, Any] = {"rss_start_mb": rss_mb(), "samples": []}
    peak = out["rss_start_mb"]
    started = time.monotonic()

    async def sample() -> None:
        nonlocal peak
        while True:
            value = rss_mb()
            peak = max(peak, value)
            out["samples"].append((round(time.monotonic() - started, 2), recorder.count, value))
            await anyio.sleep(0.25)

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            added = 0
            while added < n:
                while added - recorder.count > lead:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
                if "rss_warm_mb" not in out and recorder.count >= warm:
                    gc.collect()
                    out["rss_warm_mb"] = rss_mb()
                size = min(batch, n - added)
                await app.service.add_tasks(_requests(size))
                added += size
            while recorder.count < n:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await anyio.sleep(0.5)  # completions of the last tasks
            gc.collect()
            out["rss_end_mb"] = rss_mb()
            out["rss_peak_mb"] = max(peak, out["rss_end_mb"])
            tg.cancel_scope.cancel()
    out.setdefault("rss_warm_mb", out["rss_start_mb"])
    out["growth_mb"] = round(out["rss_end_mb"] - out["rss_warm_mb"], 1)
    out["seconds"] = round(time.monotonic() - started, 1)
    out["store_tasks_left"] = len(app.dao.tasks)
    out["triggerer_sent_history"] = len(getattr(app.triggerer, "_sent", ()))
    return out


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()

"""cProfile of the add path: ``python -m bench.profile_add MODE single|bulk N [TOP] [cpu]``.

A ``run_workers=False`` node of MODE (``postgres``, ``postgres_notify``, ``postgres_kafka``)
adds N tasks one at a time (``single``) or in batches of 1000 (``bulk``) in a scratch
schema, under cProfile, and prints the top functions by cumulative time per task (and their
own time), in µs. The profiler inflates every figure; compare runs of the same command. By
default the times are wall-clock (a process preempted inside a system call shows it as that
call's own time); with ``cpu`` they are the process's CPU time (``time.process_time``).
Run it with ``PYTHONPATH=<other tree>/src`` for a before/after of the same script.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

import anyio

from bench.common import PAYLOAD_BYTES, Config, create_schema, drop_schema, node

_HIDDEN = ("base_events", "events.py", "runners.py", "_contextvars", "anyio/_backends",
           "profile_add.py", "builtins.next", "greenlet")  # fmt: skip


async def _run(mode: str, kind: str, n: int, top: int, cpu: bool) -> None:
    from resilient_task import AddTaskRequest

    cfg = Config()
    schema = f"bench_{cfg.run_id}_profile"
    await create_schema(cfg, schema)
    try:
        names = {"schema": schema, "namespace": f"bench{cfg.run_id}.profile", "group": "p"}
        async with node(cfg, mode, run_workers=False, **names) as app:
            add = app.service
            warm = [AddTaskRequest(type="bench_warmup", data=PAYLOAD_BYTES) for _ in range(1000)]
            await add.add_tasks(warm)
            for _ in range(100):
                await add.add_task(AddTaskRequest(type="bench_warmup", data=PAYLOAD_BYTES))
            profile = cProfile.Profile(time.process_time) if cpu else cProfile.Profile()
            profile.enable()
            if kind == "single":
                for _ in range(n):
                    await add.add_task(AddTaskRequest(type="bench", data=PAYLOAD_BYTES))
            else:
                for _ in range(n // 1000):
                    batch = [AddTaskRequest(type="bench", data=PAYLOAD_BYTES) for _ in range(1000)]
                    await add.add_tasks(batch)
            profile.disable()
    finally:
        drop_schema(cfg, schema)
    rows = []
    for (path, line, name), (_, _, own, cumulative, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        short = path.split("site-packages/")[-1].split("/src/")[-1]
        rows.append((cumulative, own, f"{short.rsplit('/lib/python3', 1)[-1]}:{line}({name})"))
    rows.sort(reverse=True)
    clock = "CPU" if cpu else "wall-clock"
    print(f"# {mode} {kind}, {n} tasks: cumulative / own {clock} µs per task, under cProfile")
    shown = [r for r in rows if not any(h in r[2] for h in _HIDDEN)][:top]
    for cumulative, own, label in shown:
        print(f"{cumulative / n * 1e6:9.1f} {own / n * 1e6:8.1f}  {label}")


def main() -> None:
    mode, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    anyio.run(_run, mode, kind, n, top, sys.argv[5:6] == ["cpu"])


if __name__ == "__main__":
    main()

"""The no-op handler: counts executions (per task id when asked) and records start times."""

from __future__ import annotations

import time
from typing import Any

from bench.common import TASK_TYPE, WARMUP_TYPE


class Recorder:
    """``process`` is the processor; ``track_ids`` keeps per-id counts and first start times."""

    def __init__(
        self, *, track_ids: bool, delete: bool = False, concurrency: int | None = None
    ) -> None:
        from resilient_task import ProcessResult

        self.track_ids = track_ids
        self.concurrency = concurrency  # None: the default SimpleConcurrencyPolicy
        self.count = 0
        self.warmups = 0
        self.counts: dict[Any, int] = {}
        self.starts: dict[Any, float] = {}
        self.first_start: float | None = None  # time.time() of the first bench handler call
        self.first_cpu: float | None = None  # this process's CPU seconds at that call
        self._result = ProcessResult.DONE_AND_DELETE if delete else ProcessResult.DONE

    async def process(self, task: Any) -> Any:
        started = time.time()
        if task.type == TASK_TYPE:
            if not self.count:
                self.first_start, self.first_cpu = started, time.process_time()
            self.count += 1
            if self.track_ids:
                seen = self.counts.get(task.id, 0)
                self.counts[task.id] = seen + 1
                if not seen:
                    self.starts[task.id] = started
        else:
            self.warmups += 1
        return self._result

    def handler(self) -> Any:
        from resilient_task import SimpleConcurrencyPolicy, TaskHandler

        if self.concurrency is None:
            return TaskHandler(types={TASK_TYPE, WARMUP_TYPE}, processor=self.process, name="bench")
        return TaskHandler(
            types={TASK_TYPE, WARMUP_TYPE},
            processor=self.process,
            name="bench",
            concurrency_policy=SimpleConcurrencyPolicy(self.concurrency),
        )

    def summary(self, *, with_starts: bool) -> dict[str, Any]:
        duplicates = {str(k): v for k, v in self.counts.items() if v > 1}
        out: dict[str, Any] = {
            "executions": self.count,
            "distinct": len(self.counts) if self.track_ids else None,
            "duplicate_executions": sum(v - 1 for v in duplicates.values()),
            "duplicate_ids": list(duplicates)[:20],
            "warmups": self.warmups,
            "first_start": self.first_start,
            "first_cpu": self.first_cpu,
        }
        if with_starts:
            out["starts"] = {str(k): v for k, v in self.starts.items()}
        return out


def node_stats(app: Any) -> dict[str, Any]:
    """Executor and resumer counters, and the group-commit batch counts (for the report)."""
    stats: dict[str, Any] = {}
    executor = getattr(app, "executor", None)
    if executor is not None:
        stats["executor"] = dict(executor.stats)
        for name in ("_grabs", "_completions"):
            batcher = getattr(executor, name, None)
            if batcher is not None and hasattr(batcher, "batches"):
                stats[name.strip("_") + "_round_trips"] = batcher.batches
    resumer = getattr(app, "resumer", None)
    if resumer is not None:
        stats["resumer"] = dict(resumer.stats)
    return stats

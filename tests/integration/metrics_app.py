"""The node the metrics tests run as a worker process (``--app ...metrics_app:app``).

Configured from the environment: ``RESILIENT_TASK_*`` (database URL, ``NOTIFY=1``) and
``RT_METRICS_SCHEMA`` (the test's schema). Three handlers, one per outcome the test counts:

- ``metrics-ok``: DONE at once;
- ``metrics-retry``: fails its first attempt, then DONE (one retry each);
- ``metrics-error``: always fails, no retry (ERROR).
"""

from __future__ import annotations

import os
from datetime import timedelta

from resilient_task import (
    ExponentialRetryPolicy,
    NoRetryPolicy,
    PostgresOptions,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
)

__all__ = ["ERROR", "OK", "RETRY", "app"]

OK, RETRY, ERROR = "metrics-ok", "metrics-retry", "metrics-error"


async def _done(task: Task) -> ProcessResult:
    return ProcessResult.DONE


async def _fail_once(task: Task) -> ProcessResult:
    if task.processing_tries_count <= 1:
        raise RuntimeError("first attempt fails on purpose")
    return ProcessResult.DONE


async def _fail(task: Task) -> ProcessResult:
    raise RuntimeError("always fails on purpose")


def app() -> ResilientTask:
    """A PostgreSQL + NOTIFY node configured from the environment."""
    quick = ExponentialRetryPolicy(delay=timedelta(milliseconds=100), max_count=3)
    return ResilientTask.from_env(
        handlers=[
            TaskHandler(types={OK}, processor=_done),
            TaskHandler(types={RETRY}, processor=_fail_once, retry_policy=quick),
            TaskHandler(types={ERROR}, processor=_fail, retry_policy=NoRetryPolicy()),
        ],
        postgres=PostgresOptions(schema=os.environ["RT_METRICS_SCHEMA"]),
    )

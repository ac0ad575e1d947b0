"""The worker app of the multi-process cron test: one job every second, each run recorded.

``resilient-task worker --app tests.integration.cron_app:app`` (a zero-argument factory).
Configured like the fault tests' workers (``tests/integration/faults/harness.py`` sets the
environment): ``RESILIENT_TASK_*`` for the node, ``RT_FAULTS_SCHEMA`` for its schema and
``RT_FAULTS_EXEC_LOG`` for the file each run appends ``<tick> <node id> <started>`` to, with
one ``os.write`` on an ``O_APPEND`` descriptor (whole lines, whichever process writes).

The node adds the job's task when it starts (``ResilientTask(cron_jobs=...)``).
"""

from __future__ import annotations

import os
import time

from resilient_task import PostgresOptions, ResilientTask, TaskProperties
from resilient_task.domain.cron import CronJob, CronRun

__all__ = ["EVERY_SECOND", "app", "parse_run"]

EVERY_SECOND = "* * * * * *"


class _Recorder:
    def __init__(self, path: str, node_id: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._node_id = node_id

    async def __call__(self, run: CronRun) -> None:
        line = f"{run.tick.isoformat()} {self._node_id} {time.time():.6f}\n"
        os.write(self._fd, line.encode())


def parse_run(line: str) -> tuple[str, str, float]:
    """``(tick, node id, started)`` of one record line."""
    tick, node_id, started = line.split()
    return tick, node_id, float(started)


def app() -> ResilientTask:
    """A PostgreSQL node (Kafka when configured) running the job ``every-second``."""
    env = os.environ
    properties = TaskProperties.from_env(env)
    job = CronJob(
        name="every-second",
        schedule=EVERY_SECOND,
        processor=_Recorder(env["RT_FAULTS_EXEC_LOG"], properties.node_id),
        timezone="Europe/London",
    )
    return ResilientTask.from_env(
        cron_jobs=[job],
        environ=env,
        properties=properties,
        postgres=PostgresOptions(schema=env["RT_FAULTS_SCHEMA"]),
    )

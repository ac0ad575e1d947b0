"""The worker app the fault tests run in separate processes.

``resilient-task worker --app tests.integration.faults.worker_app:app`` (``app`` is a
zero-argument factory, so importing this module has no side effects). Configuration comes from
the environment:

- ``RESILIENT_TASK_*``: the node (see :meth:`TaskProperties.from_env`), database URL and Kafka;
- ``RT_FAULTS_SCHEMA``: PostgreSQL schema of the test's tables;
- ``RT_FAULTS_EXEC_LOG``: file the handler appends one line per execution to;
- ``RT_FAULTS_SLEEP_MS``: how long the handler works (default 5 ms);
- ``RT_FAULTS_TIMEOUT_S``: the handler's processing timeout (default 2 s);
- ``RT_FAULTS_CONCURRENCY``: tasks at once per worker (default 20);
- ``RT_FAULTS_KAFKA_SESSION_TIMEOUT_MS``: consumer session timeout (default 4000), so the
  group notices a killed worker within seconds;
- ``RT_FAULTS_DEBUG_LOGGERS``: comma-separated loggers to log at DEBUG (diagnosis only).

The execution record is ``<task id> <node id> <started> <finished>\\n`` (Unix seconds), written
with one ``os.write`` on an ``O_APPEND`` descriptor just before the handler returns DONE: the
line is in the file (the kernel's page cache) as soon as the call returns, so a ``kill -9``
right after loses nothing the handler did.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import timedelta

import anyio

from resilient_task import (
    ExponentialRetryPolicy,
    PostgresOptions,
    ProcessResult,
    ResilientTask,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    Task,
    TaskHandler,
    TaskProperties,
)

__all__ = ["TASK_TYPE", "Recorder", "app", "parse_record"]

TASK_TYPE = "fault-test"


class Recorder:
    """A processor that sleeps, then appends ``<task id> <node> <started> <finished>``."""

    def __init__(self, path: str, node_id: str, sleep_s: float) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._node_id = node_id
        self._sleep_s = sleep_s

    async def process(self, task: Task) -> ProcessResult:
        started = time.time()
        await anyio.sleep(self._sleep_s)
        line = f"{task.id} {self._node_id} {started:.6f} {time.time():.6f}\n"
        os.write(self._fd, line.encode())
        return ProcessResult.DONE


def parse_record(line: str) -> tuple[str, str, float, float]:
    """``(task id, node id, started, finished)`` of one execution record line."""
    task_id, node_id, started, finished = line.split()
    return task_id, node_id, float(started), float(finished)


def app() -> ResilientTask:
    """A PostgreSQL + Kafka node configured from the environment (see the module docstring)."""
    env = os.environ
    for name in filter(None, env.get("RT_FAULTS_DEBUG_LOGGERS", "").split(",")):
        logging.getLogger(name.strip()).setLevel(logging.DEBUG)
    properties = TaskProperties.from_env(env)
    session_ms = int(env.get("RT_FAULTS_KAFKA_SESSION_TIMEOUT_MS", "4000"))
    kafka = dataclasses.replace(
        properties.kafka,
        extra={
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": max(100, session_ms // 4),
        },
    )
    properties = dataclasses.replace(properties, kafka=kafka)
    recorder = Recorder(
        env["RT_FAULTS_EXEC_LOG"],
        properties.node_id,
        float(env.get("RT_FAULTS_SLEEP_MS", "5")) / 1000,
    )
    handler = TaskHandler(
        types={TASK_TYPE},
        processor=recorder.process,
        retry_policy=ExponentialRetryPolicy(
            delay=timedelta(milliseconds=200),
            multiplier=2,
            max_count=5,
            max_delay=timedelta(seconds=2),
        ),
        concurrency_policy=SimpleConcurrencyPolicy(int(env.get("RT_FAULTS_CONCURRENCY", "20"))),
        processing_policy=SimpleProcessingPolicy(
            timeout=timedelta(seconds=float(env.get("RT_FAULTS_TIMEOUT_S", "2"))),
            max_recoveries=5,
        ),
    )
    return ResilientTask.from_env(
        handlers=[handler],
        environ=env,
        properties=properties,
        postgres=PostgresOptions(schema=env["RT_FAULTS_SCHEMA"]),
    )

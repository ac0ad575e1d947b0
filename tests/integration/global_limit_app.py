"""The worker app of the multi-process global-limit test: every task holds the key ``bank-api``.

``resilient-task worker --app tests.integration.global_limit_app:app``, configured like the
fault tests' workers (``tests/integration/faults/harness.py`` sets the environment). Each run
sleeps ``RT_GLOBAL_SLEEP_MS`` and appends ``<task id> <node id> <started> <finished>`` to
``RT_FAULTS_EXEC_LOG`` with one ``os.write`` on an ``O_APPEND`` descriptor.
"""

from __future__ import annotations

import os
from datetime import timedelta

from resilient_task import (
    PostgresOptions,
    ResilientTask,
    TaskHandler,
    TaskProperties,
)
from resilient_task.domain.policies import GlobalConcurrencyPolicy, SimpleProcessingPolicy
from tests.integration.faults.worker_app import TASK_TYPE, Recorder

__all__ = ["KEY", "app"]

KEY = "bank-api"


def app() -> ResilientTask:
    """A PostgreSQL + Kafka node whose one handler is limited to ``RT_GLOBAL_LIMIT`` at once."""
    env = os.environ
    properties = TaskProperties.from_env(env)
    recorder = Recorder(
        env["RT_FAULTS_EXEC_LOG"],
        properties.node_id,
        float(env.get("RT_GLOBAL_SLEEP_MS", "200")) / 1000,
    )
    handler = TaskHandler(
        types={TASK_TYPE},
        processor=recorder.process,
        concurrency_policy=GlobalConcurrencyPolicy(key=KEY, limit=int(env["RT_GLOBAL_LIMIT"])),
        processing_policy=SimpleProcessingPolicy(timeout=timedelta(seconds=10)),
    )
    return ResilientTask.from_env(
        handlers=[handler],
        environ=env,
        properties=properties,
        postgres=PostgresOptions(schema=env["RT_FAULTS_SCHEMA"]),
    )

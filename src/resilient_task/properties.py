"""Configuration: the reference's knobs, with its defaults where they make sense."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.domain.requests import MAX_DURATION
from resilient_task.errors import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "CleanerProperties",
    "TaskProperties",
    "TaskResumerProperties",
    "default_node_id",
]

ENV_PREFIX = "RESILIENT_TASK_"


def default_node_id() -> str:
    """``host-pid-random``: unique per process, readable in ``processing_node``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class TaskResumerProperties:
    """The resumer: polls due WAITING tasks and tasks stuck in SUBMITTED or PROCESSING.

    Args:
        batch_size: most tasks claimed per poll and status.
        polling_interval: time between polls; also the latency of scheduled tasks and of the
            database-only fallback when the broker is down.
        concurrency: how many batches are handled at once.
    """

    batch_size: int = 1000
    polling_interval: timedelta = timedelta(seconds=2)
    concurrency: int = 1

    def __post_init__(self) -> None:
        _positive_int("resumer.batch_size", self.batch_size)
        _positive_int("resumer.concurrency", self.concurrency)
        _positive_delta("resumer.polling_interval", self.polling_interval)


@dataclass(frozen=True, slots=True)
class CleanerProperties:
    """Deleting finished tasks.

    Args:
        enabled: run the cleaner on this node.
        retention: how long DONE, FAILED and CANCELLED tasks are kept (ERROR ones always are).
        interval: time between clean-ups.
        batch_size: most rows deleted per statement.
    """

    enabled: bool = True
    retention: timedelta = timedelta(days=7)
    interval: timedelta = timedelta(minutes=1)
    batch_size: int = 1000

    def __post_init__(self) -> None:
        _positive_delta("cleaner.retention", self.retention)
        _positive_delta("cleaner.interval", self.interval)
        _positive_int("cleaner.batch_size", self.batch_size)


@dataclass(frozen=True, slots=True)
class TaskProperties:
    """Node-wide settings.

    Args:
        task_stuck_timeout: processing timeout for handlers whose policy sets none.
        processing_grace: added to a task's timeout to form its PROCESSING deadline, after
            which another node may recover it. Covers clock skew and finishing writes.
        expected_queue_time: default time a SUBMITTED task may wait before re-triggering.
        shutdown_grace: how long a stopping node lets running tasks finish.
        max_triggers_in_memory: most triggers accepted but not yet finished on this node.
        node_id: this node's name in ``processing_node`` and logs.
        max_payload_bytes: the largest task ``data`` the task service accepts (default 1 MiB;
            a payload is held several times over in memory while it is added and executed).
    """

    task_stuck_timeout: timedelta = timedelta(minutes=5)
    processing_grace: timedelta = timedelta(seconds=10)
    expected_queue_time: timedelta = timedelta(minutes=1)
    shutdown_grace: timedelta = timedelta(seconds=30)
    max_triggers_in_memory: int = 1000
    node_id: str = field(default_factory=default_node_id)
    resumer: TaskResumerProperties = field(default_factory=TaskResumerProperties)
    kafka: KafkaProperties = field(default_factory=KafkaProperties)
    cleaner: CleanerProperties = field(default_factory=CleanerProperties)
    max_payload_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        _positive_int("max_payload_bytes", self.max_payload_bytes)
        _positive_delta("task_stuck_timeout", self.task_stuck_timeout)
        _positive_delta("expected_queue_time", self.expected_queue_time)
        for name in ("processing_grace", "shutdown_grace"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or not timedelta(0) <= value <= MAX_DURATION:
                raise ConfigurationError(
                    f"{name} must be a non-negative timedelta of at most {MAX_DURATION}, "
                    f"got {value!r}"
                )
        _positive_int("max_triggers_in_memory", self.max_triggers_in_memory)
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ConfigurationError(f"node_id must be a non-empty str, got {self.node_id!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskProperties:
        """Read settings from ``RESILIENT_TASK_*`` variables; unset ones keep their defaults.

        Durations are in seconds. The variables are listed, with what each sets, in
        :data:`resilient_task.environment.VARIABLES` and in the README's configuration table.

        Raises:
            ConfigurationError: a variable holds a value it does not accept (the message
                names the variable).
        """
        from resilient_task.environment import task_properties_from_env

        return task_properties_from_env(os.environ if environ is None else environ)


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


def _positive_delta(name: str, value: timedelta) -> None:
    # Bounded above too: a deadline of now + timedelta.max overflows where it is computed,
    # deep in the executor or resumer, long after start.
    if not isinstance(value, timedelta) or not timedelta(0) < value <= MAX_DURATION:
        raise ConfigurationError(
            f"{name} must be a positive timedelta of at most {MAX_DURATION}, got {value!r}"
        )

"""KafkaProperties: where the Kafka triggers go (no aiokafka import: settings only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resilient_task.errors import ConfigurationError

__all__ = ["KafkaProperties"]


@dataclass(frozen=True, slots=True)
class KafkaProperties:
    """Kafka triggering. Topic ``<namespace>.resilient-task.triggers`` (no dot when empty).

    Args:
        bootstrap_servers: comma-separated ``host:port`` list.
        topics_namespace: prefix for topic names, e.g. the service or environment name.
        consumer_group_id: one group across the nodes that share the work.
        partitions: partition count for topics this library creates.
        replication_factor: replication factor for topics this library creates.
        client_id: client id reported to the broker.
        extra: passed through to aiokafka's producer, consumer and admin client
            (``security_protocol``, ``sasl_mechanism``, ``ssl_context`` ...). From the
            environment: ``RESILIENT_TASK_KAFKA_EXTRA``, a JSON object (see
            :func:`resilient_task.environment.kafka_extra_from_env`).
    """

    bootstrap_servers: str = "localhost:9092"
    topics_namespace: str = ""
    consumer_group_id: str = "default-consumer-group"
    partitions: int = 6
    replication_factor: int = 1
    client_id: str = "resilient-task"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("bootstrap_servers", "consumer_group_id", "client_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"kafka.{name} must be a non-empty str, got {value!r}")
        if not isinstance(self.topics_namespace, str):
            raise ConfigurationError("kafka.topics_namespace must be a str")
        for name in ("partitions", "replication_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"kafka.{name} must be a positive int, got {value!r}")

    @property
    def triggers_topic(self) -> str:
        """The topic triggers go to."""
        base = "resilient-task.triggers"
        return f"{self.topics_namespace}.{base}" if self.topics_namespace else base

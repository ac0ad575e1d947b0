"""Configuration values: the reference's defaults, and impossible settings refused early."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import pytest

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.errors import ConfigurationError
from resilient_task.properties import (
    TaskProperties,
    TaskResumerProperties,
    default_node_id,
)

SECOND = timedelta(seconds=1)


def test_triggers_go_to_one_topic_without_a_namespace() -> None:
    assert KafkaProperties().triggers_topic == "resilient-task.triggers"


def test_a_namespace_prefixes_the_triggers_topic() -> None:
    kafka = KafkaProperties(topics_namespace="orders-prod")
    assert kafka.triggers_topic == "orders-prod.resilient-task.triggers"


def test_kafka_defaults_suit_a_local_broker() -> None:
    kafka = KafkaProperties()
    assert kafka.bootstrap_servers == "localhost:9092"
    assert (kafka.partitions, kafka.replication_factor) == (6, 1)
    assert kafka.extra == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bootstrap_servers": ""}, "bootstrap_servers must be a non-empty str"),
        ({"bootstrap_servers": "  "}, "bootstrap_servers must be a non-empty str"),
        ({"consumer_group_id": ""}, "consumer_group_id must be a non-empty str"),
        ({"partitions": 0}, "kafka.partitions must be a positive int"),
        ({"partitions": True}, "kafka.partitions must be a positive int"),
        ({"replication_factor": 0}, "kafka.replication_factor must be a positive int"),
        ({"replication_factor": 1.0}, "kafka.replication_factor must be a positive int"),
    ],
)
def test_kafka_properties_reject_impossible_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KafkaProperties(**kwargs)


def test_kafka_properties_reject_missing_bootstrap_servers() -> None:
    with pytest.raises(ConfigurationError):
        KafkaProperties(bootstrap_servers=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "resumer.batch_size must be a positive int"),
        ({"concurrency": -1}, "resumer.concurrency must be a positive int"),
        ({"polling_interval": timedelta(0)}, "resumer.polling_interval must be a positive"),
        ({"polling_interval": 2}, "resumer.polling_interval must be a positive timedelta"),
    ],
)
def test_resumer_properties_reject_impossible_settings(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TaskResumerProperties(**kwargs)


def test_task_properties_have_the_reference_defaults() -> None:
    properties = TaskProperties()
    assert properties.task_stuck_timeout == timedelta(minutes=5)
    assert properties.expected_queue_time == timedelta(minutes=1)
    assert properties.max_triggers_in_memory == 1000
    assert properties.resumer.polling_interval == 2 * SECOND
    assert properties.kafka == KafkaProperties()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_stuck_timeout": timedelta(0)}, "task_stuck_timeout must be a positive"),
        ({"expected_queue_time": -SECOND}, "expected_queue_time must be a positive"),
        ({"processing_grace": -SECOND}, "must be a non-negative timedelta"),
        ({"shutdown_grace": -SECOND}, "must be a non-negative timedelta"),
        ({"max_triggers_in_memory": 0}, "max_triggers_in_memory must be a positive int"),
        ({"node_id": ""}, "node_id must be a non-empty str"),
    ],
)
def test_task_properties_reject_impossible_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TaskProperties(**kwargs)


def test_zero_graces_are_allowed() -> None:
    properties = TaskProperties(processing_grace=timedelta(0), shutdown_grace=timedelta(0))
    assert properties.processing_grace == properties.shutdown_grace == timedelta(0)


def test_a_grace_that_is_not_a_timedelta_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        TaskProperties(processing_grace=10)  # type: ignore[arg-type]


def test_default_node_ids_name_the_host_and_process_and_differ() -> None:
    first, second = default_node_id(), default_node_id()
    assert first.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    assert first != second


def test_every_node_gets_its_own_default_node_id() -> None:
    assert TaskProperties().node_id != TaskProperties().node_id

"""Make sure the triggers topic exists, with the configured partitions and replication.

Creation is tried first (not a metadata look-up, which some brokers answer by auto-creating the
topic with their default partition count). "Already exists" is fine; an existing topic with a
different partition count is logged, never altered. Without the right to create topics, an
existing topic is accepted and a missing one is a :class:`ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from resilient_task.adapters.kafka.clients import DRIVER_ERRORS, client_options, is_transient
from resilient_task.errors import BackendError, ConfigurationError
from resilient_task.properties import KafkaProperties

__all__ = ["ensure_topic"]

logger = logging.getLogger(__name__)

_NOT_ALLOWED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
_BAD_SETTINGS = (InvalidPartitionsError, InvalidReplicationFactorError, InvalidTopicError)


async def ensure_topic(properties: KafkaProperties, *, time_limit: float = 10.0) -> None:
    """Create ``properties.triggers_topic`` unless it exists.

    Raises:
        ConfigurationError: the settings are impossible (bad name, partitions, replication
            factor) or the topic is missing and this client may not create it.
        BackendError: the broker failed or could not be reached in ``time_limit`` seconds
            (``transient`` says whether retrying may help).
    """
    topic = properties.triggers_topic
    admin = AIOKafkaAdminClient(
        **client_options(properties, AIOKafkaAdminClient, request_timeout_ms=int(time_limit * 1000))
    )
    try:
        async with asyncio.timeout(time_limit):
            await admin.start()
            await _create(admin, properties)
    except (ConfigurationError, BackendError):
        raise
    except DRIVER_ERRORS as exc:
        raise BackendError(
            f"could not ensure Kafka topic {topic!r}: {exc!r}", transient=is_transient(exc)
        ) from exc
    finally:
        await admin.close()


async def _create(admin: Any, properties: KafkaProperties) -> None:
    topic = properties.triggers_topic
    request = NewTopic(topic, properties.partitions, properties.replication_factor)
    response = await admin.create_topics([request])
    _, code, message = response.topic_errors[0][:3] if response.topic_errors else (topic, 0, None)
    if code == 0:
        logger.info("created Kafka topic %s with %d partitions", topic, properties.partitions)
        return
    error = for_code(code)
    if error is TopicAlreadyExistsError:
        await _check_partitions(admin, properties)
    elif issubclass(error, _NOT_ALLOWED):
        if topic not in await admin.list_topics():
            raise ConfigurationError(
                f"Kafka topic {topic!r} does not exist and this client may not create it "
                f"({error.__name__}: {message}); create it or grant CreateTopics"
            )
    elif issubclass(error, _BAD_SETTINGS):
        raise ConfigurationError(
            f"cannot create Kafka topic {topic!r} with {properties.partitions} partitions and "
            f"replication factor {properties.replication_factor}: {error.__name__}: {message}"
        )
    else:
        raise BackendError(
            f"could not create Kafka topic {topic!r}: {error.__name__}: {message}",
            transient=bool(error.retriable),
        )


async def _check_partitions(admin: Any, properties: KafkaProperties) -> None:
    topic = properties.triggers_topic
    for description in await admin.describe_topics([topic]):
        count = len(description.get("partitions", ()))
        if description.get("topic") == topic and count != properties.partitions:
            logger.warning(
                "Kafka topic %s has %d partitions, not the configured %d; left as it is",
                topic,
                count,
                properties.partitions,
            )

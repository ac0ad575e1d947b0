"""Make sure the triggers topic exists, with the configured partitions and replication.

Creation is tried first (not a metadata look-up, which some brokers answer by auto-creating the
topic with their default partition count). "Already exists" is fine; an existing topic with a
different partition count is logged, never altered -- except when it has *fewer* partitions
than this process saw before: Kafka never removes partitions, so the topic was lost and
re-created (a broker back without its data, whose topic auto-creation answered a client's
metadata request with its default count); the partitions are then added back. Without the right
to create topics, an existing topic is accepted and a missing one is a
:class:`ConfigurationError`.

:class:`TopicKeeper` does this once per client and again, in the background and at most once
per ``min_interval``, whenever a client reports signs of a lost topic (failed sends or
commits, partitions missing from its metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
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
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.errors import BackendError, ConfigurationError

__all__ = ["TopicKeeper", "ensure_topic"]

logger = logging.getLogger(__name__)

_NOT_ALLOWED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
_BAD_SETTINGS = (InvalidPartitionsError, InvalidReplicationFactorError, InvalidTopicError)


async def ensure_topic(
    properties: KafkaProperties, *, time_limit: float = 10.0, restore_partitions: int = 0
) -> tuple[int, bool]:
    """Create ``properties.triggers_topic`` unless it exists.

    Args:
        properties: the topic's name, partitions and replication factor, and the client options.
        time_limit: seconds for the whole call.
        restore_partitions: the partition count this process saw before; an existing topic
            with fewer partitions was lost and re-created, and gets them back.

    Returns:
        The topic's partition count now, and whether this call created the topic or added
        partitions to it.

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
            return await _create(admin, properties, restore_partitions)
    except (ConfigurationError, BackendError):
        raise
    except DRIVER_ERRORS as exc:
        raise BackendError(
            f"could not ensure Kafka topic {topic!r}: {exc!r}", transient=is_transient(exc)
        ) from exc
    finally:
        await admin.close()


async def _create(
    admin: Any, properties: KafkaProperties, restore_partitions: int
) -> tuple[int, bool]:
    topic = properties.triggers_topic
    request = NewTopic(topic, properties.partitions, properties.replication_factor)
    response = await admin.create_topics([request])
    _, code, message = response.topic_errors[0][:3] if response.topic_errors else (topic, 0, None)
    if code == 0:
        logger.info("created Kafka topic %s with %d partitions", topic, properties.partitions)
        return properties.partitions, True
    error = for_code(code)
    if error is TopicAlreadyExistsError:
        return await _check_partitions(admin, properties, restore_partitions)
    if issubclass(error, _NOT_ALLOWED):
        if topic not in await admin.list_topics():
            raise ConfigurationError(
                f"Kafka topic {topic!r} does not exist and this client may not create it "
                f"({error.__name__}: {message}); create it or grant CreateTopics"
            )
        return await _check_partitions(admin, properties, 0)
    if issubclass(error, _BAD_SETTINGS):
        raise ConfigurationError(
            f"cannot create Kafka topic {topic!r} with {properties.partitions} partitions and "
            f"replication factor {properties.replication_factor}: {error.__name__}: {message}"
        )
    raise BackendError(
        f"could not create Kafka topic {topic!r}: {error.__name__}: {message}",
        transient=bool(error.retriable),
    )


async def _check_partitions(
    admin: Any, properties: KafkaProperties, restore_partitions: int
) -> tuple[int, bool]:
    topic = properties.triggers_topic
    count = await _partition_count(admin, topic, properties.partitions)
    if count == 0:  # just (auto-)created: its partitions are not in the metadata yet
        raise BackendError(f"Kafka topic {topic!r} has no partitions yet", transient=True)
    if count < restore_partitions:
        logger.warning(
            "Kafka topic %s has %d partitions, fewer than the %d it had: it was lost and "
            "re-created (by topic auto-creation?); adding the missing partitions",
            topic,
            count,
            restore_partitions,
        )
        try:
            await admin.create_partitions({topic: NewPartitions(restore_partitions)})
        except DRIVER_ERRORS as exc:
            if is_transient(exc):
                raise  # tried again at the next check
            now = await _partition_count(admin, topic, count)
            if now >= restore_partitions:  # another node added them meanwhile
                return now, True
            logger.warning(
                "could not add partitions to Kafka topic %s (%r); it stays with %d",
                topic,
                exc,
                count,
            )
            return count, False
        return restore_partitions, True
    if count != properties.partitions:
        logger.warning(
            "Kafka topic %s has %d partitions, not the configured %d; left as it is",
            topic,
            count,
            properties.partitions,
        )
    return count, False


async def _partition_count(admin: Any, topic: str, default: int) -> int:
    for description in await admin.describe_topics([topic]):
        if description.get("topic") == topic:
            return len(description.get("partitions", ()))
    return default


class TopicKeeper:
    """Ensures the triggers topic once, and again whenever a client suspects it was lost.

    One keeper serves a triggerer's producer and consumer. :attr:`generation` grows each time a
    check re-created the topic or added partitions back after it was seen before, or found more
    partitions than a suspecting client saw: the clients reconnect to see them (their metadata
    would otherwise wait minutes for its next refresh).

    Args:
        properties: the topic and the client options.
        min_interval: seconds between two background checks (a lost topic makes every send
            and commit fail; one check per interval is enough).
    """

    def __init__(self, properties: KafkaProperties, *, min_interval: float = 2.0) -> None:
        self._properties, self._min_interval = properties, min_interval
        self.partitions = 0
        """The topic's partition count when it was last ensured (0: not yet); a later check
        restores partitions below it."""
        self.generation = 0
        """How many times the clients had to reconnect to see the topic's partitions (it was
        lost and repaired, or their metadata showed fewer than it has)."""
        self.checks = 0
        """How many background checks ran (each suspicion within ``min_interval`` is folded)."""
        self._next_check = 0.0
        self._check: asyncio.Task[None] | None = None
        self._seen: int | None = None

    async def ensure(self, time_limit: float) -> None:
        """Create or check the topic now (see :func:`ensure_topic` for what it raises)."""
        count, changed = await ensure_topic(
            self._properties, time_limit=time_limit, restore_partitions=self.partitions
        )
        if changed and self.partitions:
            self.generation += 1
            logger.warning(
                "Kafka topic %s was lost (the broker came back without it?); it has %d "
                "partitions again",
                self._properties.triggers_topic,
                count,
            )
        self.partitions = count

    def suspect(self, reason: str, seen: int | None = None) -> None:
        """A client saw signs of a lost topic: check it in the background, rate-limited.

        Args:
            reason: what the client saw (logged at debug).
            seen: how many partitions the client's metadata shows, if that is the sign.
        """
        if seen is not None:
            self._seen = seen if self._seen is None else min(self._seen, seen)
        loop = asyncio.get_running_loop()
        if self._check is not None and not self._check.done():
            return
        if loop.time() < self._next_check:
            return
        self._next_check = loop.time() + self._min_interval
        self.checks += 1
        logger.debug("checking Kafka topic %s: %s", self._properties.triggers_topic, reason)
        self._check = asyncio.create_task(self._check_now(), name="resilient-task-topic-check")

    async def _check_now(self) -> None:
        seen, self._seen = self._seen, None
        try:
            before = self.generation
            await self.ensure(time_limit=max(1.0, self._min_interval))
            if self.generation == before and seen is not None and self.partitions > seen:
                self.generation += 1
                logger.info(
                    "Kafka topic %s has %d partitions, a client of this node sees %d: reconnecting",
                    self._properties.triggers_topic,
                    self.partitions,
                    seen,
                )
        except (ConfigurationError, BackendError) as exc:
            logger.debug("checking Kafka topic %s failed: %r", self._properties.triggers_topic, exc)
        except Exception:
            logger.exception("checking Kafka topic %s failed", self._properties.triggers_topic)

    async def close(self) -> None:
        """Cancel a check under way."""
        check, self._check = self._check, None
        if check is not None and not check.done():
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check

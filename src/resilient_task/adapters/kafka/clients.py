"""What the Kafka adapter's clients share: options, error classification, outage logging.

``KafkaProperties.extra`` goes to every aiokafka client whose constructor accepts the key, so
TLS/SASL settings reach the producer, the consumer and the admin client alike, while a
consumer-only key such as ``session_timeout_ms`` reaches only the consumer. A key no client
accepts is a :class:`~resilient_task.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.errors import BackendError, ConfigurationError
from resilient_task.service.outage import OutageLog

logger = logging.getLogger(__name__)

__all__ = [
    "DRIVER_ERRORS",
    "RECOVERABLE_ERRORS",
    "Outage",
    "client_options",
    "close_client",
    "is_transient",
    "validate_extra",
]

DRIVER_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
"""What aiokafka raises for broker trouble (its own errors, sockets, timeouts)."""
RECOVERABLE_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, BackendError)
"""Broker trouble, raw or already translated: log, back off and try again."""


def _accepted(client_class: type[Any]) -> frozenset[str]:
    return frozenset(inspect.signature(client_class.__init__).parameters) - {"self", "loop"}


_CLIENT_KEYS = {
    cls: _accepted(cls) for cls in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient)
}


def validate_extra(properties: KafkaProperties) -> None:
    """Raise ConfigurationError if an ``extra`` key is accepted by no aiokafka client."""
    known = frozenset().union(*_CLIENT_KEYS.values())
    unknown = sorted(set(properties.extra) - known)
    if unknown:
        raise ConfigurationError(f"kafka.extra has options no aiokafka client accepts: {unknown}")


def client_options(
    properties: KafkaProperties, client_class: type[Any], **defaults: Any
) -> dict[str, Any]:
    """Keyword arguments for ``client_class``: ours, overridden by the accepted ``extra`` keys."""
    accepted = _CLIENT_KEYS[client_class]
    options: dict[str, Any] = {
        "bootstrap_servers": properties.bootstrap_servers,
        "client_id": properties.client_id,
        **defaults,
    }
    options.update({key: value for key, value in properties.extra.items() if key in accepted})
    return options


def is_transient(error: BaseException) -> bool:
    """True if retrying later may help (connection trouble, timeouts, retriable broker codes)."""
    if isinstance(error, BackendError):
        return error.transient
    if isinstance(error, KafkaError):
        return bool(error.retriable) or isinstance(error, KafkaTimeoutError | KafkaConnectionError)
    return isinstance(error, OSError | TimeoutError)


async def close_client(client: Any, *, what: str, wait: float) -> None:
    """Stop an aiokafka client, waiting at most ``wait`` seconds; the rest goes on in background.

    ``wait=0`` returns at once (a client being replaced, whose stop nobody needs to await).

    A consumer's stop first waits for the group coordinator (a rebalance in progress, or a
    request timeout in an outage); a producer's flushes pending sends. Cancelling either would
    leave aiokafka's tasks and sockets behind, so a slow stop is left to finish on its own.
    """
    closing = asyncio.create_task(_stop_logging_errors(client, what))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
    if wait <= 0:
        return  # the caller chose not to wait: the stop finishes in the background
    _, pending = await asyncio.wait({closing}, timeout=wait)
    if pending:
        logger.warning("%s still closing after %.1f s; finishing in the background", what, wait)


_closing: set[asyncio.Task[None]] = set()


async def _stop_logging_errors(client: Any, what: str) -> None:
    try:
        await client.stop()
    except RECOVERABLE_ERRORS as exc:
        logger.warning("closing the %s failed: %r", what, exc)


class Outage(OutageLog):
    """The consumer's name for :class:`~resilient_task.service.outage.OutageLog`; nothing more.

    (Kept until the consumer uses ``OutageLog`` and ``succeeded()`` directly.)
    """

    def recovered(self) -> None:
        """Same as :meth:`OutageLog.succeeded`."""
        self.succeeded()

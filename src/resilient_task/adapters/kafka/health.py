"""Is the Kafka broker reachable: one metadata round trip, bounded in time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaClient

from resilient_task.adapters.kafka.clients import DRIVER_ERRORS
from resilient_task.adapters.kafka.properties import KafkaProperties

__all__ = ["broker_problem"]

logger = logging.getLogger(__name__)


async def broker_problem(properties: KafkaProperties, *, seconds: float = 5.0) -> str | None:
    """Why the broker cannot be reached within ``seconds``, or None when it can.

    Bootstraps a bare client (a metadata request to one of ``bootstrap_servers``) and closes
    it; nothing is produced or consumed. Only asyncio (aiokafka's own loop).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": properties.bootstrap_servers,
        "client_id": properties.client_id,
        "request_timeout_ms": max(int(seconds * 1000), 1000),
    }
    for key in ("security_protocol", "ssl_context", "sasl_mechanism"):
        if key in properties.extra:
            options[key] = properties.extra[key]
    client = AIOKafkaClient(**options)
    try:
        await asyncio.wait_for(client.bootstrap(), seconds)
    except TimeoutError:
        return f"no answer from {properties.bootstrap_servers} within {seconds} s"
    except DRIVER_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            await client.close()
        except DRIVER_ERRORS:
            logger.debug("closing the health-check client failed", exc_info=True)
    return None

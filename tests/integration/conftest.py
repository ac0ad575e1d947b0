"""Integration tests: real PostgreSQL and a real Kafka-protocol broker, asyncio only.

Fixtures live in ``postgres_env`` (``database_url``, ``settings``: a migrated schema of
the test's own) and ``kafka_env`` (``kafka_bootstrap``).
Without a configured service they use testcontainers when Docker is available and skip
otherwise -- except under ``CI=true``, where an unreachable service fails the run.
"""

from __future__ import annotations

import pytest

from tests.integration.kafka_env import kafka_bootstrap
from tests.integration.postgres_env import database_url, settings

__all__ = ["database_url", "kafka_bootstrap", "settings"]


@pytest.fixture
def anyio_backend() -> str:
    """Integration tests run on asyncio only (aiokafka and psycopg's async mode need it)."""
    return "asyncio"

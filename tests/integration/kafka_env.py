"""A Kafka-protocol broker for the integration tests.

``kafka_bootstrap`` (session-scoped, ``"host:port"``) comes from
``RESILIENT_TASK_TEST_KAFKA_BOOTSTRAP``; without it a throw-away testcontainers Kafka is started
when a Docker engine answers; otherwise the tests are skipped -- except under ``CI=true``, where
a missing or unreachable broker fails the run. Either way the broker must answer a metadata
request within a few seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest
from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["KAFKA_BOOTSTRAP_ENV", "kafka_bootstrap"]

KAFKA_BOOTSTRAP_ENV = "RESILIENT_TASK_TEST_KAFKA_BOOTSTRAP"
_CONNECT_TIMEOUT = 5.0
_IMAGE = "confluentinc/cp-kafka:7.6.0"
_DOCKER_SOCKET = "/var/run/docker.sock"


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true: integration tests must run)", pytrace=False)
    pytest.skip(message)


async def _list_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(_CONNECT_TIMEOUT * 1000)
    )
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()


def _broker_problem(bootstrap: str) -> str | None:
    """Why the broker at ``bootstrap`` does not answer a metadata request, or None."""
    # A thread of its own: never touch the event loop the anyio test runner owns.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(asyncio.run, _list_topics(bootstrap)).result()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def _docker_problem() -> str | None:
    """Why no Docker engine answers, or None."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists(_DOCKER_SOCKET):
        return f"DOCKER_HOST is unset and {_DOCKER_SOCKET} does not exist"
    client = None
    try:
        docker = importlib.import_module("docker")  # untyped; comes with testcontainers
        client = docker.from_env(timeout=int(_CONNECT_TIMEOUT))
        client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None:
            client.close()
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The ``host:port`` of a reachable Kafka-protocol broker for this test session."""
    bootstrap = os.environ.get(KAFKA_BOOTSTRAP_ENV, "").strip()
    if bootstrap:
        problem = _broker_problem(bootstrap)
        if problem:
            _unavailable(f"{KAFKA_BOOTSTRAP_ENV}={bootstrap} is not reachable: {problem}")
        yield bootstrap
        return
    problem = _docker_problem()
    if problem:
        _unavailable(
            f"no Kafka for integration tests: set {KAFKA_BOOTSTRAP_ENV} "
            f"(e.g. 127.0.0.1:9092) or start Docker ({problem})"
        )
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer(_IMAGE).with_kraft() as container:
        bootstrap = str(container.get_bootstrap_server())
        problem = _broker_problem(bootstrap)
        if problem:
            _unavailable(f"the Kafka test container at {bootstrap} is not reachable: {problem}")
        yield bootstrap

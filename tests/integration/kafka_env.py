"""A Kafka-protocol broker for the integration tests.

``kafka_bootstrap`` (session-scoped, ``"host:port"``) comes from
``RESILIENT_TASK_TEST_KAFKA_BOOTSTRAP``; without it a throw-away testcontainers Kafka is started
when a Docker engine answers; otherwise the tests are skipped -- except under ``CI=true``, where
a missing or unreachable broker fails the run. CI and ``make services-up`` run Apache Kafka 4
(``services/kafka/pom.xml``); the container and docker-compose.yml use the same major version.
Either way the broker must answer a metadata
request within a few seconds.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.integration.kafka_broker import broker_problem, free_port

__all__ = ["KAFKA_BOOTSTRAP_ENV", "kafka_bootstrap"]

KAFKA_BOOTSTRAP_ENV = "RESILIENT_TASK_TEST_KAFKA_BOOTSTRAP"
_CONNECT_TIMEOUT = 5.0
_IMAGE = "apache/kafka:4.1.0"  # the major version CI runs (services/kafka/pom.xml)
_DOCKER_SOCKET = "/var/run/docker.sock"
_SECURITY_MAP = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true: integration tests must run)", pytrace=False)
    pytest.skip(message)


def _broker_problem(bootstrap: str) -> str | None:
    """Why the broker at ``bootstrap`` does not answer a metadata request, or None."""
    return broker_problem(bootstrap, _CONNECT_TIMEOUT)


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
    with _apache_kafka_container() as bootstrap:
        problem = _broker_problem(bootstrap)
        if problem:
            _unavailable(f"the Kafka test container at {bootstrap} is not reachable: {problem}")
        yield bootstrap


@contextlib.contextmanager
def _apache_kafka_container() -> Iterator[str]:
    """An ``apache/kafka`` container (one KRaft node) on a free host port, until exit.

    testcontainers' ``KafkaContainer`` drives Confluent's image only; the Apache image is
    configured by its ``KAFKA_*`` variables, as in docker-compose.yml. The advertised listener
    must name the host port, so the port is chosen before the container starts.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    container = (
        DockerContainer(_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        # The tests' consumer groups use 1 s sessions (Kafka's default minimum is 6 s).
        .with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "500")
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"

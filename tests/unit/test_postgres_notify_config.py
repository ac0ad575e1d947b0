"""Choosing LISTEN/NOTIFY triggering, and the notify triggerer without a reachable database."""

from __future__ import annotations

import logging
import time
import uuid

import anyio
import pytest

from resilient_task import ConfigurationError, ResilientTask, TriggerError
from resilient_task.adapters.memory import InMemoryTaskDAO
from resilient_task.adapters.postgres import PostgresNotifyTriggerer, PostgresTaskDAO
from resilient_task.domain.task import BaseTask

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOBODY_LISTENS = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # connection refused at once


@pytest.fixture
def anyio_backend() -> str:
    """The PostgreSQL adapter is asyncio only (psycopg's async connections)."""
    return "asyncio"


def test_kafka_and_notify_together_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="kafka=True or notify=True"):
        ResilientTask(database_url=URL, kafka=True, notify=True)


def test_notify_without_postgresql_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask(notify=True)
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask(notify=True, dao=InMemoryTaskDAO())


@pytest.mark.anyio
async def test_notify_accepts_a_database_url_or_a_postgres_store() -> None:
    ResilientTask(database_url=URL, notify=True)
    dao = PostgresTaskDAO.from_url(URL)
    ResilientTask(dao=dao, notify=True)
    await dao.close()


def test_the_environment_switches_notify_on() -> None:
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask.from_env(environ={"RESILIENT_TASK_NOTIFY": "1"})
    with pytest.raises(ConfigurationError, match="kafka=True or notify=True"):
        ResilientTask.from_env(
            environ={
                "RESILIENT_TASK_NOTIFY": "true",
                "RESILIENT_TASK_DATABASE_URL": URL,
                "RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
            }
        )
    ResilientTask.from_env(
        environ={"RESILIENT_TASK_NOTIFY": "1", "RESILIENT_TASK_DATABASE_URL": URL}
    )
    ResilientTask.from_env(environ={"RESILIENT_TASK_NOTIFY": "0"})


def test_an_unreadable_notify_switch_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="RESILIENT_TASK_NOTIFY"):
        ResilientTask.from_env(environ={"RESILIENT_TASK_NOTIFY": "maybe"})


def test_the_triggerer_refuses_impossible_settings() -> None:
    with pytest.raises(ConfigurationError, match="database URL"):
        PostgresNotifyTriggerer(url="mysql://localhost/db")
    with pytest.raises(ConfigurationError, match="max_in_flight"):
        PostgresNotifyTriggerer(url=URL, max_in_flight=0)
    with pytest.raises(ConfigurationError, match="health_check_interval"):
        PostgresNotifyTriggerer(url=URL, health_check_interval=0)


@pytest.mark.anyio
async def test_triggering_nothing_does_not_connect() -> None:
    async with PostgresNotifyTriggerer(url=NOBODY_LISTENS) as triggerer:
        await triggerer.trigger([])


@pytest.mark.anyio
async def test_a_trigger_the_database_cannot_take_is_a_transient_trigger_error() -> None:
    task = BaseTask(uuid.uuid4(), 0, "work")
    async with PostgresNotifyTriggerer(url=NOBODY_LISTENS, send_timeout=5) as triggerer:
        with pytest.raises(TriggerError, match=str(task.id)) as raised:
            await triggerer.trigger([task])
    assert raised.value.transient
    assert raised.value.__cause__ is not None


@pytest.mark.anyio
async def test_a_listener_without_database_starts_logs_the_outage_once_and_stops_promptly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resilient_task")
    triggerer = PostgresNotifyTriggerer(url=NOBODY_LISTENS, connect_timeout=0.5)
    started = time.monotonic()
    await triggerer.start(_never_called)
    assert 0.4 < time.monotonic() - started < 3
    assert not triggerer.listening
    await anyio.sleep(1.0)  # several reconnect attempts (backoff from 0.1 s)
    stopping = time.monotonic()
    await triggerer.stop()
    await triggerer.stop()
    assert time.monotonic() - stopping < 0.5
    outages = [r for r in caplog.records if "unavailable while listening" in r.getMessage()]
    assert len(outages) == 1
    assert outages[0].levelno == logging.WARNING


async def _never_called(task: BaseTask) -> None:
    raise AssertionError(f"no trigger can arrive without a database, got {task}")

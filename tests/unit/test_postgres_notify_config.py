"""Choosing LISTEN/NOTIFY triggering, and the settings the notify triggerer refuses.

No network here: what the triggerer does without a reachable database is in
``tests/integration/test_postgres_notify_outage.py``.
"""

from __future__ import annotations

import pytest

from resilient_task import ConfigurationError, NotifyTriggers, ResilientTask
from resilient_task.adapters.memory import InMemoryTaskDAO
from resilient_task.adapters.postgres import PostgresNotifyTriggerer, PostgresTaskDAO

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def anyio_backend() -> str:
    """The PostgreSQL adapter is asyncio only (psycopg's async connections)."""
    return "asyncio"


def test_notify_without_postgresql_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask(triggers=NotifyTriggers())
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask(triggers=NotifyTriggers(), dao=InMemoryTaskDAO())


@pytest.mark.anyio
async def test_notify_accepts_a_database_url_or_a_postgres_store() -> None:
    ResilientTask(database_url=URL, triggers=NotifyTriggers())
    dao = PostgresTaskDAO.from_url(URL)
    ResilientTask(dao=dao, triggers=NotifyTriggers())
    await dao.close()


def test_the_environment_switches_notify_on() -> None:
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask.from_env(environ={"RESILIENT_TASK_NOTIFY": "1"})
    with pytest.raises(ConfigurationError, match="choose one trigger transport"):
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

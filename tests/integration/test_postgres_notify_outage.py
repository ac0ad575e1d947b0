"""The notify triggerer without a reachable database (a port where nothing listens).

Moved from the unit tests: these open real connections. Nothing here measures time; the
``fail_after`` bounds only turn a hang into a failure.
"""

from __future__ import annotations

import logging
import uuid

import anyio
import pytest

from resilient_task import TriggerError
from resilient_task.adapters.postgres import PostgresNotifyTriggerer
from resilient_task.domain.task import BaseTask

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOBODY_LISTENS = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # connection refused at once


async def test_triggering_nothing_does_not_connect() -> None:
    async with PostgresNotifyTriggerer(url=NOBODY_LISTENS) as triggerer:
        await triggerer.trigger([])


async def test_a_trigger_the_database_cannot_take_is_a_transient_trigger_error() -> None:
    task = BaseTask(uuid.uuid4(), 0, "work")
    async with PostgresNotifyTriggerer(url=NOBODY_LISTENS, send_timeout=5) as triggerer:
        with pytest.raises(TriggerError, match=str(task.id)) as raised:
            await triggerer.trigger([task])
    assert raised.value.transient
    assert raised.value.__cause__ is not None


async def test_a_listener_without_database_starts_logs_the_outage_once_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_task")
    triggerer = PostgresNotifyTriggerer(url=NOBODY_LISTENS, connect_timeout=0.5)
    with anyio.fail_after(10):
        await triggerer.start(_never_called)
    assert not triggerer.listening
    with anyio.fail_after(10):
        # Several reconnect attempts (backoff from 0.1 s), each failing, before stopping.
        while len(_attempts(caplog)) < 3:  # noqa: ASYNC110 -- the log is the only signal
            await anyio.sleep(0.05)
        await triggerer.stop()
        await triggerer.stop()
    assert not triggerer.listening
    warnings = [r for r in _attempts(caplog) if r.levelno >= logging.WARNING]
    assert len(warnings) == 1


def _attempts(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """One record per failed attempt: a warning for the first, debug for the others."""
    return [r for r in caplog.records if "unavailable while listening" in r.getMessage()]


async def _never_called(task: BaseTask) -> None:
    raise AssertionError(f"no trigger can arrive without a database, got {task}")

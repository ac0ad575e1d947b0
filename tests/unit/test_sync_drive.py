"""resilient_task.sync without a database: running coroutines to completion, refusing handles."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from resilient_task import AddTaskRequest, ConfigurationError, ValidationError
from resilient_task.sync import TaskAdder, add_task
from resilient_task.sync.drive import run_to_completion


async def _answer(value: int) -> int:
    async def inner() -> int:
        return value * 2

    return await inner()


async def _fails() -> None:
    raise ValidationError("refused")


def test_a_coroutine_that_never_waits_runs_to_its_value_without_an_event_loop() -> None:
    assert run_to_completion(_answer(21)) == 42


def test_a_coroutine_error_propagates_unchanged() -> None:
    with pytest.raises(ValidationError, match="refused"):
        run_to_completion(_fails())


def test_a_coroutine_that_waits_for_an_event_loop_is_closed_and_reported() -> None:
    cleaned = []

    async def waits() -> None:
        try:
            await asyncio.sleep(0)  # yields to a loop there is none of
        finally:
            cleaned.append(True)

    with pytest.raises(RuntimeError, match="waited for an event loop"):
        run_to_completion(waits())
    assert cleaned == [True]


@pytest.mark.parametrize("handle", [None, "postgresql://", 42, object()])
def test_a_handle_that_is_no_connection_is_a_validation_error(handle: object) -> None:
    with pytest.raises(ValidationError, match=r"psycopg\.Connection or a SQLAlchemy"):
        add_task(handle, AddTaskRequest(type="ship"), triggers="poll")


def test_an_invalid_request_is_refused_before_the_connection_is_used() -> None:
    never_connected = psycopg.Connection.__new__(psycopg.Connection)  # any use would fail
    adder = TaskAdder(triggers="notify")
    with pytest.raises(ValidationError, match="expected AddTaskRequest, got str"):
        adder.add_tasks(never_connected, ["not a request"])  # type: ignore[list-item]


def test_an_unknown_trigger_mode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'notify' or 'poll'"):
        TaskAdder(triggers="kafka")  # type: ignore[arg-type]

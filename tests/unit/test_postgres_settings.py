"""PostgresSettings: the session timeouts and their validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_task import ConfigurationError
from resilient_task.adapters.postgres import PostgresSettings


def test_default_sessions_wait_ten_seconds_for_a_lock_and_ten_minutes_idle_in_transaction() -> None:
    assert PostgresSettings().session_options() == {
        "lock_timeout": "10000",
        "idle_in_transaction_session_timeout": "600000",
    }


def test_none_leaves_a_timeout_to_the_server() -> None:
    settings = PostgresSettings(lock_timeout=None, idle_in_transaction_timeout=None)
    assert settings.session_options() == {}


@given(st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=24)))
def test_a_timeout_is_sent_in_whole_milliseconds(value: timedelta) -> None:
    options = PostgresSettings(lock_timeout=value).session_options()
    assert int(options["lock_timeout"]) == value // timedelta(milliseconds=1)


@pytest.mark.parametrize("name", ["lock_timeout", "idle_in_transaction_timeout"])
@pytest.mark.parametrize(
    "value",
    [timedelta(0), timedelta(microseconds=999), timedelta(seconds=-1), timedelta(days=25), 10],
    ids=["zero", "below-1ms", "negative", "over-24-days", "not-a-timedelta"],
)
def test_a_timeout_postgresql_cannot_take_is_refused(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=name):
        PostgresSettings(**{name: value})  # type: ignore[arg-type]

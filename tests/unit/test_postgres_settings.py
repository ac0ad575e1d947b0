"""PostgresSettings: the session timeouts and their validation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from resilient_task import ConfigurationError
from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO


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


URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # never connected to


@pytest.mark.parametrize(
    ("pool", "expected"),
    [({"pool_size": 4, "max_overflow": 3}, 7), ({"pool_size": 4, "max_overflow": -1}, None)],
    ids=["bounded", "unbounded-overflow"],
)
def test_the_dao_reports_how_many_connections_its_pool_lends_at_once(
    pool: dict[str, Any], expected: int | None
) -> None:
    assert PostgresTaskDAO.from_url(URL, **pool).max_connections == expected


@pytest.mark.parametrize(
    ("pool", "hot", "size", "bound"),
    [
        ({"pool_size": 1, "max_overflow": 0}, None, 0, 1),
        ({"pool_size": 2, "max_overflow": 0}, None, 1, 2),
        ({"pool_size": 10, "max_overflow": 10}, None, 2, 20),
        ({"pool_size": 4, "max_overflow": 3}, 5, 5, 4),
        ({"pool_size": 4, "max_overflow": -1}, 3, 3, None),
    ],
    ids=["one", "two", "default", "more-than-the-executor-leaves", "unbounded"],
)
def test_hot_connections_leave_the_pool_one_and_lower_the_bound_beyond_two(
    pool: dict[str, Any], hot: int | None, size: int, bound: int | None
) -> None:
    dao = PostgresTaskDAO.from_url(URL, hot_connections=hot, **pool)
    assert (0 if dao._hot is None else dao._hot.size) == size
    assert dao.max_connections == bound


def test_a_dao_on_an_engine_without_a_pool_reports_no_bound() -> None:
    engine = create_async_engine(URL, poolclass=NullPool)
    assert PostgresTaskDAO(engine=engine).max_connections is None

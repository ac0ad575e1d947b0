"""Property: a synchronous add and the asynchronous service give the same outcome, always.

For generated batches -- valid requests, duplicates of a stored task and of each other (by id
and by unique key), payloads over the limit, and hostile values forced into a built request
(NUL and surrogate texts, naive and out-of-range times, durations that overflow, wrong types)
or standing where a request should be -- :func:`resilient_task.sync.add_tasks` on a SQLAlchemy
``Connection`` and ``TaskService.add_tasks`` on an ``AsyncConnection`` (both in a transaction
rolled back afterwards) return the same result codes for the same tasks, or raise the same
error with the same message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from anyio.from_thread import BlockingPortal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resilient_task import AddTaskRequest, TaskProperties, TaskService
from resilient_task.adapters.memory.triggerer import InMemoryTriggerer
from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.domain.requests import EARLIEST_TIME, LATEST_TIME, MAX_DURATION
from resilient_task.service.registry import HandlerRegistry
from resilient_task.sync import TaskAdder
from tests.integration.test_sync_add import engine, portal, schema
from tests.unit.hostile import fuzz, hostile_values

__all__ = ["engine", "portal", "schema"]  # fixtures shared with test_sync_add

pytestmark = pytest.mark.integration

LIMIT = 1000
PROPERTIES = TaskProperties(max_payload_bytes=LIMIT)
SEED_ID = uuid.UUID("01900000-0000-7000-8000-000000000001")
IDS = [SEED_ID, uuid.UUID("01900000-0000-7000-8000-000000000002"), uuid.uuid4()]
KEYS = ["k-seed", "k1", "k2"]

_aware_times = st.datetimes(
    min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29), timezones=st.just(UTC)
)
_hostile_texts = st.sampled_from(["", " ", "a\x00b", "\ud800", "ok\udfff", "t" * 251, "k" * 151])
_hostile_times = st.sampled_from(
    [
        datetime(2024, 1, 1),  # naive
        datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))),  # year 10000 in UTC
        datetime.min.replace(tzinfo=UTC),
        EARLIEST_TIME,
        LATEST_TIME,
    ]
)
_hostile_durations = st.sampled_from(
    [timedelta.max, timedelta.min, timedelta(0), -timedelta(1), MAX_DURATION * 2]
)
_HOSTILE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": _hostile_texts | hostile_values,
    "sub_type": _hostile_texts | hostile_values,
    "unique_key": _hostile_texts | hostile_values,
    "data": st.sampled_from(["text", b"z" * (LIMIT + 1), bytearray(b"b")]) | hostile_values,
    "task_id": st.sampled_from(["not-a-uuid", str(SEED_ID)]) | hostile_values,
    "run_after_time": _hostile_times | hostile_values,
    "expected_queue_time": _hostile_durations | hostile_values,
    "priority": st.sampled_from([-1, 10, True]) | hostile_values,
}


@st.composite
def requests(draw: st.DrawFn) -> AddTaskRequest:
    """A valid request, often colliding, sometimes with one field forced to a hostile value."""
    request = AddTaskRequest(
        type=draw(st.sampled_from(["ship", "mail"])),
        data=draw(st.binary(max_size=20)),
        task_id=draw(st.none() | st.sampled_from(IDS)),
        sub_type=draw(st.none() | st.just("express")),
        unique_key=draw(st.none() | st.sampled_from(KEYS)),
        run_after_time=draw(st.none() | _aware_times),
        expected_queue_time=draw(
            st.none() | st.timedeltas(min_value=timedelta(microseconds=1), max_value=MAX_DURATION)
        ),
        priority=draw(st.integers(min_value=0, max_value=9)),
    )
    roll = draw(st.integers(min_value=0, max_value=19))
    if roll < 2:  # the largest payload accepted, or one byte more
        object.__setattr__(request, "data", b"z" * (LIMIT + roll))
    elif roll < 5:
        field = draw(st.sampled_from(sorted(_HOSTILE_FIELDS)))
        object.__setattr__(request, field, draw(_HOSTILE_FIELDS[field]))  # past validation
    return request


_batch = st.lists(requests(), min_size=1, max_size=5)


@st.composite
def batches(draw: st.DrawFn) -> Any:
    """Mostly lists of requests; now and then not an iterable of requests at all."""
    roll = draw(st.integers(min_value=0, max_value=9))
    if roll < 7:
        return draw(_batch)
    if roll == 7:
        return tuple(draw(_batch))
    if roll == 8:
        return draw(st.lists(requests() | hostile_values, max_size=4))
    return draw(requests() | hostile_values)  # a single request where an iterable belongs


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T][0-9:.]+(\+\d\d(:\d\d)?)?")


def outcome(run: Any, batch: Any) -> tuple[Any, ...]:
    """The results of ``run(batch)`` with generated ids numbered, or the error it raised.

    Ids and times of the moment (a server's "Failing row contains (...)") are masked in errors.
    """
    try:
        results = run(batch)
    except Exception as exc:
        return ("error", type(exc), _TIME.sub("<time>", _UUID.sub("<id>", str(exc))))
    generated: dict[uuid.UUID, str] = {}
    known = {*IDS}
    return (
        "ok",
        [
            (
                r.result,
                r.task_id
                if r.task_id in known
                else generated.setdefault(r.task_id, f"new{len(generated)}"),
            )
            for r in results
        ],
    )


@pytest.fixture
def seeded(engine: sa.Engine, schema: PostgresSettings) -> PostgresSettings:
    """The schema with one committed task: id ``SEED_ID``, type ``ship``, key ``k-seed``."""
    with engine.begin() as conn:
        TaskAdder(triggers="poll", settings=schema).add_task(
            conn, AddTaskRequest(type="ship", task_id=SEED_ID, unique_key="k-seed")
        )
    return schema


@pytest.fixture
def async_service(
    portal: BlockingPortal, database_url: str, seeded: PostgresSettings
) -> Iterator[TaskService]:
    dao = PostgresTaskDAO.from_url(database_url, settings=seeded)
    portal.call(dao.open)
    yield TaskService(
        dao=dao,
        triggerer=InMemoryTriggerer(),
        registry=HandlerRegistry(()),
        clock=SystemClock(),
        properties=PROPERTIES,
    )
    portal.call(dao.close)


@settings(
    fuzz,
    suppress_health_check=[*fuzz.suppress_health_check, HealthCheck.function_scoped_fixture],
)
@given(batch=batches())
def test_sync_and_async_adds_give_the_same_outcome(
    batch: Any,
    portal: BlockingPortal,
    engine: sa.Engine,
    seeded: PostgresSettings,
    async_service: TaskService,
) -> None:
    adder = TaskAdder(triggers="notify", settings=seeded, properties=PROPERTIES)

    def sync_add(requests: Any) -> Any:
        with engine.connect() as conn:
            try:
                return adder.add_tasks(conn, requests)
            finally:
                conn.rollback()

    async def async_add_in(requests: Any) -> Any:
        dao = async_service._dao
        assert isinstance(dao, PostgresTaskDAO)
        async with dao.engine.connect() as conn:
            await conn.begin()
            try:
                return await async_service.add_tasks(requests, transaction=conn)
            finally:
                await conn.rollback()

    def async_add(requests: Any) -> Any:
        return portal.call(async_add_in, requests)

    expected = outcome(async_add, batch)
    event(
        expected[0] if expected[0] == "ok" else f"error: {expected[1].__name__} {expected[2][:50]}"
    )
    if expected[0] == "ok":
        event(f"result codes: {sorted({code.value for code, _ in expected[1]})}")
    assert outcome(sync_add, batch) == expected

"""Request validation over whole classes of input: a typed error or a stored task, nothing else.

For any field values, ``AddTaskRequest`` either raises :class:`ValidationError` -- exactly
when a documented rule (restated as an oracle in :mod:`tests.unit.hostile`) is broken -- or
builds a request that the task service stores as given, whose times stay representable. The
operator calls (``find_tasks``, the version of ``resume_task``...) refuse bad arguments the
same way. Budget: ``RESILIENT_TASK_FUZZ_EXAMPLES`` (see :mod:`tests.unit.hostile`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
from hypothesis import example, given
from hypothesis import strategies as st

from resilient_task import AddTaskRequest, TaskStatus, ValidationError, VersionConflictError
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.domain.requests import EARLIEST_TIME, LATEST_TIME, MAX_DURATION
from tests.unit.helpers import make_service
from tests.unit.hostile import (
    fuzz,
    hostile_values,
    valid_priority,
    valid_text,
    valid_version,
)

_zones = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_times = st.one_of(
    st.datetimes(min_value=datetime(9999, 12, 28), timezones=_zones),
    st.datetimes(max_value=datetime(1, 1, 3), timezones=_zones),
    st.datetimes(timezones=_zones),
    st.datetimes(),  # naive
)
_durations = st.one_of(
    st.timedeltas(),
    st.timedeltas(min_value=MAX_DURATION - timedelta(seconds=1), max_value=MAX_DURATION * 2),
    st.sampled_from([timedelta.max, timedelta.min, timedelta(0), timedelta.resolution]),
)
_texts = st.one_of(
    st.text(max_size=20),
    st.text(min_size=140, max_size=260),
    st.sampled_from(["", " ", "a\x00b", "\ud800", "ok\udfff", "\u2028", "x"]),
    hostile_values,
)


def _valid_time(value: object) -> bool:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        return False
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return False
    return EARLIEST_TIME <= utc <= LATEST_TIME


def _valid_duration(value: object) -> bool:
    return isinstance(value, timedelta) and timedelta(0) < value <= MAX_DURATION


@fuzz
@given(
    type_=_texts,
    sub_type=st.none() | _texts,
    unique_key=st.none() | _texts,
    run_after_time=st.none() | _times | hostile_values,
    expected_queue_time=st.none() | _durations | hostile_values,
    priority=st.integers(min_value=-1, max_value=10) | hostile_values,
    data=st.binary(max_size=10) | st.text(max_size=3) | hostile_values,
)
@example(
    type_="t",
    sub_type=None,
    unique_key=None,
    run_after_time=datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))),
    expected_queue_time=None,
    priority=5,
    data=b"",
)
@example(
    type_="t",
    sub_type=None,
    unique_key=None,
    run_after_time=None,
    expected_queue_time=timedelta.max,
    priority=5,
    data=b"",
)
def test_a_request_is_refused_exactly_when_a_documented_rule_is_broken(
    type_: Any,
    sub_type: Any,
    unique_key: Any,
    run_after_time: Any,
    expected_queue_time: Any,
    priority: Any,
    data: Any,
) -> None:
    valid = (
        valid_text(type_)
        and (sub_type is None or valid_text(sub_type))
        and (unique_key is None or valid_text(unique_key, 150))
        and (run_after_time is None or _valid_time(run_after_time))
        and (expected_queue_time is None or _valid_duration(expected_queue_time))
        and valid_priority(priority)
        and isinstance(data, bytes)
    )
    fields = {
        "type": type_,
        "sub_type": sub_type,
        "unique_key": unique_key,
        "run_after_time": run_after_time,
        "expected_queue_time": expected_queue_time,
        "priority": priority,
        "data": data,
    }
    try:
        request = AddTaskRequest(**fields)
    except ValidationError:
        assert not valid, fields
        return
    assert valid, fields
    anyio.run(_stored_as_given, request)


async def _stored_as_given(request: AddTaskRequest) -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    result = await service.add_task(request)
    task = dao.tasks[result.task_id]
    assert (task.type, task.sub_type, task.unique_key, task.priority, task.data) == (
        request.type,
        request.sub_type,
        request.unique_key,
        request.priority,
        request.data,
    )
    assert EARLIEST_TIME <= task.next_event_time <= LATEST_TIME


@fuzz
@given(
    st.lists(st.builds(AddTaskRequest, type=st.sampled_from(["a", "b"])), max_size=5),
    st.sampled_from([list, tuple, iter, lambda r: (x for x in r)]),
)
def test_add_tasks_stores_every_request_of_any_iterable(
    requests: list[AddTaskRequest], wrap: Any
) -> None:
    async def check() -> None:
        dao = InMemoryTaskDAO()
        results = await make_service(dao=dao).add_tasks(wrap(requests))
        assert len(results) == len(requests) == len(dao.tasks)

    anyio.run(check)


@fuzz
@given(status=st.none() | st.sampled_from(list(TaskStatus)) | _texts, limit=hostile_values)
@example(status="BOGUS", limit=10)
@example(status=None, limit="10")
def test_find_tasks_returns_a_list_or_raises_a_validation_error(status: Any, limit: Any) -> None:
    valid_status = status is None or (isinstance(status, str) and status in TaskStatus.__members__)
    valid_limit = type(limit) is int and limit >= 1

    async def check() -> None:
        service = make_service()
        try:
            found = await service.find_tasks(status=status, limit=limit)
        except ValidationError:
            assert not (valid_status and valid_limit)
            return
        assert valid_status
        assert valid_limit
        assert found == []

    anyio.run(check)


@fuzz
@given(version=hostile_values | st.integers(min_value=0, max_value=3))
@example(version="1")
@example(version=True)
def test_an_operator_version_is_a_version_or_a_validation_error(version: Any) -> None:
    async def check() -> None:
        clock = FakeClock()
        dao = InMemoryTaskDAO()
        service = make_service(dao=dao, clock=clock)
        later = clock.now() + timedelta(hours=1)
        added = await service.add_task(AddTaskRequest(type="t", run_after_time=later))
        try:
            await service.resume_task(added.task_id, version=version)
        except ValidationError:
            assert not valid_version(version)
            assert version is not None
            return
        except VersionConflictError:  # a stale but valid version
            assert valid_version(version)
            assert version != 0
            return
        assert version in (None, 0)

    anyio.run(check)

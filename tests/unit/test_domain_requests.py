"""AddTaskRequest: everything a caller asks for is checked before anything is stored."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from resilient_task.domain import AddTaskRequest
from resilient_task.domain.requests import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DURATION,
    MAX_TYPE_LENGTH,
    MAX_UNIQUE_KEY_LENGTH,
)
from resilient_task.errors import ValidationError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_type_alone_makes_a_request_with_defaults() -> None:
    request = AddTaskRequest(type="payment")
    assert request.data == b""
    assert request.priority == 5
    assert request.task_id is None
    assert request.run_after_time is None


def test_every_field_is_kept_as_given() -> None:
    task_id = uuid4()
    request = AddTaskRequest(
        type="payment",
        data=b"{}",
        task_id=task_id,
        sub_type="card",
        unique_key="order-42",
        run_after_time=NOW,
        expected_queue_time=timedelta(seconds=30),
        priority=0,
    )
    assert (request.task_id, request.sub_type, request.unique_key) == (task_id, "card", "order-42")
    assert (request.run_after_time, request.priority) == (NOW, 0)
    assert request.expected_queue_time == timedelta(seconds=30)


@pytest.mark.parametrize("task_type", ["", "   ", "\t\n"])
def test_a_blank_type_is_rejected(task_type: str) -> None:
    with pytest.raises(ValidationError, match="type is required"):
        AddTaskRequest(type=task_type)


def test_a_type_that_is_not_a_str_is_rejected() -> None:
    with pytest.raises(ValidationError, match="type must be a str"):
        AddTaskRequest(type=None)  # type: ignore[arg-type]


def test_str_data_is_rejected_with_a_hint_to_encode_it() -> None:
    with pytest.raises(ValidationError, match=r"data must be bytes, got str.*encode"):
        AddTaskRequest(type="payment", data="hello")  # type: ignore[arg-type]


def test_data_of_another_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match="data must be bytes, got dict"):
        AddTaskRequest(type="payment", data={"a": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [bytearray(b"abc"), memoryview(b"abc")])
def test_bytes_like_data_is_accepted_as_bytes(data: bytearray | memoryview) -> None:
    request = AddTaskRequest(type="payment", data=data)  # type: ignore[arg-type]
    assert request.data == b"abc"
    assert type(request.data) is bytes


def test_a_naive_run_after_time_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match=r"run_after_time must be timezone-aware") as raised:
        AddTaskRequest(type="payment", run_after_time=datetime(2026, 3, 1, 12, 0))
    assert "timezone.utc" in str(raised.value)


def test_an_aware_run_after_time_in_any_zone_is_accepted() -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 3, 1, 13, 0, tzinfo=paris)
    assert AddTaskRequest(type="payment", run_after_time=at).run_after_time == at


def test_a_run_after_time_that_is_not_a_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError, match="run_after_time must be a datetime"):
        AddTaskRequest(type="payment", run_after_time="2026-03-01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "queue_time",
    [timedelta(0), -timedelta(seconds=1), timedelta.max, MAX_DURATION + timedelta.resolution],
)
def test_expected_queue_time_must_be_positive_and_at_most_ten_years(queue_time: Any) -> None:
    with pytest.raises(ValidationError, match="expected_queue_time must be positive and at most"):
        AddTaskRequest(type="payment", expected_queue_time=queue_time)


def test_expected_queue_time_must_be_a_timedelta() -> None:
    with pytest.raises(ValidationError, match=r"expected_queue_time must be a datetime\.timedelta"):
        AddTaskRequest(type="payment", expected_queue_time=30)  # type: ignore[arg-type]


def test_expected_queue_time_of_exactly_ten_years_is_accepted() -> None:
    request = AddTaskRequest(type="payment", expected_queue_time=MAX_DURATION)
    assert request.expected_queue_time == MAX_DURATION


@pytest.mark.parametrize("priority", [0, 9])
def test_priorities_from_0_to_9_are_accepted(priority: int) -> None:
    assert AddTaskRequest(type="payment", priority=priority).priority == priority


@pytest.mark.parametrize("priority", [-1, 10, True, False, 5.0, "5"])
def test_other_priorities_are_rejected(priority: Any) -> None:
    with pytest.raises(ValidationError, match="priority must be an int from 0 to 9"):
        AddTaskRequest(type="payment", priority=priority)


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("type", MAX_TYPE_LENGTH),
        ("sub_type", MAX_TYPE_LENGTH),
        ("unique_key", MAX_UNIQUE_KEY_LENGTH),
    ],
)
def test_text_fields_are_accepted_exactly_at_their_maximum_length(field: str, limit: int) -> None:
    fields: dict[str, Any] = {"type": "payment", field: "x" * limit}
    assert getattr(AddTaskRequest(**fields), field) == "x" * limit


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("type", MAX_TYPE_LENGTH),
        ("sub_type", MAX_TYPE_LENGTH),
        ("unique_key", MAX_UNIQUE_KEY_LENGTH),
    ],
)
def test_text_fields_one_character_over_their_maximum_are_rejected(field: str, limit: int) -> None:
    fields: dict[str, Any] = {"type": "payment", field: "x" * (limit + 1)}
    with pytest.raises(
        ValidationError, match=rf"{field} is {limit + 1} characters.*maximum is {limit}"
    ):
        AddTaskRequest(**fields)


def test_the_documented_limits_are_250_and_150() -> None:
    assert (MAX_TYPE_LENGTH, MAX_UNIQUE_KEY_LENGTH) == (250, 150)


@pytest.mark.parametrize("field", ["type", "sub_type", "unique_key"])
def test_nul_characters_are_rejected_in_text_fields(field: str) -> None:
    fields: dict[str, Any] = {"type": "payment", field: "pay\x00ment"}
    with pytest.raises(ValidationError, match=f"{field} must not contain NUL"):
        AddTaskRequest(**fields)


def test_a_task_id_that_is_not_a_uuid_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"task_id must be a uuid\.UUID, got str"):
        AddTaskRequest(type="payment", task_id=str(uuid4()))  # type: ignore[arg-type]


def test_a_request_is_immutable() -> None:
    request = AddTaskRequest(type="payment")
    with pytest.raises(FrozenInstanceError):
        request.type = "refund"  # type: ignore[misc]


@pytest.mark.parametrize("field", ["type", "sub_type", "unique_key"])
@pytest.mark.parametrize("surrogate", [chr(0xD800), chr(0xDFFF), f"a{chr(0xDC80)}b"])
def test_lone_surrogates_are_rejected_in_text_fields(field: str, surrogate: str) -> None:
    fields: dict[str, Any] = {"type": "payment", field: surrogate}
    with pytest.raises(ValidationError, match=f"{field} must be valid Unicode"):
        AddTaskRequest(**fields)


@pytest.mark.parametrize(
    "at",
    [
        # 9999-12-31 23:00 at UTC-5 is year 10000 in UTC: PostgreSQL stored it, nobody read it.
        pytest.param(datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))), id="10000"),
        pytest.param(datetime.max.replace(tzinfo=UTC), id="max"),
        pytest.param(datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))), id="year-0"),
        pytest.param(LATEST_TIME + timedelta.resolution, id="just-after"),
        pytest.param(EARLIEST_TIME - timedelta.resolution, id="just-before"),
    ],
)
def test_a_run_after_time_that_cannot_round_trip_is_rejected(at: datetime) -> None:
    with pytest.raises(ValidationError, match=r"run_after_time .* is outside the storable range"):
        AddTaskRequest(type="payment", run_after_time=at)


@pytest.mark.parametrize("at", [EARLIEST_TIME, LATEST_TIME])
def test_run_after_times_at_the_ends_of_the_range_are_accepted(at: datetime) -> None:
    assert AddTaskRequest(type="payment", run_after_time=at).run_after_time == at

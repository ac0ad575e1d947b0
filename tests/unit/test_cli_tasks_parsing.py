"""Property tests of the ``tasks`` commands' duration and time parsers.

Any string gives a value or a one-line ValidationError, never another exception; what is
accepted is exactly what the documented grammar says, with the documented value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from resilient_task.cli_values import format_duration, parse_duration, parse_status, parse_time
from resilient_task.domain.requests import EARLIEST_TIME, LATEST_TIME, MAX_DURATION
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import ValidationError
from tests.unit.hostile import fuzz

T = TypeVar("T")

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_MS = MAX_DURATION // timedelta(milliseconds=1)

parts = st.lists(
    st.tuples(st.integers(min_value=0, max_value=10**7), st.sampled_from(sorted(UNIT_MS))),
    min_size=1,
    max_size=5,
)
duration_like = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[0-9]{0,6}(ms|s|m|h|d|w|x|M|µs| )?[0-9]{0,3}[smhdw]?", fullmatch=True),
    parts.map(lambda ps: "".join(f"{n}{u}" for n, u in ps)),
)
storable = st.datetimes(
    min_value=EARLIEST_TIME.replace(tzinfo=None),
    max_value=LATEST_TIME.replace(tzinfo=None),
    timezones=st.just(UTC),
)


def attempt(parse: Callable[[str], T], text: str) -> T | ValidationError:
    """What ``parse(text)`` returns, or the ValidationError it raises (anything else fails)."""
    try:
        return parse(text)
    except ValidationError as exc:
        return exc


def one_line(exc: ValidationError) -> bool:
    return "\n" not in str(exc) and 0 < len(str(exc)) < 400


@fuzz
@given(parts)
def test_a_duration_is_the_sum_of_its_parts_up_to_ten_years(
    spec: list[tuple[int, str]],
) -> None:
    text = "".join(f"{n}{unit}" for n, unit in spec)
    millis = sum(n * UNIT_MS[unit] for n, unit in spec)

    if millis <= MAX_MS:
        assert parse_duration(text) == timedelta(milliseconds=millis)
    else:
        with pytest.raises(ValidationError, match="ten years"):
            parse_duration(text)


@fuzz
@given(duration_like)
@example("")
@example("10")
@example("-10m")
@example(" 10m")
@example("1\u0660m")  # an Arabic-Indic digit: \d would take it, the grammar does not
@example("9" * 5000 + "s")
def test_any_text_is_a_duration_in_range_or_a_one_line_error(text: str) -> None:
    grammatical = re.fullmatch(r"([0-9]+(ms|s|m|h|d|w))+", text, re.ASCII) is not None
    value = attempt(parse_duration, text)
    if isinstance(value, ValidationError):
        assert one_line(value)
        return
    assert grammatical
    assert timedelta(0) <= value <= MAX_DURATION


@fuzz
@given(st.integers(min_value=0, max_value=MAX_MS))
def test_format_duration_is_read_back_exactly(millis: int) -> None:
    duration = timedelta(milliseconds=millis)

    assert parse_duration(format_duration(duration)) == duration


@fuzz
@given(storable, st.one_of(duration_like, st.text(max_size=40), duration_like.map("+".__add__)))
@example(LATEST_TIME - timedelta(days=1), "+520w")
@example(datetime(2026, 1, 1, tzinfo=UTC), "9999-12-31T23:00:00-05:00")
@example(datetime(2026, 1, 1, tzinfo=UTC), "2026-12-01T10:00")
@example(datetime(2026, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00+00:00")
def test_any_text_is_a_storable_utc_time_or_a_one_line_error(now: datetime, text: str) -> None:
    value = attempt(lambda t: parse_time(t, now=now), text)
    if isinstance(value, ValidationError):
        assert one_line(value)
        return
    assert value.tzinfo is UTC
    assert EARLIEST_TIME <= value <= LATEST_TIME
    if text.startswith("+"):
        assert value == now + parse_duration(text[1:])


@fuzz
@given(
    storable,
    st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
    st.sampled_from(["seconds", "minutes", "microseconds"]),
)
def test_an_iso_time_with_a_zone_is_read_as_that_instant(
    instant: datetime, zone: timezone, timespec: str
) -> None:
    local = instant.astimezone(zone)
    if not EARLIEST_TIME <= local.replace(tzinfo=UTC) <= LATEST_TIME:
        return  # the local wall-clock time itself must stay within datetime's range
    text = local.isoformat(timespec=timespec)
    expected = local.replace(
        second=local.second if timespec != "minutes" else 0,
        microsecond=local.microsecond if timespec == "microseconds" else 0,
    )

    assert parse_time(text, now=EARLIEST_TIME) == expected


def test_the_documented_examples() -> None:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("0s") == timedelta(0)
    assert parse_time("+10m", now=now) == datetime(2026, 11, 30, 9, 10, tzinfo=UTC)
    assert parse_time("2026-12-01T10:00Z", now=now) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_time("2026-12-01T12:00+02:00", now=now) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(ValidationError, match="no time zone"):
        parse_time("2026-12-01T10:00", now=now)


@fuzz
@given(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(list(TaskStatus)).map(str.lower),
        st.sampled_from(["wait\u0131ng", "\ufb01led", "ERROR ", "Error", "DONE\x00"]),
    )
)
def test_a_status_name_is_read_case_insensitively_and_nothing_else(text: str) -> None:
    value = attempt(parse_status, text)

    if text.isascii() and text.upper() in TaskStatus.__members__:
        assert value is TaskStatus[text.upper()]
    else:
        assert isinstance(value, ValidationError)
        assert one_line(value)
        assert "\x00" not in str(value)

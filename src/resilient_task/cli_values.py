"""The values operators type on the ``tasks`` command line: durations, times, ids, names.

Each parser takes any string and returns a value or raises one-line
:class:`~resilient_task.errors.ValidationError` (the command then exits 2); nothing else
escapes, whatever the input (property-tested in ``tests/unit/test_cli_tasks_parsing.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from resilient_task.domain.requests import MAX_DURATION, require_time, version_problem
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import ValidationError
from resilient_task.logtext import loggable
from resilient_task.ports.task_queries import MAX_LIST_LIMIT

__all__ = [
    "format_duration",
    "parse_duration",
    "parse_limit",
    "parse_status",
    "parse_task_id",
    "parse_time",
    "parse_version",
]

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w))+")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_MAX_TEXT = 100


def parse_duration(text: str) -> timedelta:
    """A duration such as ``10m``, ``90s``, ``1h30m``, ``2d`` or ``250ms`` (zero allowed).

    Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``; at most ten years in all.

    Raises:
        ValidationError: anything else, with a one-line reason.
    """
    if not isinstance(text, str):
        raise ValidationError(f"duration must be a str, got {type(text).__name__}")
    if len(text) > _MAX_TEXT or not _DURATION.fullmatch(text):
        raise ValidationError(
            f"bad duration {loggable(text, 40)!r}: use a number and a unit, "
            "e.g. 90s, 10m, 1h30m, 2d (units ms, s, m, h, d, w)"
        )
    millis = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if millis > MAX_DURATION // timedelta(milliseconds=1):
        raise ValidationError(f"duration {text} is longer than ten years")
    return timedelta(milliseconds=millis)


def format_duration(duration: timedelta) -> str:
    """``duration`` (not negative) as :func:`parse_duration` reads it: ``1h2m3s``, ``0s``."""
    millis = duration // timedelta(milliseconds=1)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, millis = divmod(millis, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_time(text: str, *, now: datetime) -> datetime:
    """``+10m`` (from ``now``) or an ISO 8601 time with a zone (``2026-12-01T10:00Z``), in UTC.

    Raises:
        ValidationError: not such a time, no time zone, or outside the storable range.
    """
    if not isinstance(text, str):
        raise ValidationError(f"time must be a str, got {type(text).__name__}")
    if text.startswith("+"):
        duration = parse_duration(text[1:])
        try:
            return require_time("time", now + duration).astimezone(UTC)
        except OverflowError:  # beyond year 9999
            raise ValidationError(f"time {text} is outside the storable range") from None
    if len(text) > _MAX_TEXT or not text.isascii():
        raise ValidationError(
            f"bad time {loggable(text, 40)!r}: use e.g. 2026-12-01T10:00Z or +10m"
        )
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"bad time {text!r}: use e.g. 2026-12-01T10:00Z, 2026-12-01T12:00+02:00 or +10m"
        ) from None
    if parsed.tzinfo is None:
        raise ValidationError(f"time {text!r} has no time zone: add Z (UTC) or +hh:mm")
    return require_time("time", parsed).astimezone(UTC)


def parse_status(text: str) -> TaskStatus:
    """A status name, case-insensitive (ASCII only): ``error`` is ERROR."""
    name = text.upper()
    if text.isascii() and name in TaskStatus.__members__:
        return TaskStatus[name]
    names = ", ".join(TaskStatus.__members__)
    raise ValidationError(f"unknown status {loggable(text, 40)!r}: use one of {names}")


def parse_task_id(text: str) -> UUID:
    """A task id: any form :class:`uuid.UUID` reads (canonical, 32 hex digits, ``urn:uuid:``)."""
    try:
        if len(text) <= _MAX_TEXT:
            return UUID(text)
    except ValueError:
        pass
    raise ValidationError(f"bad task id {loggable(text, 40)!r}: expected a uuid")


def _whole(text: str, option: str) -> int:
    if text.isascii() and text.isdigit() and len(text) <= 20:
        return int(text)
    raise ValidationError(f"{option} must be a whole number, got {loggable(text, 40)!r}")


def parse_limit(text: str) -> int:
    """``--limit``: a whole number from 1 to :data:`MAX_LIST_LIMIT`."""
    value = _whole(text, "--limit")
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise ValidationError(f"--limit must be from 1 to {MAX_LIST_LIMIT}, got {value}")
    return value


def parse_version(text: str) -> int:
    """``--version``: a whole number that can be a task version (0 to 2**63-1)."""
    value = _whole(text, "--version")
    problem = version_problem(value)
    if problem:
        raise ValidationError(f"--version {problem}")
    return value

"""Validated requests: what a caller asks for, checked before anything is stored.

The rules every store and every trigger decoder shares live here too, so that a value one
accepts the others accept as well:

- texts (type, sub-type, unique key): a non-blank ``str`` within its length, without NUL
  characters (PostgreSQL text cannot hold them) and without lone surrogates (not encodable as
  UTF-8): :func:`text_problem`, :func:`check_text`;
- times: timezone-aware and between :data:`EARLIEST_TIME` and :data:`LATEST_TIME`, one day
  inside Python's datetime range so that a stored time reads back in any session time zone
  (PostgreSQL would store year 10000, which Python cannot read): :func:`require_time`;
- durations: positive and at most :data:`MAX_DURATION`, so ``now + duration`` stays a
  representable time: :func:`require_duration`;
- versions: an ``int`` (never a ``bool``) from 0 to :data:`MAX_VERSION` (PostgreSQL bigint):
  :func:`version_problem`, :func:`require_version`.

Wrong types are :class:`ValidationError` too (like wrong values): one rule for all caller input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from resilient_task.errors import ValidationError

__all__ = [
    "BLANK",
    "EARLIEST_TIME",
    "LATEST_TIME",
    "MAX_DURATION",
    "MAX_PRIORITY",
    "MAX_TYPE_LENGTH",
    "MAX_UNIQUE_KEY_LENGTH",
    "MAX_VERSION",
    "MIN_PRIORITY",
    "AddTaskRequest",
    "check_text",
    "priority_problem",
    "require_aware",
    "require_duration",
    "require_time",
    "require_version",
    "text_problem",
    "version_problem",
]

MAX_TYPE_LENGTH = 250
"""The longest task type or sub-type, in characters."""
MAX_UNIQUE_KEY_LENGTH = 150
"""The longest unique key, in characters (the unique index has a size limit)."""
MIN_PRIORITY, MAX_PRIORITY = 0, 9
MAX_VERSION = 2**63 - 1
"""The largest task version: PostgreSQL's bigint."""
EARLIEST_TIME = datetime(1, 1, 2, tzinfo=UTC)
"""The earliest time a task may carry (one day after ``datetime.min``)."""
LATEST_TIME = datetime(9999, 12, 30, tzinfo=UTC)
"""The latest time a task may carry (a day before ``datetime.max``: readable in any zone)."""
BLANK = "must not be blank"
"""What :func:`text_problem` says of an empty or whitespace-only text."""
MAX_DURATION = timedelta(days=3650)
"""The longest duration a request or policy may give (ten years): ``now + it`` never overflows."""


@dataclass(frozen=True, slots=True)
class AddTaskRequest:
    """A task to add. Validated on construction; raises :class:`ValidationError`.

    Args:
        type: routes the task to a handler; non-blank, at most 250 characters.
        data: the payload, bytes (encode text yourself; ``str`` is rejected). The task
            service refuses payloads above ``TaskProperties.max_payload_bytes`` (1 MiB).
        task_id: your own id (idempotency key); a time-ordered UUIDv7 is made when None.
        sub_type: free-form refinement of ``type``; at most 250 characters.
        unique_key: deduplication key within ``type``; at most 150 characters.
        run_after_time: timezone-aware time to run at, from 0001-01-02 to 9999-12-30 UTC;
            None or a past time means now.
        expected_queue_time: how long the task may wait to be picked up before re-triggering;
            positive, at most :data:`MAX_DURATION` (ten years).
        priority: 0 (most urgent) to 9; default 5.

    Texts must not contain NUL characters or lone surrogates (PostgreSQL cannot store them).
    """

    type: str
    data: bytes = b""
    task_id: UUID | None = None
    sub_type: str | None = None
    unique_key: str | None = None
    run_after_time: datetime | None = None
    expected_queue_time: timedelta | None = None
    priority: int = 5

    def __post_init__(self) -> None:
        check_text("type", self.type, MAX_TYPE_LENGTH, required=True)
        check_text("sub_type", self.sub_type, MAX_TYPE_LENGTH, required=False)
        check_text("unique_key", self.unique_key, MAX_UNIQUE_KEY_LENGTH, required=False)
        if isinstance(self.data, bytearray | memoryview):
            object.__setattr__(self, "data", bytes(self.data))
        if not isinstance(self.data, bytes):
            raise ValidationError(
                f"data must be bytes, got {type(self.data).__name__}"
                + (" (encode text, e.g. data=text.encode())" if isinstance(self.data, str) else "")
            )
        if self.task_id is not None and not isinstance(self.task_id, UUID):
            raise ValidationError(f"task_id must be a uuid.UUID, got {type(self.task_id).__name__}")
        if self.run_after_time is not None:
            require_time("run_after_time", self.run_after_time)
        if self.expected_queue_time is not None:
            require_duration("expected_queue_time", self.expected_queue_time)
        problem = priority_problem(self.priority)
        if problem:
            raise ValidationError(f"priority {problem}")


def require_aware(name: str, value: object) -> datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise ValidationError."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}; "
            "use datetime.now(timezone.utc) or .replace(tzinfo=timezone.utc)"
        )
    return value


def require_time(name: str, value: object) -> datetime:
    """``value`` if it is aware and within [:data:`EARLIEST_TIME`, :data:`LATEST_TIME`].

    Raises:
        ValidationError: otherwise, e.g. 9999-12-31 23:00-05:00 (year 10000 in UTC).
    """
    time = require_aware(name, value)
    if not EARLIEST_TIME <= time <= LATEST_TIME:  # aware comparisons never overflow
        raise ValidationError(
            f"{name} {time.isoformat()} is outside the storable range "
            f"{EARLIEST_TIME.date()} to {LATEST_TIME.date()} (UTC)"
        )
    return time


def require_duration(name: str, value: object) -> timedelta:
    """``value`` if it is a positive ``timedelta`` of at most :data:`MAX_DURATION`."""
    if not isinstance(value, timedelta):
        raise ValidationError(f"{name} must be a datetime.timedelta, got {type(value).__name__}")
    if not timedelta(0) < value <= MAX_DURATION:
        raise ValidationError(f"{name} must be positive and at most {MAX_DURATION}, got {value}")
    return value


def version_problem(value: object) -> str | None:
    """Why ``value`` cannot be a task version, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an int, got {type(value).__name__}"
    if not 0 <= value <= MAX_VERSION:
        return f"must be from 0 to 2**63-1, got {value if abs(value) < 10**30 else 'a huge int'}"
    return None


def require_version(name: str, value: object) -> int:
    """``value`` if it is a valid task version (see :func:`version_problem`)."""
    problem = version_problem(value)
    if problem:
        raise ValidationError(f"{name} {problem}")
    return value  # type: ignore[return-value]  # checked by version_problem


def priority_problem(value: object) -> str | None:
    """Why ``value`` cannot be a priority (an int from 0 to 9), or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an int from 0 to 9, got {type(value).__name__}"
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        return f"must be an int from 0 to 9, got {value if abs(value) < 10**30 else 'a huge int'}"
    return None


def text_problem(value: object, max_length: int) -> str | None:
    """Why ``value`` cannot be a task type, sub-type or unique key, or None when it can."""
    if not isinstance(value, str):
        return f"must be a str, got {type(value).__name__}"
    if len(value) > max_length:
        return f"is {len(value)} characters long; the maximum is {max_length}"
    if not value or value.isspace():
        return BLANK
    if "\x00" in value:
        return "must not contain NUL characters (PostgreSQL text cannot hold them)"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "must be valid Unicode text: it contains a lone surrogate"
    return None


def check_text(name: str, value: object, max_length: int, *, required: bool) -> None:
    """Raise ValidationError unless ``value`` is a valid text (None allowed if not required)."""
    if value is None and not required:
        return
    problem = text_problem(value, max_length)
    if problem is None:
        return
    if problem == BLANK:
        problem = (
            "is required and must not be blank"
            if required
            else ("must not be blank (omit it or pass None)")
        )
    raise ValidationError(f"{name} {problem}")

"""Validated requests: what a caller asks for, checked before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from resilient_task.errors import ValidationError

__all__ = [
    "MAX_TYPE_LENGTH",
    "MAX_UNIQUE_KEY_LENGTH",
    "AddTaskRequest",
    "require_aware",
]

MAX_TYPE_LENGTH = 250
MAX_UNIQUE_KEY_LENGTH = 150
MIN_PRIORITY, MAX_PRIORITY = 0, 9


@dataclass(frozen=True, slots=True)
class AddTaskRequest:
    """A task to add. Validated on construction; raises :class:`ValidationError`.

    Args:
        type: routes the task to a handler; non-empty, at most 250 characters.
        data: the payload, bytes (encode text yourself; ``str`` is rejected).
        task_id: your own id (idempotency key); a time-ordered UUIDv7 is made when None.
        sub_type: free-form refinement of ``type``.
        unique_key: deduplication key within ``type``; at most 150 characters.
        run_after_time: UTC-aware time to run at; None or a past time means now.
        expected_queue_time: how long the task may wait to be picked up before re-triggering.
        priority: 0 (most urgent) to 9; default 5.
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
        _check_text("type", self.type, MAX_TYPE_LENGTH, required=True)
        _check_text("sub_type", self.sub_type, MAX_TYPE_LENGTH, required=False)
        _check_text("unique_key", self.unique_key, MAX_UNIQUE_KEY_LENGTH, required=False)
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
            require_aware("run_after_time", self.run_after_time)
        if self.expected_queue_time is not None and (
            not isinstance(self.expected_queue_time, timedelta)
            or self.expected_queue_time <= timedelta(0)
        ):
            raise ValidationError(
                "expected_queue_time must be a positive timedelta, "
                f"got {self.expected_queue_time!r}"
            )
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY
        ):
            raise ValidationError(f"priority must be an int from 0 to 9, got {self.priority!r}")


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


def _check_text(name: str, value: object, max_length: int, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(
            f"{name} is required and must not be blank"
            if required
            else f"{name} must not be blank (omit it or pass None)"
        )
    if len(value) > max_length:
        raise ValidationError(
            f"{name} is {len(value)} characters long; the maximum is {max_length}"
        )
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain NUL characters")

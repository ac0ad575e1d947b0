"""The task value and the one lifecycle table every status change obeys.

Every transition is a method returning a new :class:`Task` with ``version + 1``; the store then
writes it only where the stored version still equals the old one (compare-and-set). A transition
not in :data:`TRANSITIONS` raises :class:`~resilient_task.errors.InvalidTransitionError`.
Time is always passed in (``now=``); the domain never reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from uuid import UUID

from resilient_task.errors import InvalidTransitionError, ValidationError

__all__ = [
    "FINAL_STATUSES",
    "TRANSITIONS",
    "BaseTask",
    "Task",
    "TaskStatus",
    "Transition",
    "status_of",
]

MAX_ERROR_LENGTH = 4000
MAX_TRACEBACK_LENGTH = 8192
"""A stored traceback keeps at most this many characters: its start and its end, which name
the exception, with a marker line saying how much of the middle was cut."""


class _Keep(enum.Enum):
    """Marks a field a transition leaves as it is."""

    KEEP = enum.auto()


_KEEP = _Keep.KEEP


class TaskStatus(enum.StrEnum):
    """Where a task is in its lifecycle. Stored by name, readable with plain SQL."""

    WAITING = "WAITING"
    """Due later (``next_event_time`` is the run time)."""
    SUBMITTED = "SUBMITTED"
    """Triggered; ``next_event_time`` is the deadline to be picked up before re-triggering."""
    PROCESSING = "PROCESSING"
    """A node runs it; ``next_event_time`` is the deadline after which the node is presumed dead."""
    DONE = "DONE"
    """Finished successfully."""
    ERROR = "ERROR"
    """Gave up (retries or recoveries exhausted, no handler); waits for an operator."""
    FAILED = "FAILED"
    """Acknowledged by an operator as failed; final."""
    CANCELLED = "CANCELLED"
    """Cancelled before it ran; final."""

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus:
        """``TaskStatus("BOGUS")`` raises ValidationError (a ValueError) naming the statuses.

        So every store refuses an unknown status filter the same way, instead of one
        matching nothing and another failing in its driver.
        """
        names = ", ".join(cls.__members__)
        try:
            shown = repr(value)[:40]  # repr escapes control characters
        except Exception:  # a huge int, an object whose __repr__ raises
            shown = type(value).__name__
        raise ValidationError(f"status must be one of {names}, got {shown}")


FINAL_STATUSES = frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED})


def status_of(value: object) -> TaskStatus:
    """``value`` as a TaskStatus: a member or a member's name; else ValidationError.

    Unlike ``TaskStatus(value)``, an unhashable value (a list) is a ValidationError too.
    """
    if isinstance(value, TaskStatus):
        return value
    if not isinstance(value, str):
        names = ", ".join(TaskStatus.__members__)
        raise ValidationError(f"status must be one of {names}, got {type(value).__name__}")
    return TaskStatus(value)


class Transition(enum.StrEnum):
    """Named status changes; see :data:`TRANSITIONS` for what each allows."""

    SUBMIT = "submit"
    RESUBMIT = "resubmit"
    GRAB = "grab"
    COMPLETE = "complete"
    SCHEDULE = "schedule"
    RECOVER = "recover"
    MARK_ERROR = "mark_error"
    MARK_FAILED = "mark_failed"
    RESUME = "resume"
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"


_S = TaskStatus
TRANSITIONS: dict[Transition, tuple[frozenset[TaskStatus], TaskStatus]] = {
    # transition: (allowed from, to)
    Transition.SUBMIT: (frozenset({_S.WAITING}), _S.SUBMITTED),
    Transition.RESUBMIT: (frozenset({_S.SUBMITTED}), _S.SUBMITTED),
    Transition.GRAB: (frozenset({_S.SUBMITTED}), _S.PROCESSING),
    Transition.COMPLETE: (frozenset({_S.PROCESSING}), _S.DONE),
    Transition.SCHEDULE: (frozenset({_S.PROCESSING}), _S.WAITING),
    Transition.RECOVER: (frozenset({_S.PROCESSING}), _S.SUBMITTED),
    Transition.MARK_ERROR: (frozenset({_S.SUBMITTED, _S.PROCESSING}), _S.ERROR),
    Transition.MARK_FAILED: (frozenset({_S.PROCESSING, _S.ERROR}), _S.FAILED),
    Transition.RESUME: (
        frozenset({_S.WAITING, _S.SUBMITTED, _S.PROCESSING, _S.ERROR}),
        _S.SUBMITTED,
    ),
    Transition.RESCHEDULE: (frozenset({_S.WAITING}), _S.WAITING),
    Transition.CANCEL: (frozenset({_S.WAITING}), _S.CANCELLED),
}
"""The lifecycle table: transition -> (statuses it may start from, status it leads to)."""


@dataclass(frozen=True, slots=True)
class BaseTask:
    """What a trigger carries and a handler's predicate sees: identity, version and routing."""

    id: UUID
    version: int
    type: str
    sub_type: str | None = None
    priority: int = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A stored task. Immutable: transitions return a new value with ``version + 1``.

    Attributes:
        next_event_time: the run time (WAITING), the pick-up deadline (SUBMITTED), the
            processing deadline (PROCESSING) or the time the task reached ERROR or a final status.
        processing_tries_count: how many times a handler started on it (the grab counts).
        recovery_count: how many times it was recovered from PROCESSING after its deadline.
        processing_node: the node that grabbed it last.
        last_error: why the last attempt failed, or why it is in ERROR.
        last_traceback: the formatted traceback of the failure ``last_error`` describes, when
            there was one (at most :data:`MAX_TRACEBACK_LENGTH` characters); it is replaced or
            cleared whenever ``last_error`` is.
    """

    id: UUID
    type: str
    data: bytes
    status: TaskStatus
    next_event_time: datetime
    created_at: datetime
    updated_at: datetime
    version: int = 0
    sub_type: str | None = None
    priority: int = 5
    unique_key: str | None = None
    processing_tries_count: int = 0
    recovery_count: int = 0
    processing_node: str | None = None
    last_error: str | None = None
    last_traceback: str | None = None

    @property
    def base(self) -> BaseTask:
        """The trigger-sized view of this task."""
        return BaseTask(self.id, self.version, self.type, self.sub_type, self.priority)

    def _to(
        self,
        transition: Transition,
        *,
        now: datetime,
        next_event_time: datetime,
        processing_tries_count: int | _Keep = _KEEP,
        recovery_count: int | _Keep = _KEEP,
        processing_node: str | _Keep | None = _KEEP,
        last_error: str | _Keep | None = _KEEP,
        last_traceback: str | _Keep | None = _KEEP,
    ) -> Task:
        allowed, target = TRANSITIONS[transition]
        if self.status not in allowed:
            raise InvalidTransitionError(transition.value, self.status, self.id)
        # Built slot by slot rather than through __init__: a frozen dataclass's __init__ sets
        # each field with object.__setattr__, and dataclasses.replace costs twice that again;
        # the executor makes two transitions per task. The result is an ordinary frozen Task
        # (a test checks that each transition changes only its own fields).
        return _build(
            (
                self.id,
                self.type,
                self.data,
                target,
                next_event_time,
                self.created_at,
                now,
                self.version + 1,
                self.sub_type,
                self.priority,
                self.unique_key,
                self.processing_tries_count
                if processing_tries_count is _KEEP
                else processing_tries_count,
                self.recovery_count if recovery_count is _KEEP else recovery_count,
                self.processing_node if processing_node is _KEEP else processing_node,
                self.last_error if last_error is _KEEP else last_error,
                self.last_traceback if last_traceback is _KEEP else last_traceback,
            )
        )

    def submit(self, *, now: datetime, deadline: datetime) -> Task:
        """WAITING -> SUBMITTED: due; must be picked up before ``deadline``."""
        return self._to(Transition.SUBMIT, now=now, next_event_time=deadline)

    def resubmit(self, *, now: datetime, deadline: datetime) -> Task:
        """SUBMITTED -> SUBMITTED: not picked up in time; re-trigger with a new deadline."""
        return self._to(Transition.RESUBMIT, now=now, next_event_time=deadline)

    def grab(self, *, node_id: str, now: datetime, deadline: datetime) -> Task:
        """SUBMITTED -> PROCESSING on ``node_id``, counting one more try."""
        return self._to(
            Transition.GRAB,
            now=now,
            next_event_time=deadline,
            processing_node=node_id,
            processing_tries_count=self.processing_tries_count + 1,
        )

    def complete(self, *, now: datetime) -> Task:
        """PROCESSING -> DONE."""
        return self._to(
            Transition.COMPLETE, now=now, next_event_time=now, last_error=None, last_traceback=None
        )

    def schedule(
        self,
        *,
        now: datetime,
        run_at: datetime,
        error: str | None = None,
        reset_tries: bool = False,
        traceback: str | None = None,
    ) -> Task:
        """PROCESSING -> WAITING: retry after a failure, or repeat (COMMIT_AND_RETRY).

        ``traceback`` is the failure's formatted traceback, stored (bounded) next to ``error``.
        """
        return self._to(
            Transition.SCHEDULE,
            now=now,
            next_event_time=run_at,
            last_error=_clip(error),
            last_traceback=_clip_traceback(traceback),
            processing_tries_count=0 if reset_tries else self.processing_tries_count,
        )

    def recover(self, *, now: datetime, deadline: datetime) -> Task:
        """PROCESSING -> SUBMITTED: its node missed the deadline; count one recovery."""
        return self._to(
            Transition.RECOVER,
            now=now,
            next_event_time=deadline,
            recovery_count=self.recovery_count + 1,
            last_error=self.last_error or "recovered after its processing deadline passed",
        )

    def mark_error(self, *, now: datetime, reason: str, traceback: str | None = None) -> Task:
        """SUBMITTED or PROCESSING -> ERROR, recording why; an operator must act.

        ``traceback`` is the failure's formatted traceback, stored (bounded) next to ``reason``.
        """
        return self._to(
            Transition.MARK_ERROR,
            now=now,
            next_event_time=now,
            last_error=_clip(reason),
            last_traceback=_clip_traceback(traceback),
        )

    def mark_failed(self, *, now: datetime, reason: str | None = None) -> Task:
        """ERROR (operator) or PROCESSING (stuck strategy) -> FAILED, final."""
        return self._to(
            Transition.MARK_FAILED,
            now=now,
            next_event_time=now,
            last_error=_clip(reason) if reason else self.last_error,
            last_traceback=None if reason else self.last_traceback,
        )

    def resume(self, *, now: datetime, deadline: datetime) -> Task:
        """Any non-final status -> SUBMITTED now (operator); recovery count starts again."""
        return self._to(Transition.RESUME, now=now, next_event_time=deadline, recovery_count=0)

    def reschedule(self, *, now: datetime, run_at: datetime) -> Task:
        """WAITING -> WAITING at another time (operator)."""
        return self._to(Transition.RESCHEDULE, now=now, next_event_time=run_at)

    def cancel(self, *, now: datetime) -> Task:
        """WAITING -> CANCELLED (operator), final."""
        return self._to(Transition.CANCEL, now=now, next_event_time=now)


_FIELDS = tuple(f.name for f in fields(Task))
_SETTERS = tuple(getattr(Task, name).__set__ for name in _FIELDS)  # the slots' own setters
_new = object.__new__


# One name per field, in field order (a field added to Task fails this unpacking at import).
(_s0, _s1, _s2, _s3, _s4, _s5, _s6, _s7, _s8, _s9, _s10, _s11, _s12, _s13, _s14, _s15) = _SETTERS


def _build(values: tuple[object, ...]) -> Task:
    """A Task of ``values``, in field order, without running ``__init__`` (see ``Task._to``).

    Written out slot by slot: a loop over ``zip(_SETTERS, values)`` costs twice as much.
    """
    task: Task = _new(Task)
    _s0(task, values[0])
    _s1(task, values[1])
    _s2(task, values[2])
    _s3(task, values[3])
    _s4(task, values[4])
    _s5(task, values[5])
    _s6(task, values[6])
    _s7(task, values[7])
    _s8(task, values[8])
    _s9(task, values[9])
    _s10(task, values[10])
    _s11(task, values[11])
    _s12(task, values[12])
    _s13(task, values[13])
    _s14(task, values[14])
    _s15(task, values[15])
    return task


def _clip(text: str | None) -> str | None:
    """An error text every store can hold: cut to MAX_ERROR_LENGTH, no NUL, no lone surrogate.

    (PostgreSQL text refuses both; an exception message may carry either.)
    """
    if text is None:
        return None
    text = _storable(text)
    if len(text) <= MAX_ERROR_LENGTH:
        return text
    return text[: MAX_ERROR_LENGTH - 3] + "..."


def _clip_traceback(text: str | None) -> str | None:
    """A traceback every store can hold: no NUL, no lone surrogate, at most MAX_TRACEBACK_LENGTH.

    A longer one keeps its first quarter and its end (the innermost frames and the exception
    line), cut at line breaks where there are some, with a marker line in between saying how
    many characters were left out. An empty text is no traceback (None).
    """
    if not text:
        return None
    text = _storable(text)
    if len(text) <= MAX_TRACEBACK_LENGTH:
        return text
    room = MAX_TRACEBACK_LENGTH - 60  # the marker line fits in what is left
    head_end = room // 4
    tail_start = len(text) - (room - head_end)
    # Prefer whole lines: end the head after a line break, start the tail after one.
    newline = text.rfind("\n", 0, head_end)
    if newline > head_end // 2:
        head_end = newline + 1
    newline = text.find("\n", tail_start)
    if newline != -1 and newline < tail_start + (room - head_end) // 2:
        tail_start = newline + 1
    head = text[:head_end]
    marker = f"[... {tail_start - head_end} characters cut ...]\n"
    if not head.endswith("\n"):
        marker = "\n" + marker
    return head + marker + text[tail_start:]


def _storable(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped visibly (PostgreSQL text refuses both)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode()
    return text

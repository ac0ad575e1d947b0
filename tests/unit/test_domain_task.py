"""The task lifecycle: one table decides every status change, and each change bumps the version."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import MISSING, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_task.domain import FINAL_STATUSES, TRANSITIONS, Task, TaskStatus, Transition
from resilient_task.domain.task import MAX_ERROR_LENGTH, MAX_TRACEBACK_LENGTH
from resilient_task.errors import InvalidTransitionError, ValidationError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
S = TaskStatus


def a_task(status: TaskStatus = S.WAITING, **changes: Any) -> Task:
    created = NOW - timedelta(hours=1)
    task = Task(
        id=uuid4(),
        type="payment",
        data=b'{"amount": 10}',
        status=status,
        next_event_time=created,
        created_at=created,
        updated_at=created,
    )
    return replace(task, **changes)


# transition -> (how to apply it, the next_event_time it sets)
APPLY: dict[Transition, tuple[Callable[[Task], Task], datetime]] = {
    Transition.SUBMIT: (lambda t: t.submit(now=NOW, deadline=LATER), LATER),
    Transition.RESUBMIT: (lambda t: t.resubmit(now=NOW, deadline=LATER), LATER),
    Transition.GRAB: (lambda t: t.grab(node_id="node-1", now=NOW, deadline=LATER), LATER),
    Transition.COMPLETE: (lambda t: t.complete(now=NOW), NOW),
    Transition.SCHEDULE: (lambda t: t.schedule(now=NOW, run_at=LATER, error="boom"), LATER),
    Transition.RECOVER: (lambda t: t.recover(now=NOW, deadline=LATER), LATER),
    Transition.MARK_ERROR: (lambda t: t.mark_error(now=NOW, reason="no handler"), NOW),
    Transition.MARK_FAILED: (lambda t: t.mark_failed(now=NOW, reason="given up"), NOW),
    Transition.RESUME: (lambda t: t.resume(now=NOW, deadline=LATER), LATER),
    Transition.RESCHEDULE: (lambda t: t.reschedule(now=NOW, run_at=LATER), LATER),
    Transition.CANCEL: (lambda t: t.cancel(now=NOW), NOW),
}

EVERY_PAIR = list(itertools.product(TaskStatus, Transition))


def test_the_table_names_every_transition_and_each_is_a_method_of_task() -> None:
    assert set(TRANSITIONS) == set(Transition) == set(APPLY)
    for transition in Transition:
        assert callable(getattr(Task, transition.value))


def test_the_lifecycle_table_is_the_documented_one() -> None:
    table = {transition: (set(allowed), to) for transition, (allowed, to) in TRANSITIONS.items()}
    assert table == {
        Transition.SUBMIT: ({S.WAITING}, S.SUBMITTED),
        Transition.RESUBMIT: ({S.SUBMITTED}, S.SUBMITTED),
        Transition.GRAB: ({S.SUBMITTED}, S.PROCESSING),
        Transition.COMPLETE: ({S.PROCESSING}, S.DONE),
        Transition.SCHEDULE: ({S.PROCESSING}, S.WAITING),
        Transition.RECOVER: ({S.PROCESSING}, S.SUBMITTED),
        Transition.MARK_ERROR: ({S.SUBMITTED, S.PROCESSING}, S.ERROR),
        Transition.MARK_FAILED: ({S.PROCESSING, S.ERROR}, S.FAILED),
        Transition.RESUME: ({S.WAITING, S.SUBMITTED, S.PROCESSING, S.ERROR}, S.SUBMITTED),
        Transition.RESCHEDULE: ({S.WAITING}, S.WAITING),
        Transition.CANCEL: ({S.WAITING}, S.CANCELLED),
    }


@pytest.mark.parametrize(("status", "transition"), EVERY_PAIR)
@settings(max_examples=15)
@given(version=st.integers(0, 2**62), tries=st.integers(0, 1000), recoveries=st.integers(0, 1000))
def test_a_transition_succeeds_exactly_when_the_table_allows_it_from_the_status(
    status: TaskStatus, transition: Transition, version: int, tries: int, recoveries: int
) -> None:
    task = a_task(status, version=version, processing_tries_count=tries, recovery_count=recoveries)
    apply, expected_event_time = APPLY[transition]
    allowed, target = TRANSITIONS[transition]

    if status not in allowed:
        with pytest.raises(InvalidTransitionError) as raised:
            apply(task)
        assert (raised.value.action, raised.value.status) == (transition.value, status)
        assert raised.value.task_id == task.id
        return

    changed = apply(task)
    assert changed.version == version + 1
    assert changed.status is target
    assert changed.updated_at == NOW
    assert changed.next_event_time == expected_event_time
    assert (changed.id, changed.type, changed.data, changed.created_at) == (
        task.id,
        task.type,
        task.data,
        task.created_at,
    )


# The fields each transition may change besides status, version, next_event_time, updated_at.
OWN_FIELDS: dict[Transition, set[str]] = {
    Transition.SUBMIT: set(),
    Transition.RESUBMIT: set(),
    Transition.GRAB: {"processing_node", "processing_tries_count"},
    Transition.COMPLETE: {"last_error", "last_traceback"},
    Transition.SCHEDULE: {"last_error", "last_traceback", "processing_tries_count"},
    Transition.RECOVER: {"recovery_count", "last_error"},
    Transition.MARK_ERROR: {"last_error", "last_traceback"},
    Transition.MARK_FAILED: {"last_error", "last_traceback"},
    Transition.RESUME: {"recovery_count"},
    Transition.RESCHEDULE: set(),
    Transition.CANCEL: set(),
}


def every_field_set(status: TaskStatus) -> Task:
    """A task whose every field differs from its default, whatever fields Task has."""

    def other_than(default: object) -> object:
        if default is None:
            return "set"
        if isinstance(default, int):
            return default + 3
        raise AssertionError(f"teach this test a non-default value for {default!r}")

    defaults = {f.name: f.default for f in fields(Task) if f.default is not MISSING}
    return a_task(status, **{name: other_than(value) for name, value in defaults.items()})


@pytest.mark.parametrize("transition", list(Transition))
def test_a_transition_copies_every_field_it_does_not_own(transition: Transition) -> None:
    apply, _ = APPLY[transition]
    for status in TRANSITIONS[transition][0]:
        task = every_field_set(status)
        changed = apply(task)
        differ = {f.name for f in fields(Task) if getattr(changed, f.name) != getattr(task, f.name)}
        assert (
            differ
            <= {"status", "version", "next_event_time", "updated_at"} | OWN_FIELDS[transition]
        )


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_final_statuses_are_left_by_no_transition(status: TaskStatus) -> None:
    assert [t for t, (allowed, _) in TRANSITIONS.items() if status in allowed] == []
    for apply, _ in APPLY.values():
        with pytest.raises(InvalidTransitionError):
            apply(a_task(status))


def test_error_waits_for_an_operator_to_resume_or_fail_the_task() -> None:
    leaving_error = {t for t, (allowed, _) in TRANSITIONS.items() if S.ERROR in allowed}
    assert leaving_error == {Transition.RESUME, Transition.MARK_FAILED}
    assert S.ERROR not in FINAL_STATUSES


def test_invalid_transition_error_names_the_action_the_status_and_the_task() -> None:
    task = a_task(S.WAITING)
    with pytest.raises(InvalidTransitionError) as raised:
        task.complete(now=NOW)
    message = str(raised.value)
    assert "complete" in message
    assert "WAITING" in message
    assert str(task.id) in message


@given(tries=st.integers(0, 10**6), recoveries=st.integers(0, 10**6))
def test_grab_counts_one_more_try_and_records_the_node(tries: int, recoveries: int) -> None:
    task = a_task(S.SUBMITTED, processing_tries_count=tries, recovery_count=recoveries)
    grabbed = task.grab(node_id="node-7", now=NOW, deadline=LATER)
    assert grabbed.processing_tries_count == tries + 1
    assert grabbed.recovery_count == recoveries
    assert grabbed.processing_node == "node-7"


@given(tries=st.integers(0, 10**6), recoveries=st.integers(0, 10**6))
def test_recover_counts_one_more_recovery_and_keeps_the_tries(tries: int, recoveries: int) -> None:
    task = a_task(S.PROCESSING, processing_tries_count=tries, recovery_count=recoveries)
    recovered = task.recover(now=NOW, deadline=LATER)
    assert recovered.recovery_count == recoveries + 1
    assert recovered.processing_tries_count == tries


def test_recover_explains_itself_unless_an_error_is_already_recorded() -> None:
    assert a_task(S.PROCESSING).recover(now=NOW, deadline=LATER).last_error
    earlier = a_task(S.PROCESSING, last_error="timeout talking to bank")
    assert earlier.recover(now=NOW, deadline=LATER).last_error == "timeout talking to bank"


@pytest.mark.parametrize("status", [S.WAITING, S.SUBMITTED, S.PROCESSING, S.ERROR])
@given(tries=st.integers(0, 1000), recoveries=st.integers(0, 1000))
def test_resume_starts_the_recovery_count_again_and_keeps_the_tries(
    status: TaskStatus, tries: int, recoveries: int
) -> None:
    task = a_task(status, processing_tries_count=tries, recovery_count=recoveries)
    resumed = task.resume(now=NOW, deadline=LATER)
    assert resumed.recovery_count == 0
    assert resumed.processing_tries_count == tries


def test_schedule_keeps_the_tries_and_records_the_error() -> None:
    task = a_task(S.PROCESSING, processing_tries_count=2)
    scheduled = task.schedule(now=NOW, run_at=LATER, error="boom")
    assert scheduled.processing_tries_count == 2
    assert scheduled.last_error == "boom"


def test_schedule_with_reset_tries_starts_counting_again() -> None:
    task = a_task(S.PROCESSING, processing_tries_count=2)
    assert task.schedule(now=NOW, run_at=LATER, reset_tries=True).processing_tries_count == 0


def test_complete_forgets_the_last_error() -> None:
    task = a_task(S.PROCESSING, last_error="first attempt failed")
    assert task.complete(now=NOW).last_error is None


def test_mark_failed_without_a_reason_keeps_the_last_error() -> None:
    task = a_task(S.ERROR, last_error="retries exhausted")
    assert task.mark_failed(now=NOW).last_error == "retries exhausted"
    assert task.mark_failed(now=NOW, reason="operator: refunded").last_error == "operator: refunded"


def test_long_errors_are_clipped_to_the_maximum_length() -> None:
    task = a_task(S.PROCESSING)
    errored = task.mark_error(now=NOW, reason="x" * (MAX_ERROR_LENGTH * 2))
    assert errored.last_error is not None
    assert len(errored.last_error) == MAX_ERROR_LENGTH
    assert errored.last_error.endswith("...")
    exact = "y" * MAX_ERROR_LENGTH
    assert task.mark_error(now=NOW, reason=exact).last_error == exact


def a_traceback(frames: int) -> str:
    lines = ["Traceback (most recent call last):\n"]
    for n in range(frames):
        lines.append(f'  File "/app/handlers.py", line {n}, in step_{n}\n    call_{n}()\n')
    lines.append("ValueError: card declined\n")
    return "".join(lines)


def test_the_traceback_goes_and_comes_with_the_error_it_explains() -> None:
    trace = a_traceback(3)
    processing = a_task(S.PROCESSING)
    retried = processing.schedule(now=NOW, run_at=LATER, error="boom", traceback=trace)
    assert (retried.last_error, retried.last_traceback) == ("boom", trace)
    errored = processing.mark_error(now=NOW, reason="gave up", traceback=trace)
    assert (errored.last_error, errored.last_traceback) == ("gave up", trace)
    # A new error without a traceback does not keep the old error's one.
    failing = a_task(S.PROCESSING, last_error="old", last_traceback=trace)
    assert failing.mark_error(now=NOW, reason="no handler").last_traceback is None
    assert failing.schedule(now=NOW, run_at=LATER).last_traceback is None
    assert failing.complete(now=NOW).last_traceback is None
    # A recovery keeps the error it found, and so its traceback.
    assert failing.recover(now=NOW, deadline=LATER).last_traceback == trace
    erred = a_task(S.ERROR, last_error="old", last_traceback=trace)
    assert erred.mark_failed(now=NOW).last_traceback == trace
    assert erred.mark_failed(now=NOW, reason="operator: refunded").last_traceback is None
    assert processing.mark_error(now=NOW, reason="x", traceback="").last_traceback is None


def test_a_long_traceback_keeps_its_start_and_its_end_with_a_marker_between() -> None:
    trace = a_traceback(2000)
    assert len(trace) > 10 * MAX_TRACEBACK_LENGTH
    kept = a_task(S.PROCESSING).mark_error(now=NOW, reason="x", traceback=trace).last_traceback
    assert kept is not None
    assert MAX_TRACEBACK_LENGTH * 0.9 < len(kept) <= MAX_TRACEBACK_LENGTH
    assert kept.startswith("Traceback (most recent call last):\n")
    assert kept.endswith("call_1999()\nValueError: card declined\n")
    marker = re.search(r"^\[\.\.\. (\d+) characters cut \.\.\.\]\n", kept, re.MULTILINE)
    assert marker is not None
    head, tail = kept[: marker.start()], kept[marker.end() :]
    assert trace.startswith(head)
    assert head.endswith("()\n")  # cut after a whole line
    assert trace.endswith(tail)
    assert trace[-len(tail) - 1] == "\n"  # from the start of a line
    assert len(head) + int(marker.group(1)) + len(tail) == len(trace)
    exact = "y" * MAX_TRACEBACK_LENGTH
    assert a_task(S.PROCESSING).mark_error(now=NOW, reason="x", traceback=exact).last_traceback == (
        exact
    )


@given(
    st.text(max_size=300)
    # Long ones built by repetition: drawing 8,000 characters one by one is too slow.
    | st.builds(lambda piece, n: piece * n, st.text(min_size=1, max_size=64), st.integers(1, 600))
)
@settings(max_examples=40)
def test_every_recorded_traceback_is_storable_and_bounded(trace: str) -> None:
    task = a_task(S.PROCESSING)
    for kept in (
        task.mark_error(now=LATER, reason="x", traceback=trace).last_traceback,
        task.schedule(now=LATER, run_at=LATER, error="x", traceback=trace).last_traceback,
    ):
        if not trace:
            assert kept is None
            continue
        assert kept is not None
        assert "\x00" not in kept
        kept.encode()  # no lone surrogate
        assert len(kept) <= MAX_TRACEBACK_LENGTH


def test_base_carries_identity_version_and_routing() -> None:
    task = a_task(S.SUBMITTED, version=4, sub_type="card", priority=1)
    base = task.base
    assert (base.id, base.version, base.type, base.sub_type, base.priority) == (
        task.id,
        4,
        "payment",
        "card",
        1,
    )


def test_a_task_runs_through_its_happy_path_one_version_at_a_time() -> None:
    task = a_task(S.WAITING)
    submitted = task.submit(now=NOW, deadline=LATER)
    grabbed = submitted.grab(node_id="node-1", now=NOW, deadline=LATER)
    done = grabbed.complete(now=NOW)
    assert [t.status for t in (task, submitted, grabbed, done)] == [
        S.WAITING,
        S.SUBMITTED,
        S.PROCESSING,
        S.DONE,
    ]
    assert [t.version for t in (task, submitted, grabbed, done)] == [0, 1, 2, 3]


@given(st.text(max_size=MAX_ERROR_LENGTH + 50))
def test_every_recorded_error_text_is_storable_text(reason: str) -> None:
    # An exception message may hold NUL or a lone surrogate; PostgreSQL's text holds neither.
    failed = a_task(S.PROCESSING).mark_error(now=LATER, reason=reason)
    retried = a_task(S.PROCESSING).schedule(now=LATER, run_at=LATER, error=reason)
    for text in (failed.last_error, retried.last_error):
        assert text is not None
        assert "\x00" not in text
        text.encode()  # no lone surrogate
        assert len(text) <= MAX_ERROR_LENGTH


def test_nul_and_lone_surrogates_in_an_error_are_escaped_visibly() -> None:
    task = a_task(S.PROCESSING).mark_error(now=LATER, reason=f"bad\x00byte {chr(0xD800)}")
    assert task.last_error == "bad\\x00byte \\ud800"


def test_an_unknown_status_name_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="status must be one of WAITING, SUBMITTED"):
        TaskStatus("BOGUS")
    assert TaskStatus("DONE") is TaskStatus.DONE

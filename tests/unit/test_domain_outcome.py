"""The outcome decision and the backoff schedule: pure functions, checked as properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_task.domain import (
    ExponentialRetryPolicy,
    NoRetryPolicy,
    ProcessResult,
    Task,
    TaskStatus,
)
from resilient_task.domain.backoff import capped_exponential
from resilient_task.domain.outcome import OutcomeKind, decide, describe, unhandled
from resilient_task.domain.policies import RetryPolicy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GRABBED = NOW - timedelta(seconds=3)


def processing(*, tries: int, last_error: str | None = None) -> Task:
    return Task(
        id=uuid4(),
        type="payment",
        data=b"x",
        status=TaskStatus.PROCESSING,
        next_event_time=NOW + timedelta(minutes=5),
        created_at=GRABBED,
        updated_at=GRABBED,
        version=3,
        processing_tries_count=tries,
        processing_node="node-1",
        last_error=last_error,
    )


class BrokenStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class BrokenEverythingError(BaseException):
    def __str__(self) -> str:
        raise BrokenStrError

    def __repr__(self) -> str:
        raise BrokenStrError


tries = st.integers(min_value=1, max_value=10_000)
policies: st.SearchStrategy[RetryPolicy] = st.one_of(
    st.builds(NoRetryPolicy, reset_tries_on_repeat=st.booleans()),
    st.builds(
        ExponentialRetryPolicy,
        delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)),
        multiplier=st.floats(min_value=1.0, max_value=10.0),
        max_count=st.integers(min_value=0, max_value=20),
        max_delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
        jitter=st.floats(min_value=0.0, max_value=1.0),
        reset_tries_on_repeat=st.booleans(),
    ),
)
exceptions = st.one_of(
    st.text(max_size=50).map(ValueError),
    st.just(BrokenStrError()),
    st.just(BrokenEverythingError()),
    st.just(KeyboardInterrupt()),
    st.just(ValueError()),
)
rands = st.floats(min_value=0.0, max_value=1.0)


def max_wait(policy: RetryPolicy) -> timedelta:
    return policy.max_delay if isinstance(policy, ExponentialRetryPolicy) else timedelta(0)


@given(policy=policies, n=tries)
def test_done_always_completes_the_task(policy: RetryPolicy, n: int) -> None:
    task = processing(tries=n, last_error="earlier failure")
    decision = decide(task, ProcessResult.DONE, policy, now=NOW)
    assert decision.kind is OutcomeKind.DONE
    assert decision.task.status is TaskStatus.DONE
    assert decision.task.last_error is None
    assert decision.task.version == task.version + 1
    assert not decision.delete


@given(policy=policies, n=tries)
def test_done_and_delete_completes_and_deletes(policy: RetryPolicy, n: int) -> None:
    decision = decide(processing(tries=n), ProcessResult.DONE_AND_DELETE, policy, now=NOW)
    assert decision.kind is OutcomeKind.DELETED
    assert decision.delete
    assert decision.task.status is TaskStatus.DONE


@given(policy=policies, n=tries, exc=exceptions, r=rands)
def test_a_failure_retries_within_the_policy_or_gives_up_naming_the_attempts(
    policy: RetryPolicy, n: int, exc: BaseException, r: float
) -> None:
    task = processing(tries=n)
    decision = decide(task, exc, policy, now=NOW, rand=lambda: r)
    new = decision.task
    assert new.processing_tries_count == n  # a retry keeps counting
    assert new.last_error is not None
    assert new.last_error.startswith(
        (type(exc).__name__, f"gave up after {n} attempt(s): {type(exc).__name__}")
    )
    if decision.kind is OutcomeKind.RETRIED:
        assert new.status is TaskStatus.WAITING
        assert NOW <= new.next_event_time <= NOW + max_wait(policy)
        assert isinstance(policy, ExponentialRetryPolicy)
        assert 1 <= n <= policy.max_count
    else:
        assert decision.kind is OutcomeKind.ERROR
        assert new.status is TaskStatus.ERROR
        assert new.last_error.startswith(f"gave up after {n} attempt(s): ")


@given(policy=policies, n=tries, r=rands)
def test_commit_and_retry_repeats_along_the_policy_without_an_error(
    policy: RetryPolicy, n: int, r: float
) -> None:
    decision = decide(
        processing(tries=n), ProcessResult.COMMIT_AND_RETRY, policy, now=NOW, rand=lambda: r
    )
    reset = policy.reset_tries_on_repeat
    if decision.kind is OutcomeKind.REPEATED:
        assert decision.task.status is TaskStatus.WAITING
        assert decision.task.last_error is None
        assert decision.task.processing_tries_count == (0 if reset else n)
        assert NOW <= decision.task.next_event_time <= NOW + max_wait(policy)
    else:  # the policy says stop: the repeating job is done
        assert decision.kind is OutcomeKind.DONE
        assert decision.task.status is TaskStatus.DONE


def test_reset_tries_on_repeat_plans_every_repeat_as_the_first_retry() -> None:
    policy = ExponentialRetryPolicy(
        delay=timedelta(seconds=5), multiplier=4, max_count=3, reset_tries_on_repeat=True
    )
    decision = decide(processing(tries=50), ProcessResult.COMMIT_AND_RETRY, policy, now=NOW)
    assert decision.kind is OutcomeKind.REPEATED
    assert decision.task.next_event_time == NOW + timedelta(seconds=5)
    assert decision.task.processing_tries_count == 0


def test_without_reset_a_repeat_past_max_count_completes() -> None:
    policy = ExponentialRetryPolicy(max_count=3)
    decision = decide(processing(tries=4), ProcessResult.COMMIT_AND_RETRY, policy, now=NOW)
    assert decision.kind is OutcomeKind.DONE


def test_the_reference_policy_retries_three_times_then_gives_up() -> None:
    policy = ExponentialRetryPolicy(delay=timedelta(seconds=5), multiplier=4, max_count=3)
    waits = []
    for n in (1, 2, 3):
        decision = decide(processing(tries=n), ValueError("boom"), policy, now=NOW)
        assert decision.kind is OutcomeKind.RETRIED
        assert decision.task.last_error == "ValueError: boom"
        waits.append(decision.task.next_event_time - NOW)
    assert waits == [timedelta(seconds=s) for s in (5, 20, 80)]
    final = decide(processing(tries=4), ValueError("boom"), policy, now=NOW)
    assert final.kind is OutcomeKind.ERROR
    assert final.task.last_error == "gave up after 4 attempt(s): ValueError: boom"


@given(exc=exceptions)
def test_describe_never_raises(exc: BaseException) -> None:
    text = describe(exc)
    assert text.startswith(type(exc).__name__)


def test_describe_says_when_the_message_could_not_be_read() -> None:
    assert (
        describe(BrokenStrError()) == "BrokenStrError (no message: str() of the exception raised)"
    )
    assert describe(ValueError()) == "ValueError"
    assert describe(BrokenEverythingError()).startswith("BrokenEverythingError (no message")


def test_an_unhandled_task_goes_to_error_naming_its_type() -> None:
    decision = unhandled(processing(tries=1), now=NOW)
    assert decision.kind is OutcomeKind.ERROR
    assert decision.task.last_error == "no handler accepts task type 'payment'"


# The backoff schedule


@given(
    first=st.floats(min_value=1e-6, max_value=1e6),
    multiplier=st.floats(min_value=1.0, max_value=100.0),
    cap=st.floats(min_value=1e-6, max_value=1e9),
    step=st.integers(min_value=0, max_value=100_000),
)
def test_backoff_grows_and_never_passes_its_cap(
    first: float, multiplier: float, cap: float, step: int
) -> None:
    wait = capped_exponential(step, first=first, multiplier=multiplier, cap=cap)
    following = capped_exponential(step + 1, first=first, multiplier=multiplier, cap=cap)
    assert 0 < wait <= cap
    assert wait <= following
    assert math.isfinite(wait)


@pytest.mark.parametrize(
    ("first", "cap", "expected"),
    [
        (0.05, 2.0, [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]),  # completion writes
        (0.1, 5.0, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]),  # triggerer reconnects
    ],
)
def test_backoff_doubles_from_first_up_to_cap(
    first: float, cap: float, expected: list[float]
) -> None:
    assert [capped_exponential(n, first=first, cap=cap) for n in range(8)] == pytest.approx(
        expected
    )


def test_backoff_without_a_first_wait_is_zero() -> None:
    assert capped_exponential(5, first=0.0, cap=10.0) == 0.0


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize("policy", [NoRetryPolicy(), ExponentialRetryPolicy()])
def test_a_raised_failure_keeps_its_traceback_next_to_its_error(policy: RetryPolicy) -> None:
    decision = decide(processing(tries=1), _raised(ValueError("boom")), policy, now=NOW)
    trace = decision.task.last_traceback
    assert trace is not None
    assert trace.startswith("Traceback (most recent call last):")
    assert "in _raised" in trace
    assert trace.rstrip().endswith("ValueError: boom")


def test_a_failure_never_raised_has_no_traceback_and_a_hostile_one_still_decides() -> None:
    policy = ExponentialRetryPolicy()
    made_up = decide(processing(tries=1), TimeoutError("too slow"), policy, now=NOW)
    assert made_up.task.last_traceback is None
    hostile = decide(processing(tries=1), _raised(BrokenEverythingError()), policy, now=NOW)
    assert hostile.kind is OutcomeKind.RETRIED
    assert (
        hostile.task.last_error
        == "BrokenEverythingError (no message: str() of the exception raised)"
    )


def test_a_success_clears_the_traceback_of_the_failure_before() -> None:
    failed = decide(
        processing(tries=1), _raised(ValueError("boom")), ExponentialRetryPolicy(), now=NOW
    )
    assert failed.task.last_traceback is not None
    regrabbed = failed.task.submit(now=NOW, deadline=NOW).grab(node_id="n", now=NOW, deadline=NOW)
    done = decide(regrabbed, ProcessResult.DONE, ExponentialRetryPolicy(), now=NOW)
    assert done.task.last_traceback is None

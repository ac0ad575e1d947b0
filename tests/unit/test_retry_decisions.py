"""Retries that see the failure: retry_on / give_up_on, RetryAfter, GiveUp, older policies.

The pure decision is checked as properties; the schedule a node really follows is checked on
the fake clock, attempt by attempt, against a model of the policy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_task import ProcessResult, TaskHandler, TaskStatus
from resilient_task.adapters.memory import FakeClock
from resilient_task.domain import ExponentialRetryPolicy, NoRetryPolicy, Task
from resilient_task.domain.outcome import OutcomeKind, decide
from resilient_task.domain.policies import AnyRetryPolicy, sees_errors
from resilient_task.errors import (
    ConfigurationError,
    GiveUp,
    ProcessingTimeoutError,
    RetryAfter,
    ValidationError,
)
from resilient_task.testing import run_until_idle
from tests.unit.helpers import FakeNode

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def processing(tries: int) -> Task:
    return Task(
        id=uuid4(),
        type="payment",
        data=b"x",
        status=TaskStatus.PROCESSING,
        next_event_time=NOW + timedelta(minutes=5),
        created_at=NOW - timedelta(seconds=3),
        updated_at=NOW - timedelta(seconds=3),
        version=3,
        processing_tries_count=tries,
        processing_node="node-1",
    )


class BankDownError(ConnectionError):
    """A subclass of a class in ``retry_on``."""


class BadAccountError(ValueError):
    """A subclass of a class in ``give_up_on``."""


RETRY_ON = (ConnectionError, TimeoutError)
GIVE_UP_ON = (ValueError,)
retryable = st.sampled_from(
    [ConnectionError("reset"), BankDownError("down"), TimeoutError(), ProcessingTimeoutError("t")]
)
fatal = st.sampled_from([ValueError("bad"), BadAccountError("closed")])
unlisted = st.sampled_from([RuntimeError("boom"), KeyError("k"), OSError("disk")])
tries = st.integers(min_value=1, max_value=50)
delays = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))
policies = st.builds(
    ExponentialRetryPolicy,
    delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=1)),
    multiplier=st.floats(min_value=1.0, max_value=4.0),
    max_count=st.integers(min_value=0, max_value=10),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    retry_on=st.just(RETRY_ON),
    give_up_on=st.just(GIVE_UP_ON),
)
rands = st.floats(min_value=0.0, max_value=1.0)


def decided(
    policy: AnyRetryPolicy, n: int, outcome: ProcessResult | BaseException, r: float = 0.5
) -> tuple[OutcomeKind, Task]:
    decision = decide(processing(n), outcome, policy, now=NOW, rand=lambda: r)
    return decision.kind, decision.task


@given(policy=policies, n=tries, exc=fatal)
def test_a_give_up_on_failure_is_error_at_once_whatever_the_tries_left(
    policy: ExponentialRetryPolicy, n: int, exc: BaseException
) -> None:
    kind, task = decided(policy, n, exc)
    assert (kind, task.status) == (OutcomeKind.ERROR, TaskStatus.ERROR)
    assert task.last_error is not None
    assert type(exc).__name__ in task.last_error


def test_give_up_on_wins_over_retry_on() -> None:
    policy = ExponentialRetryPolicy(retry_on=(OSError,), give_up_on=(BankDownError,))
    assert decided(policy, 1, BankDownError())[0] is OutcomeKind.ERROR
    assert decided(policy, 1, ConnectionError())[0] is OutcomeKind.RETRIED


@given(policy=policies, n=tries, exc=unlisted)
def test_a_failure_outside_retry_on_is_error_at_once(
    policy: ExponentialRetryPolicy, n: int, exc: BaseException
) -> None:
    assert decided(policy, n, exc)[0] is OutcomeKind.ERROR


@given(policy=policies, n=tries, exc=retryable, r=rands)
def test_a_retry_on_failure_and_its_subclasses_retry_exactly_max_count_times(
    policy: ExponentialRetryPolicy, n: int, exc: BaseException, r: float
) -> None:
    kind, task = decided(policy, n, exc, r)
    if n > policy.max_count:
        assert kind is OutcomeKind.ERROR
        return
    assert kind is OutcomeKind.RETRIED
    assert task.next_event_time == policy.next_run(processing(n), now=NOW, rand=lambda: r)


@given(policy=policies, n=tries, delay=delays, error_class=st.sampled_from([None, ValueError]))
def test_retry_after_runs_exactly_after_its_delay_within_max_count(
    policy: ExponentialRetryPolicy, n: int, delay: timedelta, error_class: type | None
) -> None:
    # RetryAfter is the processor's decision: neither give_up_on nor retry_on filter it out.
    outcome = RetryAfter(delay)
    kind, task = decided(policy, n, outcome)
    if n > policy.max_count:
        assert kind is OutcomeKind.ERROR
        assert task.last_error == f"gave up after {n} attempt(s): RetryAfter: retry after {delay}"
        return
    assert (kind, task.status) == (OutcomeKind.RETRIED, TaskStatus.WAITING)
    assert task.next_event_time == NOW + delay


@given(
    policy=st.one_of(policies, st.builds(NoRetryPolicy), st.just(ExponentialRetryPolicy())),
    n=tries,
)
def test_give_up_is_error_at_once_with_its_reason_whatever_the_policy(
    policy: AnyRetryPolicy, n: int
) -> None:
    try:
        raise GiveUp("card expired") from KeyError("card")
    except GiveUp as exc:
        outcome = exc
    kind, task = decided(policy, n, outcome)
    assert kind is OutcomeKind.ERROR
    assert task.last_error == f"gave up after {n} attempt(s): GiveUp: card expired"
    assert task.last_traceback is not None
    assert "KeyError: 'card'" in task.last_traceback  # the cause is kept


@given(n=tries)
def test_a_repeat_is_not_filtered_by_give_up_on(n: int) -> None:
    policy = ExponentialRetryPolicy(give_up_on=(BaseException,), max_count=100)
    kind, _ = decided(policy, min(n, 100), ProcessResult.COMMIT_AND_RETRY)
    assert kind is OutcomeKind.REPEATED


def test_retry_after_takes_seconds_and_refuses_out_of_range_delays() -> None:
    assert RetryAfter(1.5).delay == timedelta(seconds=1.5)
    assert RetryAfter(timedelta(minutes=2), "rate limited").reason == "rate limited"
    for bad in (-1, float("nan"), timedelta(seconds=-1), timedelta(days=4000), "5", True):
        with pytest.raises(ValidationError):
            RetryAfter(bad)  # type: ignore[arg-type]


def test_retry_on_accepts_one_class_and_refuses_non_exception_classes() -> None:
    assert ExponentialRetryPolicy(retry_on=ConnectionError).retry_on == (ConnectionError,)  # type: ignore[arg-type]
    for bad in ((int,), ("ValueError",), 3):
        with pytest.raises(ValidationError):
            ExponentialRetryPolicy(give_up_on=bad)  # type: ignore[arg-type]


# --- older policies --------------------------------------------------------------------------


@dataclass(frozen=True)
class OldStylePolicy:
    """A user's policy written against the signature without ``error``."""

    reset_tries_on_repeat: bool = False
    asked: list[int] = field(default_factory=list)

    def next_run(
        self, task: Task, *, now: datetime, rand: Callable[[], float] = random.random
    ) -> datetime | None:
        self.asked.append(task.processing_tries_count)
        return now + timedelta(seconds=7) if task.processing_tries_count < 2 else None


@dataclass(frozen=True)
class FailureCountingPolicy:
    """Sees errors through ``**kwargs``: counts failures apart from repeats."""

    reset_tries_on_repeat: bool = False
    seen: list[BaseException | None] = field(default_factory=list)

    def next_run(self, task: Task, *, now: datetime, **kwargs: object) -> datetime | None:
        error = kwargs.get("error")
        assert error is None or isinstance(error, BaseException)
        self.seen.append(error)
        return now + timedelta(seconds=1)


def test_a_policy_without_error_keeps_working_asked_without_it() -> None:
    policy = OldStylePolicy()
    TaskHandler(types={"t"}, processor=_done, retry_policy=policy)  # accepted
    assert not sees_errors(policy)
    assert decided(policy, 1, ValueError())[0] is OutcomeKind.RETRIED
    assert decided(policy, 2, ValueError())[0] is OutcomeKind.ERROR
    assert decided(policy, 1, ProcessResult.COMMIT_AND_RETRY)[0] is OutcomeKind.REPEATED
    assert policy.asked == [1, 2, 1]


def test_a_policy_sees_the_failure_and_none_for_a_repeat() -> None:
    policy, failure = FailureCountingPolicy(), ConnectionError("x")
    assert sees_errors(policy)
    decided(policy, 1, failure)
    decided(policy, 1, ProcessResult.COMMIT_AND_RETRY)
    assert policy.seen == [failure, None]


def test_an_object_that_is_no_retry_policy_is_refused_when_the_handler_is_built() -> None:
    class NoNextRun:
        reset_tries_on_repeat = False

    class NoNow:
        reset_tries_on_repeat = False

        def next_run(self, task: Task) -> datetime | None:
            return None

    for bad in (NoNextRun(), NoNow(), object()):
        with pytest.raises(ConfigurationError, match="retry_policy"):
            TaskHandler(types={"t"}, processor=_done, retry_policy=bad)  # type: ignore[arg-type]


async def _done(task: Task) -> ProcessResult:
    return ProcessResult.DONE


# --- the schedule a node follows, on the fake clock ------------------------------------------

Step = BaseException | None
"""What one attempt does: raise this failure, or None: succeed."""

steps = st.one_of(
    st.just(None),
    st.sampled_from([ConnectionError("reset"), BankDownError("down"), TimeoutError()]),
    st.sampled_from([ValueError("bad"), BadAccountError("closed"), RuntimeError("boom")]),
    st.integers(min_value=0, max_value=600).map(lambda s: RetryAfter(timedelta(seconds=s))),
    st.just(GiveUp("no")),
)


def model(policy: ExponentialRetryPolicy, script: list[Step]) -> tuple[list[timedelta], TaskStatus]:
    """The waits between attempts and the final status the policy promises for ``script``."""
    waits: list[timedelta] = []
    for attempt, step in enumerate(script, start=1):
        if step is None:
            return waits, TaskStatus.DONE
        if isinstance(step, GiveUp) or attempt > policy.max_count:
            return waits, TaskStatus.ERROR
        if isinstance(step, RetryAfter):
            waits.append(step.delay)
        elif policy.retries(step):
            waits.append(policy.backoff(attempt))
        else:
            return waits, TaskStatus.ERROR
    raise AssertionError("scripts end with a success")


@pytest.mark.anyio
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    policy=st.builds(
        ExponentialRetryPolicy,
        delay=st.integers(min_value=1, max_value=60).map(lambda s: timedelta(seconds=s)),
        multiplier=st.sampled_from([1.0, 2.0, 3.0]),
        max_count=st.integers(min_value=0, max_value=5),
        retry_on=st.just(RETRY_ON),
        give_up_on=st.just((ValueError,)),
    ),
    script=st.lists(steps, max_size=7).map(lambda s: [*s, None]),
)
async def test_a_node_follows_the_schedule_the_policy_and_the_processor_ask_for(
    policy: ExponentialRetryPolicy, script: list[Step]
) -> None:
    attempts: list[datetime] = []
    clock = FakeClock(start=NOW)

    async def scripted(task: Task) -> ProcessResult:
        attempts.append(clock.now())
        step = script[task.processing_tries_count - 1]
        if step is not None:
            raise step
        return ProcessResult.DONE

    handler = TaskHandler(types={"work"}, processor=scripted, retry_policy=policy)
    async with FakeNode(handler, clock=clock) as node:
        task_id = await node.add("work")
        await run_until_idle(node.app)
        waits, status = model(policy, script)
        assert [b - a for a, b in pairwise(attempts)] == waits
        assert node.status(task_id) is status


def test_retry_after_allows_the_same_longest_wait_as_a_retry_policy() -> None:
    from resilient_task.domain.policies import MAX_DELAY
    from resilient_task.errors import _MAX_DELAY

    assert _MAX_DELAY == MAX_DELAY

"""Retry, concurrency and processing policies: pure values, validated on construction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_task.domain import (
    ExponentialRetryPolicy,
    NoRetryPolicy,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    StuckTaskResolutionStrategy,
    Task,
    TaskStatus,
)
from resilient_task.errors import ValidationError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def a_task(*, tries: int, status: TaskStatus = TaskStatus.PROCESSING) -> Task:
    return Task(
        id=uuid4(),
        type="payment",
        data=b"",
        status=status,
        next_event_time=NOW,
        created_at=NOW,
        updated_at=NOW,
        processing_tries_count=tries,
    )


def never_called() -> float:
    raise AssertionError("rand must not be called without jitter")


# Exponential policies whose waits stay far from float overflow.
exponential_policies = st.builds(
    ExponentialRetryPolicy,
    delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    max_count=st.just(10_000),
    max_delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
)
retry_numbers = st.integers(min_value=1, max_value=250)


# ExponentialRetryPolicy


def test_reference_example_waits_5_20_and_80_seconds_then_gives_up() -> None:
    policy = ExponentialRetryPolicy(delay=5 * SECOND, multiplier=4, max_count=3)
    runs = [policy.next_run(a_task(tries=n), now=NOW) for n in (1, 2, 3, 4)]
    assert runs == [NOW + 5 * SECOND, NOW + 20 * SECOND, NOW + 80 * SECOND, None]


def test_reference_example_runs_a_failing_task_at_most_four_times() -> None:
    policy = ExponentialRetryPolicy(delay=5 * SECOND, multiplier=4, max_count=3)
    task = a_task(tries=0, status=TaskStatus.SUBMITTED)
    executions = 0
    for _ in range(10):
        task = task.grab(node_id="node-1", now=NOW, deadline=NOW + SECOND)
        executions += 1
        run_at = policy.next_run(task, now=NOW)
        if run_at is None:
            task = task.mark_error(now=NOW, reason="retries exhausted")
            break
        task = task.schedule(now=NOW, run_at=run_at, error="boom")
        task = task.submit(now=run_at, deadline=run_at + SECOND)
    assert executions == 4
    assert task.status is TaskStatus.ERROR


def test_waits_are_capped_at_max_delay() -> None:
    policy = ExponentialRetryPolicy(
        delay=5 * SECOND, multiplier=10, max_count=10, max_delay=timedelta(minutes=1)
    )
    assert policy.next_run(a_task(tries=2), now=NOW) == NOW + 50 * SECOND
    assert policy.next_run(a_task(tries=3), now=NOW) == NOW + timedelta(minutes=1)
    assert policy.next_run(a_task(tries=10), now=NOW) == NOW + timedelta(minutes=1)


def test_max_count_zero_never_retries() -> None:
    assert ExponentialRetryPolicy(max_count=0).next_run(a_task(tries=1), now=NOW) is None


@given(policy=exponential_policies, n=retry_numbers)
def test_waits_never_shrink_from_one_retry_to_the_next(
    policy: ExponentialRetryPolicy, n: int
) -> None:
    this = policy.next_run(a_task(tries=n), now=NOW, rand=never_called)
    following = policy.next_run(a_task(tries=n + 1), now=NOW, rand=never_called)
    assert this is not None
    assert following is not None
    assert this <= following


@given(policy=exponential_policies, n=retry_numbers)
def test_waits_never_exceed_max_delay(policy: ExponentialRetryPolicy, n: int) -> None:
    run_at = policy.next_run(a_task(tries=n), now=NOW, rand=never_called)
    assert run_at is not None
    assert NOW <= run_at <= NOW + policy.max_delay


@given(
    policy=exponential_policies,
    n=retry_numbers,
    jitter=st.floats(min_value=0.0, max_value=1.0),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_jitter_stays_within_its_fraction_of_the_wait_and_under_max_delay(
    policy: ExponentialRetryPolicy, n: int, jitter: float, r: float
) -> None:
    jittered = ExponentialRetryPolicy(
        delay=policy.delay,
        multiplier=policy.multiplier,
        max_count=policy.max_count,
        max_delay=policy.max_delay,
        jitter=jitter,
    )
    wait = jittered.backoff(n)
    run_at = jittered.next_run(a_task(tries=n), now=NOW, rand=lambda: r)
    assert run_at is not None
    assert wait * (1 - jitter) <= run_at - NOW <= min(wait * (1 + jitter), policy.max_delay)


def test_jitter_uses_the_injected_random_source() -> None:
    policy = ExponentialRetryPolicy(delay=10 * SECOND, jitter=0.5)
    lowest = policy.next_run(a_task(tries=1), now=NOW, rand=lambda: 0.0)
    middle = policy.next_run(a_task(tries=1), now=NOW, rand=lambda: 0.5)
    assert (lowest, middle) == (NOW + 5 * SECOND, NOW + 10 * SECOND)


def test_waits_stay_capped_however_many_retries_are_allowed() -> None:
    policy = ExponentialRetryPolicy(max_count=10_000, max_delay=timedelta(hours=1))
    assert policy.next_run(a_task(tries=2_000), now=NOW) == NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": -SECOND}, "delay must not be negative"),
        ({"max_delay": -SECOND}, "max_delay must not be negative"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"max_count": -1}, "max_count must be >= 0"),
        ({"jitter": -0.1}, "jitter must be within"),
        ({"jitter": 1.1}, "jitter must be within"),
        ({"jitter": float("nan")}, "jitter must be a finite number"),
    ],
)
def test_exponential_policy_rejects_out_of_range_settings(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ExponentialRetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"delay": 5}, id="delay-int"),
        pytest.param({"max_delay": 3600.0}, id="max_delay-float"),
        pytest.param(
            {"multiplier": "2"},
            id="multiplier-str",
        ),
        pytest.param({"max_count": "3"}, id="max_count-str"),
        pytest.param({"jitter": "0.1"}, id="jitter-str"),
        pytest.param({"max_count": 2.5}, id="max_count-float"),
        pytest.param(
            {"multiplier": float("nan")},
            id="multiplier-nan",
        ),
    ],
)
def test_exponential_policy_rejects_wrong_types(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ExponentialRetryPolicy(**kwargs)


# NoRetryPolicy


@given(tries=st.integers(min_value=0, max_value=10**6))
def test_no_retry_policy_never_schedules_another_run(tries: int) -> None:
    assert NoRetryPolicy().next_run(a_task(tries=tries), now=NOW) is None


# SimpleConcurrencyPolicy


def test_equal_valued_concurrency_policies_are_different_limits() -> None:
    first, second = SimpleConcurrencyPolicy(3), SimpleConcurrencyPolicy(3)
    assert first != second
    same = first
    assert first == same
    assert len({first, second}) == 2


def test_concurrency_policy_defaults_to_a_hundred() -> None:
    assert SimpleConcurrencyPolicy().max_concurrency == 100


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        pytest.param("3"),
        pytest.param(2.5),
    ],
)
def test_concurrency_policy_needs_a_positive_int(value: Any) -> None:
    with pytest.raises(ValidationError):
        SimpleConcurrencyPolicy(value)


# SimpleProcessingPolicy


def test_processing_policy_defaults_to_the_node_timeout_and_retrying_stuck_tasks() -> None:
    policy = SimpleProcessingPolicy()
    assert policy.timeout is None
    assert policy.expected_queue_time is None
    assert policy.stuck_strategy is StuckTaskResolutionStrategy.RETRY
    assert policy.max_recoveries == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": timedelta(0)}, "timeout must be positive"),
        ({"timeout": -SECOND}, "timeout must be positive"),
        ({"timeout": timedelta.max}, "timeout must be positive and at most 3650 days"),
        ({"expected_queue_time": -SECOND}, "expected_queue_time must be positive"),
        ({"expected_queue_time": timedelta.max}, "expected_queue_time must be .* at most"),
        ({"expected_queue_time": 60}, "expected_queue_time must be a datetime.timedelta"),
        ({"max_recoveries": -1}, "max_recoveries must be >= 0"),
    ],
)
def test_processing_policy_rejects_impossible_settings(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SimpleProcessingPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"timeout": 30}, id="timeout-int"),
        pytest.param(
            {"max_recoveries": "3"},
            id="max_recoveries-str",
        ),
        pytest.param(
            {"stuck_strategy": "SOMETIMES"},
            id="stuck_strategy-unknown",
        ),
    ],
)
def test_processing_policy_rejects_wrong_types(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SimpleProcessingPolicy(**kwargs)


def test_processing_policy_accepts_zero_recoveries() -> None:
    assert SimpleProcessingPolicy(max_recoveries=0).max_recoveries == 0

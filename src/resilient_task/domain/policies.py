"""Retry, concurrency and processing policies: frozen values with pure methods."""

from __future__ import annotations

import enum
import functools
import inspect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from resilient_task.domain.backoff import capped_exponential
from resilient_task.domain.requests import MAX_DURATION, require_duration
from resilient_task.domain.task import Task
from resilient_task.errors import ConfigurationError, RetryAfter, ValidationError

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_TRANSACTIONAL_MAX_CONCURRENCY",
    "MAX_DELAY",
    "AnyRetryPolicy",
    "ConcurrencyPolicy",
    "ExponentialRetryPolicy",
    "GlobalConcurrencyPolicy",
    "LegacyRetryPolicy",
    "NoRetryPolicy",
    "ProcessingPolicy",
    "RetryPolicy",
    "SimpleConcurrencyPolicy",
    "SimpleProcessingPolicy",
    "StuckTaskResolutionStrategy",
    "check_retry_policy",
    "sees_errors",
]


MAX_DELAY = MAX_DURATION
"""The longest wait a retry policy may ask for (keeps run times representable)."""


class RetryPolicy(Protocol):
    """Decides when a failed (or repeating) task runs next, seeing the failure.

    ``error`` is the exception the attempt failed with (its own, the processor's timeout
    :class:`~resilient_task.errors.ProcessingTimeoutError`, a ``TypeError`` for a wrong return
    value, a :class:`~resilient_task.errors.RetryAfter`), or None for a ``COMMIT_AND_RETRY``
    repeat: a policy can tell a repeat from a failure. A policy written against the older
    signature without ``error`` (:class:`LegacyRetryPolicy`) still works: it is asked without it.
    """

    def next_run(
        self,
        task: Task,
        *,
        now: datetime,
        rand: Callable[[], float] = random.random,
        error: BaseException | None = None,
    ) -> datetime | None:
        """The next run time after the attempt ``task.processing_tries_count``, or None to stop."""
        ...

    @property
    def reset_tries_on_repeat(self) -> bool:
        """Whether COMMIT_AND_RETRY starts the tries count again from zero."""
        ...


class LegacyRetryPolicy(Protocol):
    """The retry policy signature before ``error``: still accepted, asked without the failure."""

    def next_run(
        self, task: Task, *, now: datetime, rand: Callable[[], float] = random.random
    ) -> datetime | None:
        """The next run time after the attempt ``task.processing_tries_count``, or None to stop."""
        ...

    @property
    def reset_tries_on_repeat(self) -> bool:
        """Whether COMMIT_AND_RETRY starts the tries count again from zero."""
        ...


AnyRetryPolicy = RetryPolicy | LegacyRetryPolicy
"""What a handler accepts as its retry policy."""


def sees_errors(policy: AnyRetryPolicy) -> bool:
    """Whether ``policy.next_run`` takes the ``error`` keyword (or ``**kwargs``)."""
    method = getattr(type(policy), "next_run", None)
    if inspect.isfunction(method):
        return _takes_error(method)
    return _takes_error(policy.next_run)  # an instance attribute, a builtin...: not cached


def check_retry_policy(policy: object) -> None:
    """Refuse, with :class:`ConfigurationError`, an object that cannot serve as a retry policy."""
    next_run = getattr(policy, "next_run", None)
    if not callable(next_run) or not hasattr(policy, "reset_tries_on_repeat"):
        raise ConfigurationError(
            f"retry_policy {policy!r} is no retry policy: it needs next_run(task, *, now, rand, "
            f"error=None) -> datetime | None and a reset_tries_on_repeat attribute"
        )
    try:
        signature = inspect.signature(next_run)
    except (TypeError, ValueError):
        return  # not introspectable (a builtin): trusted, asked without error
    try:
        signature.bind(None, now=None, rand=None)
    except TypeError as exc:
        raise ConfigurationError(
            f"retry_policy {type(policy).__name__}.next_run{signature} cannot be called as "
            f"next_run(task, *, now, rand, error=None): {exc}"
        ) from None


@functools.cache
def _takes_error(method: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "error" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


ExceptionTypes = tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class ExponentialRetryPolicy:
    """Retry ``max_count`` times, the n-th retry waiting ``delay * multiplier**(n-1)``.

    The wait is capped at ``max_delay``. With ``jitter`` (a fraction in [0, 1]) the wait is
    drawn uniformly from ``[wait * (1 - jitter), wait * (1 + jitter)]`` and still capped at
    ``max_delay``. The reference example ``(5 s, x4, max_count=3)`` runs a task at most 4 times,
    waiting 5 s, 20 s and 80 s.

    Which failures are retried: ``give_up_on`` (exception classes, subclasses included) puts
    the task in ERROR at the first such failure; otherwise, with ``retry_on`` given, only
    failures of those classes are retried, any other goes to ERROR; without ``retry_on``
    every failure is retried. A failure's class is matched, not its ``__cause__`` nor the
    members of an ``ExceptionGroup``. Neither applies to a COMMIT_AND_RETRY repeat nor to a
    processor's :class:`~resilient_task.errors.RetryAfter` (retried up to ``max_count``, at the
    time it asks for).
    """

    delay: timedelta = timedelta(seconds=5)
    multiplier: float = 2.0
    max_count: int = 3
    max_delay: timedelta = timedelta(hours=24)
    jitter: float = 0.0
    reset_tries_on_repeat: bool = False
    retry_on: ExceptionTypes | None = None
    give_up_on: ExceptionTypes = ()

    def __post_init__(self) -> None:
        if self.retry_on is not None:
            object.__setattr__(self, "retry_on", _exception_types("retry_on", self.retry_on))
        object.__setattr__(self, "give_up_on", _exception_types("give_up_on", self.give_up_on))
        _non_negative("delay", self.delay)
        _non_negative("max_delay", self.max_delay)
        if self.max_delay > MAX_DELAY:
            raise ValidationError(f"max_delay must be at most {MAX_DELAY}, got {self.max_delay}")
        _number("multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValidationError(f"multiplier must be >= 1, got {self.multiplier}")
        _integer("max_count", self.max_count, minimum=0)
        _number("jitter", self.jitter)
        if not 0.0 <= self.jitter <= 1.0:
            raise ValidationError(f"jitter must be within [0, 1], got {self.jitter}")

    def backoff(self, retry_number: int) -> timedelta:
        """The wait before retry ``retry_number`` (1-based), without jitter, capped."""
        cap = self.max_delay.total_seconds()
        seconds = capped_exponential(
            retry_number - 1, first=self.delay.total_seconds(), multiplier=self.multiplier, cap=cap
        )
        return self.max_delay if seconds >= cap else timedelta(seconds=seconds)

    def retries(self, error: BaseException) -> bool:
        """Whether a failure with ``error`` is retried (within ``max_count``)."""
        if isinstance(error, RetryAfter):
            return True
        if isinstance(error, self.give_up_on):
            return False
        return self.retry_on is None or isinstance(error, self.retry_on)

    def next_run(
        self,
        task: Task,
        *,
        now: datetime,
        rand: Callable[[], float] = random.random,
        error: BaseException | None = None,
    ) -> datetime | None:
        """See :meth:`RetryPolicy.next_run`."""
        if error is not None and not self.retries(error):
            return None
        retry_number = task.processing_tries_count
        if retry_number > self.max_count or retry_number < 1:
            return None
        wait = self.backoff(retry_number)
        if self.jitter:
            factor = 1.0 + self.jitter * (2.0 * rand() - 1.0)
            wait = min(wait * factor, self.max_delay)
        return now + wait


@dataclass(frozen=True, slots=True)
class NoRetryPolicy:
    """Never retry: the first failure puts the task in ERROR."""

    reset_tries_on_repeat: bool = False

    def next_run(
        self,
        task: Task,
        *,
        now: datetime,
        rand: Callable[[], float] = random.random,
        error: BaseException | None = None,
    ) -> datetime | None:
        """Always None."""
        return None


class ConcurrencyPolicy(Protocol):
    """Bounds how many tasks run at once on a node; handlers sharing an instance share it."""

    @property
    def max_concurrency(self) -> int:
        """The most tasks that may run at once under this policy on one node."""
        ...


DEFAULT_MAX_CONCURRENCY = 100
"""The limit of a handler that sets none. Async processors are cheap to run side by side, and
the executor grabs and completes tasks in batches of up to this many per database round trip,
so the limit also sets the throughput of fast handlers (benchmarked: 10 -> 2,750 tasks/s,
100 -> 7,100 tasks/s end to end with PostgreSQL and Kafka). Set a lower one for a processor
whose downstream system takes less."""

DEFAULT_TRANSACTIONAL_MAX_CONCURRENCY = 10
"""The limit of a transactional handler that sets none: each running one holds a pooled
database connection (the default pool has 10 + 10 overflow)."""


@dataclass(frozen=True, eq=False)
class SimpleConcurrencyPolicy:
    """At most ``max_concurrency`` tasks at once, per node, per policy *instance*.

    Equality is identity on purpose: two handlers share a limit only by sharing the instance.
    """

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def __post_init__(self) -> None:
        _integer("max_concurrency", self.max_concurrency, minimum=1)


@dataclass(frozen=True, eq=False)
class GlobalConcurrencyPolicy:
    """At most ``limit`` tasks holding ``key`` PROCESSING at once, across every node.

    The store enforces it at the grab: the tasks holding the key are those of the task types
    of the handlers using a policy with this key (such handlers name their ``types=``), and
    the grab counts their PROCESSING rows. A trigger over the limit leaves its task SUBMITTED
    and waits on its node (holding one of the ``limit`` local slots, no store round trip
    meanwhile) until a task of the key ends on this node, or ``recheck_interval`` passes,
    then grabs again. A dead node's tasks hold their slots until they are recovered (their
    processing deadline). See ``docs/concurrency.md``.

    Every node must give the key the same ``limit`` and task types. Also a per-node bound:
    at most ``limit`` tasks of the key run or wait on one node.
    """

    key: str
    limit: int
    recheck_interval: timedelta = timedelta(milliseconds=250)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip() or len(self.key) > 200:
            raise ValidationError(f"key must be a non-blank str of 200 at most, got {self.key!r}")
        _integer("limit", self.limit, minimum=1)
        require_duration("recheck_interval", self.recheck_interval)

    @property
    def max_concurrency(self) -> int:
        """The per-node bound: ``limit`` (a node cannot run more than the whole cluster)."""
        return self.limit


class StuckTaskResolutionStrategy(enum.StrEnum):
    """What the resumer does with a PROCESSING task whose deadline passed (its node is gone)."""

    RETRY = "RETRY"
    """Submit it again (up to ``max_recoveries`` times, then ERROR)."""
    MARK_AS_ERROR = "MARK_AS_ERROR"
    MARK_AS_FAILED = "MARK_AS_FAILED"
    IGNORE = "IGNORE"
    """Leave it PROCESSING; an operator decides. It is reported on every poll."""


class ProcessingPolicy(Protocol):
    """How long a task may run and what happens when its node disappears."""

    @property
    def timeout(self) -> timedelta | None:
        """Processing timeout; None means ``TaskProperties.task_stuck_timeout``."""
        ...

    @property
    def stuck_strategy(self) -> StuckTaskResolutionStrategy:
        """What to do with the task when it is found stuck in PROCESSING."""
        ...

    @property
    def max_recoveries(self) -> int:
        """How many stuck recoveries are allowed before the task goes to ERROR."""
        ...

    @property
    def expected_queue_time(self) -> timedelta | None:
        """How long a SUBMITTED task may wait to be picked up before it is re-triggered."""
        ...


@dataclass(frozen=True, slots=True)
class SimpleProcessingPolicy:
    """A processing timeout plus the stuck-task strategy.

    An async handler still running at ``timeout`` is cancelled and the attempt counts as a
    failure for the retry policy.
    """

    timeout: timedelta | None = None
    stuck_strategy: StuckTaskResolutionStrategy = StuckTaskResolutionStrategy.RETRY
    max_recoveries: int = 3
    expected_queue_time: timedelta | None = None

    def __post_init__(self) -> None:
        # Bounded: the executor and resumer add them to now.
        if self.timeout is not None:
            require_duration("timeout", self.timeout)
        if self.expected_queue_time is not None:
            require_duration("expected_queue_time", self.expected_queue_time)
        _integer("max_recoveries", self.max_recoveries, minimum=0)
        if not isinstance(self.stuck_strategy, StuckTaskResolutionStrategy):
            try:
                object.__setattr__(
                    self, "stuck_strategy", StuckTaskResolutionStrategy(self.stuck_strategy)
                )
            except ValueError:
                choices = ", ".join(s.value for s in StuckTaskResolutionStrategy)
                raise ValidationError(
                    f"stuck_strategy must be one of {choices}, got {self.stuck_strategy!r}"
                ) from None


def _exception_types(name: str, value: object) -> ExceptionTypes:
    """``value`` as a tuple of exception classes (one class alone is accepted)."""
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, tuple | list | set | frozenset):
        raise ValidationError(f"{name} must be a tuple of exception classes, got {value!r}")
    classes = tuple(items)
    for item in classes:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValidationError(f"{name} must hold exception classes, got {item!r}")
    return classes


def _non_negative(name: str, value: timedelta) -> None:
    if not isinstance(value, timedelta):
        raise ValidationError(f"{name} must be a datetime.timedelta, got {type(value).__name__}")
    if value < timedelta(0):
        raise ValidationError(f"{name} must not be negative, got {value}")


def _number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, got {value!r}")


def _integer(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValidationError(f"{name} must be >= {minimum}, got {value}")


DEFAULT_RETRY_POLICY = ExponentialRetryPolicy()

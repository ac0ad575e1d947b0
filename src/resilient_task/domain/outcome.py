"""What a run's outcome does to its task: the pure decision the executor then writes.

A processor returns a :class:`~resilient_task.domain.results.ProcessResult` or fails with an
exception (its own, the timeout's, a wrong return value's). :func:`decide` turns that into the
task's next value and the kind of outcome (for counting, metrics and the log line): DONE
completes, DONE_AND_DELETE completes and deletes, COMMIT_AND_RETRY asks the retry policy for
the next run (or completes when it says stop), a failure asks it for a retry (or gives up:
ERROR, naming the attempts), keeping the failure's traceback next to its error text. It
never raises for any outcome, however broken its ``__str__``.

The policy sees the failure (``error=``; None for a repeat). Two failures are the
processor's own decision: :class:`~resilient_task.errors.GiveUp` is ERROR at once, whatever
the policy; :class:`~resilient_task.errors.RetryAfter` is retried at ``now + delay`` when the
policy grants a retry at all (it counts as a try, so ``max_count`` still bounds it).
"""

from __future__ import annotations

import enum
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast

from resilient_task.domain.policies import AnyRetryPolicy, RetryPolicy, sees_errors
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import Task
from resilient_task.errors import GiveUp, RetryAfter

__all__ = [
    "Decision",
    "OutcomeKind",
    "decide",
    "describe",
    "formatted_traceback",
    "unhandled",
]

_REPR_LENGTH = 200


class OutcomeKind(enum.StrEnum):
    """What a recorded run amounted to (the executor's ``stats`` key of it)."""

    DONE = "done"
    DELETED = "deleted"
    REPEATED = "repeated"
    """COMMIT_AND_RETRY: the task waits for its next run."""
    RETRIED = "retried"
    """Failed: the task waits for a retry."""
    ERROR = "error"
    """Failed for good (or unhandled): an operator must act."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The task's next value (a transition of the run's task) and what the run amounted to."""

    task: Task
    kind: OutcomeKind

    @property
    def delete(self) -> bool:
        """Whether the task is deleted instead of written (DONE_AND_DELETE)."""
        return self.kind is OutcomeKind.DELETED


def decide(
    task: Task,
    outcome: ProcessResult | BaseException,
    retry_policy: AnyRetryPolicy,
    *,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """The next value of the PROCESSING ``task`` after a run that ended with ``outcome``.

    Args:
        task: the task as grabbed (``processing_tries_count`` counts this run).
        outcome: what the processor returned, or the exception its run failed with.
        retry_policy: the handler's policy, asked for the next run after a failure (with
            ``error=`` the failure) or a COMMIT_AND_RETRY (``error=None``).
        now: the time the outcome is recorded.
        rand: the jitter source handed to the retry policy.
    """
    if outcome is ProcessResult.DONE:
        return Decision(task.complete(now=now), OutcomeKind.DONE)
    if outcome is ProcessResult.DONE_AND_DELETE:
        return Decision(task.complete(now=now), OutcomeKind.DELETED)
    if outcome is ProcessResult.COMMIT_AND_RETRY:
        reset = retry_policy.reset_tries_on_repeat
        # With reset, the next run is planned as after a first attempt, whatever this one was.
        basis = replace(task, processing_tries_count=1) if reset else task
        run_at = _next_run(retry_policy, basis, now=now, rand=rand, error=None)
        if run_at is None:
            return Decision(task.complete(now=now), OutcomeKind.DONE)
        return Decision(
            task.schedule(now=now, run_at=run_at, reset_tries=reset), OutcomeKind.REPEATED
        )
    error, trace = describe(outcome), formatted_traceback(outcome)
    if isinstance(outcome, GiveUp):
        run_at = None
    else:
        run_at = _next_run(retry_policy, task, now=now, rand=rand, error=outcome)
        if run_at is not None and isinstance(outcome, RetryAfter):
            run_at = now + outcome.delay
    if run_at is None:
        reason = f"gave up after {task.processing_tries_count} attempt(s): {error}"
        failed = task.mark_error(now=now, reason=reason, traceback=trace)
        return Decision(failed, OutcomeKind.ERROR)
    retry = task.schedule(now=now, run_at=run_at, error=error, traceback=trace)
    return Decision(retry, OutcomeKind.RETRIED)


def _next_run(
    policy: AnyRetryPolicy,
    task: Task,
    *,
    now: datetime,
    rand: Callable[[], float],
    error: BaseException | None,
) -> datetime | None:
    """Ask ``policy``, with ``error`` if its ``next_run`` takes it (else the older way)."""
    if sees_errors(policy):
        return cast(RetryPolicy, policy).next_run(task, now=now, rand=rand, error=error)
    return policy.next_run(task, now=now, rand=rand)


def unhandled(task: Task, *, now: datetime) -> Decision:
    """No handler accepts the stored task: ERROR with the reason, visible to operators."""
    reason = f"no handler accepts task type {task.type!r}"
    return Decision(task.mark_error(now=now, reason=reason), OutcomeKind.ERROR)


def describe(outcome: object) -> str:
    """The error text recorded for a failed run: ``Type: message``; never raises."""
    if isinstance(outcome, BaseException):
        name = type(outcome).__name__
        try:
            text = str(outcome)
        except BaseException:  # a broken __str__ must not lose the failure
            return f"{name} (no message: str() of the exception raised)"
        return f"{name}: {text}" if text else name
    return f"unexpected outcome {_shown(outcome)}"


def formatted_traceback(outcome: object) -> str | None:
    """The failure's traceback as text (the task bounds what it stores); None without one.

    A failure the executor made up (a timeout, a wrong return value) was never raised: it
    has no traceback. Never raises.
    """
    if not isinstance(outcome, BaseException) or outcome.__traceback__ is None:
        return None
    try:
        return "".join(traceback.format_exception(outcome))
    except BaseException:  # a hostile exception (its __str__, its __cause__ chain...)
        return None


def _shown(value: object) -> str:
    """``repr(value)``, cut to a log line's length; never raises."""
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= _REPR_LENGTH else text[: _REPR_LENGTH - 3] + "..."

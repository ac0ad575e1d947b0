"""The OpenTelemetry adapter of the :class:`~resilient_task.ports.observer.Observer` port.

It turns the engine's events into spans:

- ``resilient_task process``: one span per run of a task on this node, from the grab to the
  run's outcome being decided. The port reports a run when it ends, with its duration, so the
  span is recorded then with its real start and end times. Attributes: the task type and the
  outcome (``done``, ``retry``, ``error``...); ``retry`` and ``error`` set the span's status
  to ERROR.
- ``resilient_task outage``: one span per outage of a dependency (``database``, ``trigger
  broker``) seen by this node, from its beginning to its end.
- ``resilient_task recover``: a stuck task resolved by this node's resumer, with the strategy.

What it does not do yet, because the port does not carry it: make the run's span the parent
of the spans your processor opens (the executor would have to enter a span around the
processor call), and continue the trace of the request that added the task (its context
would have to be stored with the task: see ``docs/operations.md``).

Needs the optional ``opentelemetry-api`` package; configure the SDK (exporter, sampler,
resource) as for any other instrumentation, or pass a ``tracer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from resilient_task.ports.observer import ProcessOutcome, RecoveryStrategy

__all__ = ["OpenTelemetryObserver"]

_FAILED = frozenset({ProcessOutcome.RETRY, ProcessOutcome.ERROR})
_TYPE = "resilient_task.task.type"
_OUTCOME = "resilient_task.outcome"
_NANOS = 1_000_000_000


class OpenTelemetryObserver:
    """Records the engine's events as OpenTelemetry spans (see the module docstring).

    Args:
        tracer: where spans go; by default the global tracer provider's ``resilient_task``
            tracer (a no-op until an SDK is configured).
        now_ns: the wall clock in nanoseconds since the epoch (tests pass a fixed one).
    """

    def __init__(
        self, *, tracer: Tracer | None = None, now_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self._tracer = tracer if tracer is not None else trace.get_tracer("resilient_task")
        self._now_ns = now_ns
        self._outages: dict[str, Span] = {}

    def task_added(self, task_type: str, count: int = 1) -> None:
        """Not traced (``tasks_added_total`` counts it)."""

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        """Not traced: the run's span starts at the grab."""

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        """Record the run's span, from the grab (``seconds`` ago) to now."""
        end = self._now_ns()
        start = end - max(0, round(seconds * _NANOS))
        span = self._tracer.start_span(
            "resilient_task process",
            kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={_TYPE: task_type, _OUTCOME: outcome.value},
        )
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, f"the run ended in {outcome.value}"))
        span.end(end_time=end)

    def task_timed_out(self, task_type: str) -> None:
        """Not traced: the run's span says retry or error."""

    def task_stale(self) -> None:
        """Not traced."""

    def task_released(self, task_type: str) -> None:
        """Not traced."""

    def tasks_recovered(self, task_type: str, strategy: RecoveryStrategy) -> None:
        """Record an instant span for a stuck task resolved by this node."""
        now = self._now_ns()
        span = self._tracer.start_span(
            "resilient_task recover",
            start_time=now,
            attributes={_TYPE: task_type, "resilient_task.strategy": strategy.value},
        )
        span.end(end_time=now)

    def tasks_cleaned(self, count: int) -> None:
        """Not traced."""

    def triggers_sent(self, count: int) -> None:
        """Not traced."""

    def triggers_failed(self, count: int) -> None:
        """Not traced."""

    def outage(self, dependency: str, *, down: bool) -> None:
        """Open the dependency's outage span when it begins; end it when it ends."""
        if down:
            if dependency not in self._outages:
                self._outages[dependency] = self._tracer.start_span(
                    "resilient_task outage",
                    start_time=self._now_ns(),
                    attributes={"resilient_task.dependency": dependency},
                )
            return
        span = self._outages.pop(dependency, None)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, f"{dependency} unreachable"))
            span.end(end_time=self._now_ns())

    def consumer_lag(self, topic: str, partition: int, lag: int | None) -> None:
        """Not traced (``kafka_consumer_lag`` is a gauge)."""

"""The Prometheus adapter of the :class:`~resilient_task.ports.observer.Observer` port.

Names follow Prometheus conventions under the ``resilient_task_`` prefix. The ``type`` label
takes only the task types of registered handlers (``TaskHandler(types=...)``) and ``other``
for every other type, so no producer can grow the number of series.

The hot path pays one dict look-up and one or two child updates per event: the labelled
children of each known type are resolved once, at construction, not per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from resilient_task.ports.observer import ProcessOutcome, RecoveryStrategy

__all__ = ["OTHER_TYPE", "PREFIX", "PrometheusObserver"]

PREFIX = "resilient_task_"
"""The prefix of every metric name."""

OTHER_TYPE = "other"
"""The ``type`` label of tasks whose type no registered handler names."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_DEPENDENCIES = ("database", "trigger broker")


@dataclass(frozen=True, slots=True)
class _TypeMetrics:
    """The children of one ``type`` label value, resolved once."""

    added: Counter
    processed: dict[ProcessOutcome, Counter]
    processing: Histogram
    queue_delay: Histogram
    timed_out: Counter
    running: Gauge


class PrometheusObserver:
    """Exports the engine's events as Prometheus metrics.

    Args:
        task_types: the task types that get their own ``type`` label value (usually those of
            the registered handlers); every other type is counted as ``other``.
        registry: where the metrics are registered; a new one by default, so two nodes in
            one process (tests) never collide. Serve it with
            :func:`resilient_task.adapters.prometheus.server.serve_metrics`.
    """

    def __init__(
        self, *, task_types: Iterable[str] = (), registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        """The registry holding this observer's metrics."""
        reg = self.registry
        p = PREFIX
        self._added = Counter(
            f"{p}tasks_added", "Tasks stored by this node.", ["type"], registry=reg
        )
        self._processed = Counter(
            f"{p}tasks_processed",
            "Task runs ended on this node, by recorded outcome.",
            ["type", "outcome"],
            registry=reg,
        )
        self._processing = Histogram(
            f"{p}task_processing_seconds",
            "Time a processor ran (start to outcome recorded).",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self._queue_delay = Histogram(
            f"{p}task_queue_delay_seconds",
            "Time from a task being due to its grab by this node.",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self._timed_out = Counter(
            f"{p}tasks_timed_out",
            "Processors cancelled by their timeout (the run also counts as retry or error).",
            ["type"],
            registry=reg,
        )
        self._running = Gauge(
            f"{p}tasks_running", "Tasks this node holds now.", ["type"], registry=reg
        )
        self._stale = Counter(
            f"{p}triggers_stale",
            "Triggers that found nothing to grab (stale, duplicate or taken elsewhere).",
            registry=reg,
        )
        self._recovered = Counter(
            f"{p}tasks_recovered",
            "Stuck PROCESSING tasks resolved by this node, by strategy.",
            ["type", "strategy"],
            registry=reg,
        )
        self._cleaned = Counter(
            f"{p}tasks_cleaned", "Finished tasks deleted by this node.", registry=reg
        )
        self._sent = Counter(f"{p}triggers_sent", "Triggers the broker accepted.", registry=reg)
        self._failed = Counter(
            f"{p}triggers_failed", "Triggers that could not be sent.", registry=reg
        )
        self._up = Gauge(
            f"{p}dependency_up",
            "1 while the dependency answers this node, 0 during an outage.",
            ["dependency"],
            registry=reg,
        )
        self._outages = Counter(
            f"{p}outages",
            "Outages of a dependency seen by this node.",
            ["dependency"],
            registry=reg,
        )
        self.triggers_in_memory = Gauge(
            f"{p}triggers_in_memory",
            "Triggers this node holds: running, or grabbed and waiting for a slot.",
            registry=reg,
        )
        """Set its value with ``set_function`` (bootstrap binds it to the executor)."""
        for dependency in _DEPENDENCIES:
            self._up.labels(dependency).set(1)
            self._outages.labels(dependency)
        self._types = {t: self._children(t) for t in sorted(set(task_types)) if t != OTHER_TYPE}
        self._other = self._children(OTHER_TYPE)

    def _children(self, label: str) -> _TypeMetrics:
        return _TypeMetrics(
            added=self._added.labels(label),
            processed={o: self._processed.labels(label, o.value) for o in ProcessOutcome},
            processing=self._processing.labels(label),
            queue_delay=self._queue_delay.labels(label),
            timed_out=self._timed_out.labels(label),
            running=self._running.labels(label),
        )

    def _of(self, task_type: str) -> _TypeMetrics:
        return self._types.get(task_type, self._other)

    def label_of(self, task_type: str) -> str:
        """The ``type`` label value ``task_type`` is counted under."""
        return task_type if task_type in self._types else OTHER_TYPE

    def watch_triggers_in_memory(self, read: Callable[[], float]) -> None:
        """Read the ``triggers_in_memory`` gauge from ``read`` at each scrape."""
        self.triggers_in_memory.set_function(read)

    # --- Observer -----------------------------------------------------------------------
    def task_added(self, task_type: str, count: int = 1) -> None:
        """Count stored tasks."""
        self._of(task_type).added.inc(count)

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        """Observe the queue delay; one more task running."""
        metrics = self._of(task_type)
        metrics.queue_delay.observe(max(queue_delay, 0.0))
        metrics.running.inc()

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        """Count the outcome; observe the processing time."""
        metrics = self._of(task_type)
        metrics.processed[outcome].inc()
        if outcome is not ProcessOutcome.FENCED:
            metrics.processing.observe(seconds)

    def task_timed_out(self, task_type: str) -> None:
        """Count a timeout."""
        self._of(task_type).timed_out.inc()

    def task_stale(self) -> None:
        """Count a stale trigger."""
        self._stale.inc()

    def task_released(self, task_type: str) -> None:
        """One task fewer running."""
        self._of(task_type).running.dec()

    def tasks_recovered(self, task_type: str, strategy: RecoveryStrategy) -> None:
        """Count a stuck task resolved."""
        self._recovered.labels(self.label_of(task_type), strategy.value).inc()

    def tasks_cleaned(self, count: int) -> None:
        """Count deleted tasks."""
        self._cleaned.inc(count)

    def triggers_sent(self, count: int) -> None:
        """Count sent triggers."""
        self._sent.inc(count)

    def triggers_failed(self, count: int) -> None:
        """Count failed triggers."""
        self._failed.inc(count)

    def outage(self, dependency: str, *, down: bool) -> None:
        """Flip ``dependency_up``; count the outage when it begins."""
        label = dependency if dependency in _DEPENDENCIES else OTHER_TYPE
        self._up.labels(label).set(0 if down else 1)
        if down:
            self._outages.labels(label).inc()

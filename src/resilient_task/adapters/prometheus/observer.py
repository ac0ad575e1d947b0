"""The Prometheus adapter of the :class:`~resilient_task.ports.observer.Observer` port.

Names follow Prometheus conventions under the ``resilient_task_`` prefix. The ``type`` label
takes only the task types of registered handlers (``TaskHandler(types=...)``) and ``other``
for every other type, so no producer can grow the number of series.

The per-task events (grabbed, processed, released, added, timed out) are on the executor's
hot path: they update plain numbers of a per-type record found with one dict look-up -- no
lock, no label resolution -- and a collector turns them into metric families when
``/metrics`` is scraped. That is safe because events and scrapes run in the same event loop
(the endpoints are served by the node's loop); prometheus_client's own metric objects, which
take a lock per update, cost ten times more per task. The rare events (recoveries, outages,
triggers sent) use prometheus_client's metrics directly.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from resilient_task.ports.observer import ProcessOutcome, RecoveryStrategy

__all__ = ["OTHER_TYPE", "PREFIX", "PrometheusObserver"]

PREFIX = "resilient_task_"
"""The prefix of every metric name."""

OTHER_TYPE = "other"
"""The ``type`` label of tasks whose type no registered handler names."""

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip
"""Upper bounds (seconds) of the processing-time and queue-delay histograms."""

_DEPENDENCIES = ("database", "trigger broker")
_OUTCOMES = tuple(ProcessOutcome)


class _Histogram:
    """Bucket counts and a sum; ``observe`` is a bisect and two additions."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        return out


class _TypeStats:
    """What the hot path counts for one ``type`` label value."""

    __slots__ = ("added", "processed", "processing", "queue_delay", "running", "timed_out")

    def __init__(self) -> None:
        self.added = 0
        self.processed = dict.fromkeys(_OUTCOMES, 0)
        self.processing = _Histogram()
        self.queue_delay = _Histogram()
        self.timed_out = 0
        self.running = 0


class _TaskCollector(Collector):
    """Turns the per-type records into metric families at scrape time."""

    def __init__(self, stats: dict[str, _TypeStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        p = PREFIX
        added = CounterMetricFamily(
            f"{p}tasks_added", "Tasks stored by this node.", labels=["type"]
        )
        processed = CounterMetricFamily(
            f"{p}tasks_processed",
            "Task runs ended on this node, by recorded outcome.",
            labels=["type", "outcome"],
        )
        timed_out = CounterMetricFamily(
            f"{p}tasks_timed_out",
            "Processors cancelled by their timeout (the run also counts as retry or error).",
            labels=["type"],
        )
        running = GaugeMetricFamily(
            f"{p}tasks_running", "Tasks this node holds now.", labels=["type"]
        )
        processing = HistogramMetricFamily(
            f"{p}task_processing_seconds",
            "Time from the grab to the run's outcome being decided.",
            labels=["type"],
        )
        queue_delay = HistogramMetricFamily(
            f"{p}task_queue_delay_seconds",
            "Time from the task becoming due (SUBMITTED) to its grab.",
            labels=["type"],
        )
        for label, stats in self._stats.items():
            added.add_metric([label], stats.added)
            for outcome, count in stats.processed.items():
                processed.add_metric([label, outcome.value], count)
            timed_out.add_metric([label], stats.timed_out)
            running.add_metric([label], stats.running)
            processing.add_metric(
                [label], stats.processing.buckets(), sum_value=stats.processing.total
            )
            queue_delay.add_metric(
                [label], stats.queue_delay.buckets(), sum_value=stats.queue_delay.total
            )
        yield from (added, processed, timed_out, running, processing, queue_delay)


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
        labels = sorted({t for t in task_types if t != OTHER_TYPE})
        self._by_label = {label: _TypeStats() for label in (*labels, OTHER_TYPE)}
        self._types = {label: self._by_label[label] for label in labels}
        self._other = self._by_label[OTHER_TYPE]
        reg.register(_TaskCollector(self._by_label))
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
        self._lag = Gauge(
            f"{p}kafka_consumer_lag",
            "Triggers of a partition this node consumes not yet handled and committed "
            "(log end offset minus the group's committed offset).",
            ["topic", "partition"],
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

    def _of(self, task_type: str) -> _TypeStats:
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
        self._of(task_type).added += count

    def task_grabbed(self, task_type: str, queue_delay: float) -> None:
        """Observe the queue delay; one more task running."""
        stats = self._types.get(task_type, self._other)
        stats.queue_delay.observe(queue_delay if queue_delay > 0.0 else 0.0)
        stats.running += 1

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        """Count the outcome; observe the processing time."""
        stats = self._types.get(task_type, self._other)
        stats.processed[outcome] += 1
        if outcome is not ProcessOutcome.FENCED:
            stats.processing.observe(seconds)

    def task_timed_out(self, task_type: str) -> None:
        """Count a timeout."""
        self._of(task_type).timed_out += 1

    def task_stale(self) -> None:
        """Count a stale trigger."""
        self._stale.inc()

    def task_released(self, task_type: str) -> None:
        """One task fewer running."""
        self._types.get(task_type, self._other).running -= 1

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

    def consumer_lag(self, topic: str, partition: int, lag: int | None) -> None:
        """Set the partition's lag; drop its series when this node no longer consumes it."""
        labels = (topic, str(partition))
        if lag is not None:
            self._lag.labels(*labels).set(lag)
            return
        with contextlib.suppress(KeyError):  # never reported
            self._lag.remove(*labels)

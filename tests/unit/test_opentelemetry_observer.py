"""The OpenTelemetry observer: a span per run, per outage and per recovery, at their real times.

Spans go to the SDK's in-memory exporter; the last test runs a node through the real
composition root and finds one span per run with its outcome.
"""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the opentelemetry-sdk package is not installed")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from resilient_task import NoRetryPolicy, ProcessResult, Task, TaskStatus
from resilient_task.adapters.opentelemetry import OpenTelemetryObserver
from resilient_task.ports.observer import Observer, ProcessOutcome, RecoveryStrategy
from tests.unit.helpers import FakeNode, handler, settle

NOW = 1_800_000_000 * 10**9  # ns since the epoch


class Traced:
    """An observer over an in-memory exporter, on a clock the test moves."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.now = NOW
        self.observer = OpenTelemetryObserver(
            tracer=provider.get_tracer("test"), now_ns=lambda: self.now
        )

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def traced() -> Traced:
    return Traced()


def test_it_implements_every_observer_method() -> None:
    observer: Observer = OpenTelemetryObserver()  # mypy checks the protocol
    assert observer is not None


def test_a_run_is_a_span_from_the_grab_to_its_outcome(traced: Traced) -> None:
    traced.observer.task_processed("charge", ProcessOutcome.DONE, 1.5)
    traced.observer.task_processed("charge", ProcessOutcome.RETRY, 0.25)
    traced.observer.task_processed("charge", ProcessOutcome.FENCED, 0.0)

    done, retried, fenced = traced.spans()
    assert done.name == "resilient_task process"
    assert (done.start_time, done.end_time) == (NOW - 1_500_000_000, NOW)
    assert done.attributes == {
        "resilient_task.task.type": "charge",
        "resilient_task.outcome": "done",
    }
    assert done.status.status_code is StatusCode.UNSET
    assert retried.start_time == NOW - 250_000_000
    assert retried.status.status_code is StatusCode.ERROR
    assert fenced.attributes is not None
    assert fenced.attributes["resilient_task.outcome"] == "fenced"
    assert fenced.status.status_code is StatusCode.UNSET


def test_an_outage_is_one_span_from_its_beginning_to_its_end(traced: Traced) -> None:
    traced.observer.outage("database", down=True)
    traced.now += 7 * 10**9
    traced.observer.outage("database", down=True)  # still down: the same outage
    traced.observer.outage("trigger broker", down=False)  # was not down: nothing
    assert traced.spans() == ()
    traced.now += 3 * 10**9
    traced.observer.outage("database", down=False)

    [outage] = traced.spans()
    assert outage.name == "resilient_task outage"
    assert (outage.start_time, outage.end_time) == (NOW, NOW + 10 * 10**9)
    assert outage.attributes == {"resilient_task.dependency": "database"}
    assert outage.status.status_code is StatusCode.ERROR


def test_a_recovery_is_an_instant_span_with_its_strategy(traced: Traced) -> None:
    traced.observer.tasks_recovered("charge", RecoveryStrategy.MARK_AS_ERROR)
    [span] = traced.spans()
    assert (span.name, span.start_time, span.end_time) == ("resilient_task recover", NOW, NOW)
    assert span.attributes == {
        "resilient_task.task.type": "charge",
        "resilient_task.strategy": "mark_as_error",
    }


def test_the_other_events_make_no_span(traced: Traced) -> None:
    o = traced.observer
    o.task_added("charge", 3)
    o.task_grabbed("charge", 0.1)
    o.task_timed_out("charge")
    o.task_stale()
    o.task_released("charge")
    o.tasks_cleaned(5)
    o.triggers_sent(2)
    o.triggers_failed(1)
    o.consumer_lag("t", 0, 4)
    assert traced.spans() == ()


@pytest.mark.anyio
async def test_a_node_records_one_span_per_run_with_its_outcome(traced: Traced) -> None:
    async def ok(task: Task) -> ProcessResult:
        return ProcessResult.DONE

    async def fails(task: Task) -> ProcessResult:
        raise ValueError("declined")

    node = FakeNode(
        handler(ok, types=["ok"]), handler(fails, types=["bad"], retry_policy=NoRetryPolicy())
    )
    node.app.observer = traced.observer
    async with node:
        ids = [await node.add("ok"), await node.add("ok"), await node.add("bad")]
        for task_id in ids:
            await node.wait_for(task_id, TaskStatus.DONE, TaskStatus.ERROR)
        await settle(lambda: node.executor.running == 0)

    runs = sorted(
        (str(s.attributes["resilient_task.task.type"]), str(s.attributes["resilient_task.outcome"]))
        for s in traced.spans()
        if s.name == "resilient_task process" and s.attributes is not None
    )
    assert runs == [("bad", "error"), ("ok", "done"), ("ok", "done")]

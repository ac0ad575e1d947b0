"""The Prometheus observer: names, label rules, the cluster gauges, and the HTTP endpoints."""

from __future__ import annotations

import functools
import inspect
from datetime import timedelta

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from resilient_task import TaskStatus
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.adapters.prometheus import ClusterGauges, PrometheusObserver, SoleNodeLock
from resilient_task.adapters.prometheus.server import route, serve_metrics
from resilient_task.ports.observer import NullObserver, Observer, ProcessOutcome, RecoveryStrategy
from resilient_task.service.health import Readiness
from tests.unit.helpers import stored_task


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_null_observer_implements_every_observer_method() -> None:
    port = {n for n, _ in inspect.getmembers(Observer, inspect.isfunction) if not n.startswith("_")}
    null = {n for n, _ in inspect.getmembers(NullObserver, inspect.isfunction)}
    prom = {n for n, _ in inspect.getmembers(PrometheusObserver, inspect.isfunction)}
    assert port <= null
    assert port <= prom
    for name in port:
        assert inspect.signature(getattr(NullObserver, name)) == inspect.signature(
            getattr(Observer, name)
        )


def test_events_are_counted_under_their_prefixed_names() -> None:
    obs = PrometheusObserver(task_types={"payment"})
    obs.task_added("payment", 3)
    obs.task_grabbed("payment", 0.2)
    obs.task_processed("payment", ProcessOutcome.DONE, 0.01)
    obs.task_processed("payment", ProcessOutcome.RETRY, 0.5)
    obs.task_processed("payment", ProcessOutcome.FENCED, 0.0)
    obs.task_timed_out("payment")
    obs.task_released("payment")
    obs.tasks_recovered("payment", RecoveryStrategy.RETRY)
    obs.tasks_cleaned(7)
    obs.triggers_sent(4)
    obs.triggers_failed(2)
    obs.task_stale()
    obs.outage("database", down=True)
    got = samples(obs.registry)
    t = (("type", "payment"),)
    assert got[("resilient_task_tasks_added_total", t)] == 3
    assert got[("resilient_task_tasks_processed_total", (("outcome", "done"), *t))] == 1
    assert got[("resilient_task_tasks_processed_total", (("outcome", "retry"), *t))] == 1
    assert got[("resilient_task_tasks_processed_total", (("outcome", "fenced"), *t))] == 1
    assert got[("resilient_task_task_processing_seconds_count", t)] == 2  # fenced: no time
    assert got[("resilient_task_task_queue_delay_seconds_count", t)] == 1
    assert got[("resilient_task_tasks_timed_out_total", t)] == 1
    assert got[("resilient_task_tasks_running", t)] == 0
    assert got[("resilient_task_tasks_recovered_total", (("strategy", "retry"), *t))] == 1
    assert got[("resilient_task_tasks_cleaned_total", ())] == 7
    assert got[("resilient_task_triggers_sent_total", ())] == 4
    assert got[("resilient_task_triggers_failed_total", ())] == 2
    assert got[("resilient_task_triggers_stale_total", ())] == 1
    assert got[("resilient_task_dependency_up", (("dependency", "database"),))] == 0
    assert got[("resilient_task_outages_total", (("dependency", "database"),))] == 1
    obs.outage("database", down=False)
    assert samples(obs.registry)[("resilient_task_dependency_up", (("dependency", "database"),))]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), max_size=40))
def test_unregistered_types_are_counted_as_other_so_cardinality_stays_bounded(
    types: list[str],
) -> None:
    obs = PrometheusObserver(task_types={"payment", "email"})
    for task_type in types:
        obs.task_added(task_type)
        obs.task_processed(task_type, ProcessOutcome.ERROR, 0.1)
        obs.tasks_recovered(task_type, RecoveryStrategy.MARK_AS_ERROR)
    labels = {
        dict(labels).get("type")
        for (_name, labels) in samples(obs.registry)
        if dict(labels).get("type") is not None
    }
    assert labels <= {"payment", "email", "other"}
    others = sum(1 for t in types if t not in ("payment", "email"))
    key = ("resilient_task_tasks_added_total", (("type", "other"),))
    assert samples(obs.registry)[key] == others


@pytest.mark.anyio
async def test_cluster_gauges_count_every_status_and_the_oldest_overdue_age() -> None:
    clock = FakeClock()
    now = clock.now()
    dao = InMemoryTaskDAO(
        tasks=[
            stored_task(type="payment", status=TaskStatus.ERROR, next_event_time=now),
            stored_task(type="payment", status=TaskStatus.ERROR, next_event_time=now),
            stored_task(type="mystery", status=TaskStatus.ERROR, next_event_time=now),
            stored_task(
                type="payment",
                status=TaskStatus.SUBMITTED,
                next_event_time=now - timedelta(seconds=90),
            ),
        ]
    )
    registry = CollectorRegistry()
    gauges = ClusterGauges(
        queries=InMemoryTaskQueries(dao=dao),
        lock=SoleNodeLock(),
        clock=clock,
        registry=registry,
        task_types=frozenset({"payment"}),
    )
    assert await gauges.refresh()
    got = samples(registry)
    assert got[("resilient_task_tasks", (("status", "ERROR"), ("type", "payment")))] == 2
    assert got[("resilient_task_tasks", (("status", "ERROR"), ("type", "other")))] == 1
    assert got[("resilient_task_tasks", (("status", "DONE"), ("type", "payment")))] == 0
    assert got[("resilient_task_oldest_overdue_seconds", (("status", "SUBMITTED"),))] == 90
    assert got[("resilient_task_oldest_overdue_seconds", (("status", "PROCESSING"),))] == 0


class _Taken:
    async def try_hold(self) -> bool:
        return False

    async def release(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_node_without_the_lock_exports_no_cluster_gauges() -> None:
    clock = FakeClock()
    dao = InMemoryTaskDAO(tasks=[stored_task(status=TaskStatus.ERROR, next_event_time=clock.now())])
    registry = CollectorRegistry()
    gauges = ClusterGauges(
        queries=InMemoryTaskQueries(dao=dao),
        lock=_Taken(),
        clock=clock,
        registry=registry,
        task_types=frozenset(),
    )
    assert not await gauges.refresh()
    assert not [k for k in samples(registry) if k[0] == "resilient_task_tasks"]


def test_routes_answer_metrics_health_and_readiness() -> None:
    obs = PrometheusObserver(task_types={"payment"})
    obs.task_added("payment")
    metrics = route("GET /metrics HTTP/1.1", obs.registry, lambda: Readiness(True, ""))
    assert metrics.startswith(b"HTTP/1.0 200 OK")
    assert b"resilient_task_tasks_added_total" in metrics
    assert route("GET /healthz HTTP/1.1", obs.registry, lambda: Readiness(False, "x")).startswith(
        b"HTTP/1.0 200"
    )
    unready = route("GET /readyz HTTP/1.1", obs.registry, lambda: Readiness(False, "store down"))
    assert unready.startswith(b"HTTP/1.0 503")
    assert unready.endswith(b"not ready: store down\n")
    assert route("GET /nope HTTP/1.1", obs.registry, lambda: Readiness(True, "")).startswith(
        b"HTTP/1.0 404"
    )
    assert route("POST /metrics HTTP/1.1", obs.registry, lambda: Readiness(True, "")).startswith(
        b"HTTP/1.0 405"
    )
    assert route("", obs.registry, lambda: Readiness(True, "")).startswith(b"HTTP/1.0 400")


@pytest.mark.anyio
async def test_the_server_answers_over_tcp_on_loopback() -> None:
    obs = PrometheusObserver()
    async with anyio.create_task_group() as tg:
        serve = functools.partial(
            serve_metrics, registry=obs.registry, readiness=lambda: Readiness(True, ""), port=0
        )
        port = await tg.start(serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            try:
                while True:
                    answer += await stream.receive()
            except anyio.EndOfStream:
                pass
        assert answer.startswith(b"HTTP/1.0 200 OK")
        assert answer.endswith(b"ready\n")
        tg.cancel_scope.cancel()

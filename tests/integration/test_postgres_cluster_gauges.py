"""Cluster gauges on PostgreSQL: one node at a time holds the advisory lock and exports them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilient_task import TaskStatus
from resilient_task.adapters.memory import FakeClock
from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, open_postgres_dao
from resilient_task.adapters.postgres.cluster_lock import PostgresAdvisoryLock
from resilient_task.adapters.postgres.queries import PostgresTaskQueries
from resilient_task.adapters.prometheus import ClusterGauges
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from tests.integration.postgres_env import isolated_schema
from tests.unit.helpers import stored_task

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[PostgresSettings]:
    async with isolated_schema(database_url) as settings:
        yield settings


def gauges(
    dao: PostgresTaskDAO, lock: PostgresAdvisoryLock, clock: FakeClock
) -> tuple[ClusterGauges, CollectorRegistry]:
    registry = CollectorRegistry()
    made = ClusterGauges(
        queries=PostgresTaskQueries(dao=dao),
        lock=lock,
        clock=clock,
        registry=registry,
        task_types=frozenset({"payment"}),
    )
    return made, registry


def values(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_one_node_at_a_time_exports_the_cluster_gauges_and_another_takes_over(
    database_url: str, schema: PostgresSettings
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start=now)
    async with (
        open_postgres_dao(database_url, schema=schema.schema) as one,
        open_postgres_dao(database_url, schema=schema.schema) as two,
    ):
        submitted = [
            stored_task(type=t, status=TaskStatus.SUBMITTED, next_event_time=now, version=0)
            for t in ("payment", "odd")
        ]
        late = stored_task(
            type="payment",
            status=TaskStatus.SUBMITTED,
            next_event_time=now - timedelta(seconds=42),
            version=0,
        )
        await one.insert_tasks([*submitted, late])
        grabbed = await one.grab(
            [GrabRequest(t.id, 0, "n", now + timedelta(hours=1)) for t in submitted], now=now
        )
        errors = [TaskChange(t.mark_error(now=now, reason="x"), t.version) for t in grabbed]
        assert all(await one.apply(errors))
        lock_one, lock_two = PostgresAdvisoryLock(dao=one), PostgresAdvisoryLock(dao=two)
        first, first_registry = gauges(one, lock_one, clock)
        second, second_registry = gauges(two, lock_two, clock)
        assert await first.refresh()
        assert not await second.refresh()
        assert await first.refresh()  # still held: its session lives on
        got = values(first_registry)
        assert got[("resilient_task_tasks", (("status", "ERROR"), ("type", "payment")))] == 1
        assert got[("resilient_task_tasks", (("status", "ERROR"), ("type", "other")))] == 1
        assert got[("resilient_task_oldest_overdue_seconds", (("status", "SUBMITTED"),))] == 42
        assert not [k for k in values(second_registry) if k[0] == "resilient_task_tasks"]
        await lock_one.release()  # the first node stops
        assert await second.refresh()
        assert not await first.refresh()
        await lock_two.release()


async def test_two_stores_in_one_database_do_not_share_the_lock(
    database_url: str, schema: PostgresSettings
) -> None:
    async with (
        isolated_schema(database_url) as other,
        open_postgres_dao(database_url, schema=schema.schema) as one,
        open_postgres_dao(database_url, schema=other.schema) as two,
    ):
        a, b = PostgresAdvisoryLock(dao=one), PostgresAdvisoryLock(dao=two)
        assert a.key != b.key
        assert await a.try_hold()
        assert await b.try_hold()
        await a.release()
        await b.release()

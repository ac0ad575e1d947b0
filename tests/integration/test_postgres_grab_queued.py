"""PostgreSQL's grab tells when each task became SUBMITTED, read in the grab's own UPDATE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, create_engine
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ports.task_dao import GrabRequest, TaskChange

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.fixture
async def dao(database_url: str, settings: PostgresSettings) -> AsyncIterator[PostgresTaskDAO]:
    engine = create_engine(database_url, pool_size=2)
    dao = PostgresTaskDAO(engine=engine, settings=settings)
    await dao.open()
    yield dao
    await engine.dispose()


def submitted(*, at: datetime) -> Task:
    return Task(
        id=uuid4(),
        type="email",
        data=b"payload",
        status=TaskStatus.SUBMITTED,
        next_event_time=at + 60 * SECOND,
        created_at=at - 3600 * SECOND,
        updated_at=at,
    )


async def test_grab_queued_returns_the_submission_time_of_each_grabbed_task(
    dao: PostgresTaskDAO,
) -> None:
    early, late = submitted(at=NOW - 9 * SECOND), submitted(at=NOW - 2 * SECOND)
    await dao.insert_tasks([early, late])
    # ``late`` is re-submitted at NOW - 1 s: its queue wait starts again there.
    resubmitted = late.resubmit(now=NOW - SECOND, deadline=NOW + 60 * SECOND)
    assert await dao.apply([TaskChange(resubmitted, late.version)]) == [True]
    requests = [
        GrabRequest(late.id, resubmitted.version, "node-1", NOW + 300 * SECOND),
        GrabRequest(uuid4(), 0, "node-1", NOW + 300 * SECOND),  # nothing to grab
        GrabRequest(early.id, early.version, "node-1", NOW + 300 * SECOND),
    ]

    grabbed = await dao.grab_queued(requests, now=NOW)

    assert [(g.task.id, g.queued_at) for g in grabbed] == [
        (late.id, NOW - SECOND),
        (early.id, NOW - 9 * SECOND),
    ]
    assert all(g.task.updated_at == NOW and g.task.data == b"payload" for g in grabbed)
    assert all(g.task.status is TaskStatus.PROCESSING for g in grabbed)
    assert await dao.grab_queued(requests, now=NOW) == []  # already grabbed: stale

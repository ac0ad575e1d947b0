"""Large batches go through COPY (``inserts``) with the outcomes of the array statement.

Each batch mixes everything deduplication must get right: ids and unique keys repeated inside
the batch, ids and keys already stored, tasks without payload, compressed payloads. The
same batch is inserted through COPY into one schema and through the array statement into
another with the same stored tasks; outcomes and stored rows must be equal.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa

from resilient_task.adapters.postgres import PostgresTaskDAO, create_engine, inserts
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import ValidationError
from tests.contract.task_dao_contract import NOW, make_task
from tests.integration.postgres_env import isolated_schema

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@asynccontextmanager
async def _dao(url: str, **settings: Any) -> AsyncIterator[PostgresTaskDAO]:
    async with isolated_schema(url, **settings) as s:
        engine = create_engine(url, pool_size=2, max_overflow=2)
        async with PostgresTaskDAO(engine=engine, settings=s, owns_engine=True) as dao:
            yield dao


def _batch(seed: int, stored: list[Task], size: int = 300) -> list[Task]:
    rnd = random.Random(seed)
    tasks: list[Task] = []
    for n in range(size):
        roll = rnd.random()
        if roll < 0.08 and tasks:  # an id already in the batch
            twin = rnd.choice(tasks)
            tasks.append(make_task(id=twin.id, type=twin.type, data=b"other"))
        elif roll < 0.14 and stored:  # an id already stored
            tasks.append(make_task(id=rnd.choice(stored).id))
        elif roll < 0.22:  # a unique key, often repeated or stored already
            tasks.append(make_task(type=f"t{n % 3}", unique_key=f"k{rnd.randrange(20)}"))
        else:
            tasks.append(
                make_task(
                    type=f"t{n % 3}",
                    sub_type=rnd.choice([None, "s"]),
                    priority=rnd.randrange(10),
                    data=rnd.choice([b"", b"x" * rnd.randrange(1, 3000), b"abc"]),
                    status=rnd.choice([TaskStatus.WAITING, TaskStatus.SUBMITTED]),
                    next_event_time=NOW + timedelta(seconds=rnd.randrange(100)),
                )
            )
    return tasks


def _stored(seed: int) -> list[Task]:
    rnd = random.Random(-seed)
    return [
        make_task(type=f"t{n % 3}", unique_key=f"k{rnd.randrange(20)}" if n % 2 else None)
        for n in range(15)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_copy_and_array_inserts_give_the_same_outcomes_and_rows(
    database_url: str, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    stored = _stored(seed)
    batch = _batch(seed, stored)
    results = []
    calls = {"copy": 0}
    original = inserts._insert_copy

    async def counting(*args: Any) -> set[UUID]:
        calls["copy"] += 1
        return await original(*args)

    monkeypatch.setattr(inserts, "_insert_copy", counting)
    for threshold in (inserts.COPY_THRESHOLD, 10**9):  # COPY, then the array statement
        monkeypatch.setattr(inserts, "COPY_THRESHOLD", threshold)
        async with _dao(database_url, compression_threshold=1000) as dao:
            await dao.insert_tasks(stored)
            outcomes = await dao.insert_tasks(batch)
            rows = {o.task_id: await dao.get_task(o.task_id) for o in outcomes}
            results.append((outcomes, rows))
    assert calls["copy"] >= 1  # the first round really went through COPY
    (copy_outcomes, copy_rows), (array_outcomes, array_rows) = results
    assert copy_outcomes == array_outcomes
    assert copy_rows == array_rows
    assert sum(o.created for o in copy_outcomes) > 100


async def test_copy_batches_in_a_callers_transaction_commit_or_roll_back_with_it(
    database_url: str,
) -> None:
    async with _dao(database_url) as dao:
        first = [make_task(type="tx") for _ in range(inserts.COPY_THRESHOLD)]
        second = [make_task(type="tx") for _ in range(inserts.COPY_THRESHOLD)]

        async def rolled_back() -> None:
            async with dao.transaction() as tx:
                await dao.insert_tasks(first, transaction=tx)
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await rolled_back()
        assert await dao.get_task(first[0].id) is None
        async with dao.transaction() as tx:
            # Twice in one transaction: the second batch must not see the first's staged rows.
            a = await dao.insert_tasks(first, transaction=tx)
            b = await dao.insert_tasks(second + first[:3], transaction=tx)
        assert all(o.created for o in a)
        assert [o.created for o in b] == [True] * len(second) + [False] * 3
        async with dao.engine.connect() as conn:
            count = await conn.scalar(
                sa.text(f'SELECT count(*) FROM "{dao.settings.schema}".resilient_task_tasks')
            )
        assert count == 2 * inserts.COPY_THRESHOLD


@pytest.mark.parametrize("priority", [2**15, 2**20, -(2**16) - 1, 2**70])
async def test_a_value_the_column_cannot_hold_is_refused_as_by_the_array_statement(
    database_url: str, monkeypatch: pytest.MonkeyPatch, priority: int
) -> None:
    """Binary COPY would wrap 2**20 into a smallint as 0; the insert must refuse it instead."""
    errors = []
    size = inserts.COPY_THRESHOLD
    for threshold in (size, 10**9):  # COPY, then the array statement
        monkeypatch.setattr(inserts, "COPY_THRESHOLD", threshold)
        async with _dao(database_url) as dao:
            good = [make_task(type="ok") for _ in range(size)]
            bad = [*good[:-1], make_task(type="ok", priority=priority)]
            with pytest.raises(ValidationError) as caught:
                await dao.insert_tasks(bad)
            errors.append(str(caught.value))
            assert await dao.get_task(good[0].id) is None  # nothing of the batch stored
            assert all(o.created for o in await dao.insert_tasks(good))  # the next one works
    assert errors[0] == errors[1]

"""Micro-benchmark of PostgresTaskDAO's hot calls, for before/after comparisons of the adapter.

Not part of ``python -m bench`` (no worker, no broker): it times the store calls alone, in one
process, on a scratch schema that is dropped afterwards::

    .venv/bin/python -m bench.micro_postgres                 # all four, 3 repetitions each
    .venv/bin/python -m bench.micro_postgres --only grab --repeat 5

- ``single``: ``insert_tasks([task])`` one after the other (one autocommit statement each);
- ``bulk``: ``insert_tasks`` of 1000 tasks;
- ``cycle``: the worker's round trips for a batch of ``--batch`` SUBMITTED tasks: one grab,
  then one ``apply`` completing them (DONE), as the executor does with the default
  concurrency of 10;
- ``grab``: the grab alone (batch of ``--batch``), as the latency path sees it.

Prints the median rate of the repetitions (and every repetition).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, upgrade
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ids import uuid7
from resilient_task.ports.task_dao import GrabRequest, TaskChange

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PAYLOAD = b'{"order_id": 123456, "amount": "99.95", "currency": "EUR", "note": "benchmark"}'


def _task(now: datetime, status: TaskStatus = TaskStatus.SUBMITTED) -> Task:
    return Task(
        id=uuid7(),
        type="bench",
        data=PAYLOAD,
        status=status,
        next_event_time=now + timedelta(minutes=5),
        created_at=now,
        updated_at=now,
    )


async def _rate(n: int, run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    return n / (time.perf_counter() - start)


async def _single(dao: PostgresTaskDAO, n: int, _batch: int) -> float:
    now = datetime.now(UTC)
    tasks = [_task(now) for _ in range(n)]

    async def run() -> None:
        for t in tasks:
            await dao.insert_tasks([t])

    return await _rate(n, run)


async def _bulk(dao: PostgresTaskDAO, n: int, _batch: int) -> float:
    now = datetime.now(UTC)
    batches = [[_task(now) for _ in range(1000)] for _ in range(max(1, n // 1000))]

    async def run() -> None:
        for b in batches:
            await dao.insert_tasks(b)

    return await _rate(1000 * len(batches), run)


async def _submitted(dao: PostgresTaskDAO, n: int) -> list[Task]:
    now = datetime.now(UTC)
    tasks = [_task(now) for _ in range(n)]
    for i in range(0, n, 1000):
        await dao.insert_tasks(tasks[i : i + 1000])
    return tasks


async def _cycle(dao: PostgresTaskDAO, n: int, batch: int, *, complete: bool = True) -> float:
    tasks = await _submitted(dao, n)
    deadline = datetime.now(UTC) + timedelta(minutes=5)

    async def run() -> None:
        for i in range(0, n, batch):
            now = datetime.now(UTC)
            requests = [
                GrabRequest(t.id, t.version, "node", deadline) for t in tasks[i : i + batch]
            ]
            grabbed = await dao.grab(requests, now=now)
            assert len(grabbed) == len(requests), "grab lost tasks"
            if complete:
                changes = [TaskChange(t.complete(now=now), t.version) for t in grabbed]
                assert all(await dao.apply(changes)), "completion lost"

    return await _rate(n, run)


async def _grab(dao: PostgresTaskDAO, n: int, batch: int) -> float:
    return await _cycle(dao, n, batch, complete=False)


Section = Callable[[PostgresTaskDAO, int, int], Awaitable[float]]
SECTIONS: dict[str, tuple[Section, int]] = {
    "single": (_single, 3000),
    "bulk": (_bulk, 20000),
    "cycle": (_cycle, 10000),
    "grab": (_grab, 10000),
}


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    parsed: object = {"true": True, "false": False}.get(value.lower(), value)
    if isinstance(parsed, str) and parsed.replace(".", "", 1).isdigit():
        parsed = float(parsed) if "." in parsed else int(parsed)
    return key, parsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument(
        "--pool", action="append", default=[], metavar="K=V",
        help="engine option for create_engine, e.g. pool_pre_ping=false (repeatable)",
    )  # fmt: skip
    parser.add_argument("--no-prepare", action="store_true", help="prepared_statements=False")
    args = parser.parse_args()
    settings = PostgresSettings(
        schema=f"micro_{uuid.uuid4().hex[:8]}", prepared_statements=not args.no_prepare
    )
    pool = dict(_option(o) for o in args.pool)
    dao = PostgresTaskDAO.from_url(args.database_url, settings=settings, **pool)
    await upgrade(dao.engine, schema=settings.schema, prefix=settings.prefix)
    try:
        await dao.open()
        for name in args.only.split(","):
            run, n = SECTIONS[name]
            await run(dao, 200, args.batch)  # warm-up: pool, prepared statements
            rates = [await run(dao, n, args.batch) for _ in range(args.repeat)]
            runs = ", ".join(f"{r:,.0f}" for r in rates)
            print(f"{name:7} {statistics.median(rates):>9,.0f} tasks/s   (runs: {runs})")
    finally:
        async with dao.engine.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA {settings.schema} CASCADE"))
        await dao.close()


if __name__ == "__main__":
    asyncio.run(main())

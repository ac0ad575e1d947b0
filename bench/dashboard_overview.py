"""How long the dashboard's overview takes on a table of 1,000,000 tasks.

    .venv/bin/python -m bench.dashboard_overview [--database-url URL] [--rows 1000000]
        [--requests 30] [--keep]

Fills its own schema (``rt_bench_dashboard``) with ``--rows`` tasks in one
``INSERT ... SELECT generate_series`` (90% DONE over 30 days, one in fifteen of those within
the last hour; WAITING, SUBMITTED, PROCESSING, ERROR, FAILED and CANCELLED for the rest, 20
types, 10 nodes), runs ``VACUUM ANALYZE`` (what autovacuum does to a table that size), then
times ``GET /`` through the ASGI app (the PostgreSQL stats and operator, the template, no
network) and prints the median, p95 and worst of ``--requests`` requests after three warm-up
ones, next to what one exact ``count(*) GROUP BY status`` costs on the same table.

The URL defaults to $RESILIENT_TASK_TEST_DATABASE_URL; the schema is dropped at the end unless
``--keep`` (then a second run reuses it when it has the same row count).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, upgrade
from resilient_task.adapters.postgres.queries import PostgresTaskQueries
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.cli_tasks import build_operator
from resilient_task.dashboard import create_app
from resilient_task.dashboard.postgres_stats import PostgresDashboardStats

SCHEMA = "rt_bench_dashboard"
TABLE = f'"{SCHEMA}"."resilient_task_tasks"'

FILL = f"""
INSERT INTO {TABLE} (id, type, sub_type, status, version, priority, next_event_time,
    processing_tries_count, recovery_count, processing_node, last_error, unique_key,
    created_at, updated_at)
SELECT gen_random_uuid(), 'type_' || (i % 20), NULL, s.status, 3, 5, s.at,
    1, 0,
    CASE WHEN s.status IN ('DONE', 'PROCESSING', 'ERROR', 'FAILED') THEN 'node-' || (i % 10) END,
    CASE WHEN s.status IN ('ERROR', 'FAILED') THEN 'Traceback: boom ' || i END,
    NULL, s.at - interval '1 minute', s.at
FROM generate_series(1, :rows) AS i
CROSS JOIN LATERAL (SELECT
    CASE WHEN i % 1000 < 900 THEN 'DONE'
         WHEN i % 1000 < 950 THEN 'WAITING'
         WHEN i % 1000 < 970 THEN 'SUBMITTED'
         WHEN i % 1000 < 975 THEN 'PROCESSING'
         WHEN i % 1000 < 990 THEN 'ERROR'
         WHEN i % 1000 < 995 THEN 'FAILED'
         ELSE 'CANCELLED' END AS status,
    CASE WHEN i % 1000 < 900 AND i % 15 = 0 THEN now() - random() * interval '1 hour'
         WHEN i % 1000 < 900 THEN now() - interval '1 hour' - random() * interval '30 days'
         WHEN i % 1000 < 950 THEN now() + random() * interval '7 days'
         WHEN i % 1000 < 975 THEN now() + interval '5 minutes' - random() * interval '1 hour'
         ELSE now() - random() * interval '30 days' END AS at) AS s
"""


async def _fill(url: str, rows: int) -> None:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            have = await conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": TABLE})
            if have is not None:
                existing = await conn.scalar(sa.text(f"SELECT count(*) FROM {TABLE}"))
                if existing == rows:
                    print(f"reusing {SCHEMA}: {rows:,} tasks", file=sys.stderr)
                    return
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            await conn.commit()
        await upgrade(engine, schema=SCHEMA)
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(sa.text(FILL), {"rows": rows})
        print(f"inserted {rows:,} tasks in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text(f"VACUUM ANALYZE {TABLE}"))
    finally:
        await engine.dispose()


async def _exact_count_ms(url: str) -> float:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            statement = sa.text(f"SELECT status, count(*) FROM {TABLE} GROUP BY status")
            await conn.execute(statement)
            started = time.perf_counter()
            await conn.execute(statement)
            return (time.perf_counter() - started) * 1000
    finally:
        await engine.dispose()


async def _drop(url: str) -> None:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
    finally:
        await engine.dispose()


async def _time_overview(url: str, requests: int) -> list[float]:
    dao = PostgresTaskDAO.from_url(url, settings=PostgresSettings(schema=SCHEMA), pool_size=8)
    try:
        operator = build_operator(
            dao=dao, queries=PostgresTaskQueries(dao=dao), clock=SystemClock()
        )
        app = create_app(operator=operator, stats=PostgresDashboardStats(dao=dao), access_log=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(3):
                assert (await client.get("/")).status_code == 200
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                answer = await client.get("/")
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
                assert "DONE" in answer.text
            return times
    finally:
        await dao.close()


async def _main(args: argparse.Namespace) -> int:
    await _fill(args.database_url, args.rows)
    try:
        times = await _time_overview(args.database_url, args.requests)
        exact = await _exact_count_ms(args.database_url)
    finally:
        if not args.keep:
            await _drop(args.database_url)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"overview GET / on {args.rows:,} tasks, {len(times)} requests: "
        f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, worst {times[-1]:.1f} ms"
    )
    print(f"for comparison, one exact count(*) GROUP BY status: {exact:.1f} ms")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("RESILIENT_TASK_TEST_DATABASE_URL")
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the schema for another run")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or $RESILIENT_TASK_TEST_DATABASE_URL) is required")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())

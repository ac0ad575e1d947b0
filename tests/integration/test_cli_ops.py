"""``healthcheck``, ``db current`` and ``db sql`` against real PostgreSQL (and Kafka)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_task.adapters.postgres import SCHEMA_VERSION, PostgresSettings
from resilient_task.adapters.postgres.schema_check import schema_differences
from resilient_task.cli import main
from tests.integration.postgres_env import isolated_schema

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def empty(database_url: str) -> AsyncIterator[PostgresSettings]:
    async with isolated_schema(database_url, migrate=False) as settings:
        yield settings


@pytest.fixture
async def migrated(database_url: str) -> AsyncIterator[PostgresSettings]:
    async with isolated_schema(database_url) as settings:
        yield settings


async def run(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def where(url: str, s: PostgresSettings) -> list[str]:
    return ["--database-url", url, "--schema", s.schema, "--table-prefix", s.prefix]


async def test_db_sql_applied_by_hand_gives_the_schema_db_upgrade_gives(
    database_url: str, empty: PostgresSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("db", "sql", "--schema", empty.schema, "--table-prefix", empty.prefix) == 0
    script = capsys.readouterr().out
    assert script.startswith("-- resilient-task")
    assert script.rstrip().endswith("COMMIT;")
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(script)  # type: ignore[union-attr]
            await raw.driver_connection.commit()  # type: ignore[union-attr]
        assert await schema_differences(engine, schema=empty.schema, prefix=empty.prefix) == []
    finally:
        await engine.dispose()
    assert await run("db", "current", *where(database_url, empty)) == 0
    assert f"schema version {SCHEMA_VERSION}" in capsys.readouterr().out


async def test_db_sql_from_the_current_version_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run("db", "sql", "--from-version", str(SCHEMA_VERSION)) == 0
    assert "CREATE TABLE IF NOT EXISTS" in capsys.readouterr().out  # the version table only
    assert await run("db", "sql", "--from-version", str(SCHEMA_VERSION + 1)) == 2
    assert capsys.readouterr().err.count("\n") == 1


async def test_db_current_exits_1_on_a_missing_schema_and_when_unreachable(
    database_url: str, empty: PostgresSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("db", "current", *where(database_url, empty)) == 1
    assert "schema version 0" in capsys.readouterr().out
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"
    assert await run("db", "current", "--database-url", dead) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert err.count("\n") == 1


async def test_healthcheck_passes_on_a_current_schema_and_a_live_broker(
    database_url: str,
    migrated: PostgresSettings,
    kafka_bootstrap: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["healthcheck", *where(database_url, migrated), "--kafka-bootstrap", kafka_bootstrap]
    assert await run(*argv, "--json") == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True
    assert set(body["checks"]) == {"store", "schema", "broker"}


async def test_healthcheck_fails_on_an_old_schema_a_dead_store_and_a_dead_broker(
    database_url: str, empty: PostgresSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("healthcheck", *where(database_url, empty)) == 1
    out = capsys.readouterr().out
    assert "store: ok" in out
    assert "schema: FAILED" in out
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"
    argv = ["healthcheck", "--database-url", dead_db, "--kafka-bootstrap"]
    assert await run(*argv, f"127.0.0.1:{free_port()}", "--timeout", "3", "--json") == 1
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is False
    assert {name for name, c in body["checks"].items() if not c["ok"]} == {
        "store",
        "schema",
        "broker",
    }

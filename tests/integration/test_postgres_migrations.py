"""Schema migrations: idempotent, concurrent-safe, version-checked, and matching the Core tables."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from resilient_task.adapters.postgres import (
    SCHEMA_VERSION,
    PostgresSettings,
    PostgresTaskDAO,
    create_engine,
    current_version,
    db_current_main,
    db_upgrade_main,
    upgrade,
)
from resilient_task.adapters.postgres.migrations import upgrade_steps
from resilient_task.adapters.postgres.schema import DEFAULT_PREFIX, DEFAULT_SCHEMA, Tables
from resilient_task.adapters.postgres.schema_check import _CHECKS, _INDEXES, schema_differences
from resilient_task.cli import main as cli_main
from resilient_task.errors import ConfigurationError, SchemaVersionError
from tests.integration.postgres_env import isolated_schema

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def empty_schema(database_url: str) -> AsyncIterator[PostgresSettings]:
    async with isolated_schema(database_url, migrate=False) as settings:
        yield settings


async def _set_version(engine: AsyncEngine, settings: PostgresSettings, version: int) -> None:
    table = Tables.build(settings).schema_version
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(table).values(version=version, description="from the future",
                                    applied_at=sa.func.now())
        )  # fmt: skip


async def test_upgrade_creates_the_tables_and_records_the_version(
    engine: AsyncEngine, empty_schema: PostgresSettings
) -> None:
    s = empty_schema
    assert await current_version(engine, schema=s.schema, prefix=s.prefix) == 0
    version, applied = await upgrade_steps(engine, schema=s.schema, prefix=s.prefix)
    assert version == SCHEMA_VERSION
    assert [m.version for m in applied] == list(range(1, SCHEMA_VERSION + 1))
    assert await current_version(engine, schema=s.schema, prefix=s.prefix) == SCHEMA_VERSION


async def test_upgrade_twice_changes_nothing(
    engine: AsyncEngine, empty_schema: PostgresSettings
) -> None:
    s = empty_schema
    await upgrade(engine, schema=s.schema, prefix=s.prefix)
    version, applied = await upgrade_steps(engine, schema=s.schema, prefix=s.prefix)
    assert (version, applied) == (SCHEMA_VERSION, [])
    async with engine.connect() as conn:
        rows = await conn.scalar(
            sa.select(sa.func.count()).select_from(Tables.build(s).schema_version)
        )
    assert rows == SCHEMA_VERSION


async def test_concurrent_upgrades_of_a_fresh_schema_all_succeed(
    database_url: str, empty_schema: PostgresSettings
) -> None:
    s = empty_schema
    versions: list[int] = []

    async def run() -> None:
        versions.append(await upgrade(database_url, schema=s.schema, prefix=s.prefix))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(run)
    assert versions == [SCHEMA_VERSION] * 4
    assert await current_version(database_url, schema=s.schema, prefix=s.prefix) == SCHEMA_VERSION


async def test_upgrade_refuses_a_schema_newer_than_the_code(
    engine: AsyncEngine, database_url: str
) -> None:
    async with isolated_schema(database_url) as s:
        await _set_version(engine, s, SCHEMA_VERSION + 1)
        with pytest.raises(SchemaVersionError, match=r"newer than this code knows") as caught:
            await upgrade(engine, schema=s.schema, prefix=s.prefix)
        assert f"version {SCHEMA_VERSION + 1}" in str(caught.value)
        assert "upgrade the resilient-task package" in str(caught.value)


async def test_dao_refuses_a_schema_newer_than_the_code(
    engine: AsyncEngine, database_url: str
) -> None:
    async with isolated_schema(database_url) as s:
        await _set_version(engine, s, SCHEMA_VERSION + 1)
        dao = PostgresTaskDAO(engine=engine, settings=s)
        with pytest.raises(SchemaVersionError, match=r"newer than this code knows"):
            await dao.open()


async def test_dao_refuses_an_unmigrated_schema_and_says_how_to_fix_it(
    database_url: str, empty_schema: PostgresSettings
) -> None:
    engine = create_engine(database_url.replace("postgres@", "postgres:s3cret@", 1))
    dao = PostgresTaskDAO(engine=engine, settings=empty_schema, owns_engine=True)
    try:
        with pytest.raises(SchemaVersionError) as caught:
            await dao.open()
        message = str(caught.value)
        assert "are missing" in message
        assert "resilient-task db upgrade --database-url postgresql+psycopg://" in message
        assert f"--schema {empty_schema.schema}" in message
        assert "s3cret" not in message
        with pytest.raises(SchemaVersionError):  # also on first use without open()
            await dao.count_by_status()
    finally:
        await dao.close()


async def test_dao_works_once_the_schema_is_upgraded(
    database_url: str, empty_schema: PostgresSettings
) -> None:
    dao = PostgresTaskDAO.from_url(database_url, settings=empty_schema)
    try:
        with pytest.raises(SchemaVersionError):
            await dao.count_by_status()
        await upgrade(database_url, schema=empty_schema.schema, prefix=empty_schema.prefix)
        assert sum((await dao.count_by_status()).values()) == 0
    finally:
        await dao.close()


async def test_core_tables_match_the_migrated_schema(
    engine: AsyncEngine, database_url: str
) -> None:
    async with isolated_schema(database_url, prefix="rt_") as s:
        tables = Tables.build(s)

        def reflect(sync_conn: sa.Connection) -> dict[str, list[tuple[str, str, bool]]]:
            inspector = sa.inspect(sync_conn)
            return {
                name: [
                    (c["name"], c["type"].compile(dialect=sync_conn.dialect), bool(c["nullable"]))
                    for c in inspector.get_columns(name, schema=s.schema)
                ]
                for name in inspector.get_table_names(schema=s.schema)
            }

        async with engine.connect() as conn:
            reflected = await conn.run_sync(reflect)
        dialect = engine.dialect
        expected = {
            table.name: [
                (c.name, c.type.compile(dialect=dialect), bool(c.nullable)) for c in table.c
            ]
            for table in (tables.tasks, tables.task_data, tables.schema_version)
        }
        assert reflected == expected


async def test_poll_and_unique_key_indexes_exist(engine: AsyncEngine, database_url: str) -> None:
    async with isolated_schema(database_url) as s:
        async with engine.connect() as conn:
            indexes = await conn.run_sync(
                lambda c: sa.inspect(c).get_indexes(f"{s.prefix}tasks", schema=s.schema)
            )
        by_name = {i["name"]: i for i in indexes}
        poll = by_name[f"{s.prefix}tasks_poll_idx"]
        assert poll["column_names"] == ["status", "next_event_time"]
        unique = by_name[f"{s.prefix}tasks_unique_key_idx"]
        assert unique["unique"]
        assert unique["column_names"] == ["type", "unique_key"]


def test_unsafe_schema_or_prefix_names_are_refused() -> None:
    for bad in ('x"; DROP TABLE y; --', "Upper", "", "1abc", "a" * 64):
        with pytest.raises(ConfigurationError):
            PostgresSettings(schema=bad)
    for bad in ("a-b", "a b", "x" * 41):
        with pytest.raises(ConfigurationError):
            PostgresSettings(prefix=bad)
    assert PostgresSettings(prefix="").prefix == ""


async def test_db_upgrade_main_upgrades_then_reports_the_current_version(
    database_url: str, empty_schema: PostgresSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    s = empty_schema
    assert await anyio.to_thread.run_sync(db_current_main, database_url, s.schema, s.prefix) == 1
    assert await anyio.to_thread.run_sync(db_upgrade_main, database_url, s.schema, s.prefix) == 0
    out = capsys.readouterr().out
    assert "applied migration 1" in out
    assert f"upgraded to version {SCHEMA_VERSION}" in out
    assert await anyio.to_thread.run_sync(db_upgrade_main, database_url, s.schema, s.prefix) == 0
    assert f"already at version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert await anyio.to_thread.run_sync(db_current_main, database_url, s.schema, s.prefix) == 0


def test_db_upgrade_main_reports_an_unreachable_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://postgres:pw@127.0.0.1:1/none?connect_timeout=2"
    assert db_upgrade_main(url, "public", "resilient_task_") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: PostgreSQL unavailable")
    assert "pw@" not in err


def test_db_upgrade_main_reports_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert db_upgrade_main("mysql://x@y/z", "public", "resilient_task_") == 1
    assert "postgresql+psycopg://" in capsys.readouterr().err


async def test_a_freshly_migrated_schema_matches_the_declared_tables(database_url: str) -> None:
    for prefix in ("resilient_task_", "rt_", ""):
        async with isolated_schema(database_url, prefix=prefix) as s:
            assert await schema_differences(database_url, schema=s.schema, prefix=s.prefix) == []


async def test_schema_check_lists_every_hand_made_difference(
    engine: AsyncEngine, database_url: str
) -> None:
    async with isolated_schema(database_url) as s:
        t = f'"{s.schema}"."{s.prefix}'
        async with engine.begin() as conn:
            for statement in (
                f'ALTER TABLE {t}tasks" DROP COLUMN last_error',
                f'ALTER TABLE {t}tasks" ALTER COLUMN priority TYPE integer',
                f'ALTER TABLE {t}tasks" ALTER COLUMN processing_node SET NOT NULL',
                f'ALTER TABLE {t}tasks" ADD COLUMN note text',
                f'DROP INDEX "{s.schema}"."{s.prefix}tasks_poll_idx"',
                f'ALTER TABLE {t}task_data" DROP CONSTRAINT {s.prefix}task_data_task_id_fkey',
            ):
                await conn.exec_driver_sql(statement)

        found = await schema_differences(engine, schema=s.schema, prefix=s.prefix)

        tasks = f'"{s.schema}"."{s.prefix}tasks"'
        assert sorted(found) == sorted([
            f"column {tasks}.last_error is missing",
            f"column {tasks}.priority is INTEGER, expected SMALLINT",
            f"column {tasks}.processing_node is NOT NULL, expected nullable",
            f"column {tasks}.note is not declared by resilient-task",
            f'index "{s.prefix}tasks_poll_idx" is missing',
            f"foreign key {s.prefix}task_data.task_id -> {s.prefix}tasks.id is missing",
        ])  # fmt: skip


async def test_schema_check_names_a_missing_table_and_a_non_unique_dedup_index(
    engine: AsyncEngine, database_url: str
) -> None:
    async with isolated_schema(database_url) as s:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP TABLE "{s.schema}"."{s.prefix}task_data"')
            await conn.exec_driver_sql(f'DROP INDEX "{s.schema}"."{s.prefix}tasks_unique_key_idx"')
            await conn.exec_driver_sql(
                f'CREATE INDEX "{s.prefix}tasks_unique_key_idx" ON '
                f'"{s.schema}"."{s.prefix}tasks" (type, unique_key)'
            )

        found = await schema_differences(engine, schema=s.schema, prefix=s.prefix)

        assert sorted(found) == sorted([
            f'table "{s.schema}"."{s.prefix}task_data" is missing',
            f'index "{s.prefix}tasks_unique_key_idx" should be unique',
            f'index "{s.prefix}tasks_unique_key_idx" should be partial: '
            "WHERE unique_key IS NOT NULL",
        ])  # fmt: skip


async def test_db_upgrade_exits_1_with_one_line_per_difference_on_a_hand_altered_schema(
    engine: AsyncEngine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with isolated_schema(database_url) as s:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                f'ALTER TABLE "{s.schema}"."{s.prefix}tasks" DROP COLUMN unique_key'
            )
        options = ["--database-url", database_url, "--schema", s.schema]

        for command in ("upgrade", "check"):
            code = await anyio.to_thread.run_sync(cli_main, ["db", command, *options])
            assert code == 1
            err = capsys.readouterr().err.splitlines()
            tasks = f'"{s.schema}"."{s.prefix}tasks"'
            assert err[:2] == [  # the column, and the dedup index that went with it
                f"error: schema differs: column {tasks}.unique_key is missing",
                f'error: schema differs: index "{s.prefix}tasks_unique_key_idx" is missing',
            ]
            assert len(err) == 3  # and a summary line
            assert "differ from what this code declares in 2 way(s)" in err[2]


async def test_db_upgrade_and_check_exit_0_on_an_intact_schema(
    database_url: str, empty_schema: PostgresSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--database-url", database_url, "--schema", empty_schema.schema]
    assert await anyio.to_thread.run_sync(cli_main, ["db", "check", *options]) == 1
    assert "is missing" in capsys.readouterr().err
    assert await anyio.to_thread.run_sync(cli_main, ["db", "upgrade", *options]) == 0
    assert await anyio.to_thread.run_sync(cli_main, ["db", "check", *options]) == 0
    assert "match what this code declares" in capsys.readouterr().out


@asynccontextmanager
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server (its URL), dropped on exit."""
    name = f"rt_schema_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(database_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.make_url(database_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def test_an_empty_database_migrated_from_scratch_has_exactly_the_declared_schema(
    database_url: str,
) -> None:
    # The default schema ("public", which exists) and prefix, as a first `db upgrade` makes them.
    async with empty_database(database_url) as url:
        await upgrade(url)
        assert await schema_differences(url) == []
        engine = create_engine(url, pool_size=1)
        try:
            assert await current_version(engine) == SCHEMA_VERSION
            async with engine.connect() as conn:
                live = await conn.run_sync(_catalogue, DEFAULT_SCHEMA)
        finally:
            await engine.dispose()
    tables = Tables.build(PostgresSettings())
    declared = (tables.tasks, tables.task_data, tables.schema_version)
    # Nothing beyond what the Core tables and schema_check declare: a migration that adds a
    # table, an index or a constraint must declare it there too, or this fails.
    assert set(live["tables"]) == {t.name for t in declared}
    expected_indexes = {f"{t.name}_pkey" for t in declared} | {
        DEFAULT_PREFIX + index.name for index in _INDEXES
    }
    assert set(live["indexes"]) == expected_indexes
    assert set(live["checks"]) == {DEFAULT_PREFIX + check for _, check in _CHECKS}
    assert live["foreign_keys"] == [
        (tables.task_data.name, ["task_id"], tables.tasks.name, ["id"], "CASCADE")
    ]


def _catalogue(conn: sa.Connection, schema: str) -> dict[str, list[Any]]:
    """Every table, index, check constraint and foreign key the schema holds."""
    inspector = sa.inspect(conn)
    names = inspector.get_table_names(schema=schema)
    indexes = [i["name"] for t in names for i in inspector.get_indexes(t, schema=schema)]
    indexes += [inspector.get_pk_constraint(t, schema=schema)["name"] for t in names]
    checks = [c["name"] for t in names for c in inspector.get_check_constraints(t, schema=schema)]
    foreign_keys = [
        (
            t,
            fk["constrained_columns"],
            fk["referred_table"],
            fk["referred_columns"],
            (fk.get("options") or {}).get("ondelete", "").upper(),
        )
        for t in names
        for fk in inspector.get_foreign_keys(t, schema=schema)
    ]
    return {"tables": names, "indexes": indexes, "checks": checks, "foreign_keys": foreign_keys}

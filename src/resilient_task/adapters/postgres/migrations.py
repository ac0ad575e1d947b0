"""Schema migrations shipped with the package: ordered, versioned SQL steps.

``upgrade()`` runs in ONE transaction under ``pg_advisory_xact_lock`` (a key derived from the
schema and prefix), so concurrent upgrades of the same tables queue up and each applies only
what is still missing; a failing step rolls the whole upgrade back. Every applied step is
recorded in ``<prefix>schema_version``. Running it again is a no-op.

A database whose schema is *newer* than this code is refused (:class:`SchemaVersionError`):
older code must not write to tables it does not understand. The task store checks the version
when it opens (:func:`check_schema`) and points at ``resilient-task db upgrade``.

To change the schema, append a :class:`Migration` with the next version; never edit one that
has shipped.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from resilient_task.adapters.postgres.engine import normalize_url, safe_url
from resilient_task.adapters.postgres.errors import translate_errors
from resilient_task.adapters.postgres.schema import DEFAULT_PREFIX, DEFAULT_SCHEMA, PostgresSettings
from resilient_task.errors import SchemaVersionError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "check_schema",
    "current_version",
    "upgrade",
    "upgrade_steps",
]


@dataclass(frozen=True, slots=True)
class _Names:
    """Quoted, schema-qualified names (identifiers are validated by PostgresSettings)."""

    schema: str
    prefix: str

    def __call__(self, name: str) -> str:
        return f'"{self.prefix}{name}"'

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{self.prefix}{name}"'


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, what it does and its DDL."""

    version: int
    description: str
    statements: Callable[[_Names], list[str]]


def _v1(n: _Names) -> list[str]:
    tasks, data = n.table("tasks"), n.table("task_data")
    return [
        f"""CREATE TABLE {tasks} (
            id uuid CONSTRAINT {n("tasks_pkey")} PRIMARY KEY,
            type text NOT NULL,
            sub_type text,
            status text NOT NULL CONSTRAINT {n("tasks_status_check")} CHECK (status IN
                ('WAITING', 'SUBMITTED', 'PROCESSING', 'DONE', 'ERROR', 'FAILED', 'CANCELLED')),
            version bigint NOT NULL DEFAULT 0,
            priority smallint NOT NULL DEFAULT 5,
            next_event_time timestamptz NOT NULL,
            processing_tries_count integer NOT NULL DEFAULT 0,
            recovery_count integer NOT NULL DEFAULT 0,
            processing_node text,
            last_error text,
            unique_key text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
        # The one index every poll, claim and clean-up uses: status = ? ORDER BY next_event_time.
        f"CREATE INDEX {n('tasks_poll_idx')} ON {tasks} (status, next_event_time)",
        # Deduplication by (type, unique_key), enforced by the index so ON CONFLICT sees races.
        f"CREATE UNIQUE INDEX {n('tasks_unique_key_idx')} ON {tasks} (type, unique_key) "
        "WHERE unique_key IS NOT NULL",
        f"""CREATE TABLE {data} (
            task_id uuid CONSTRAINT {n("task_data_pkey")} PRIMARY KEY
                CONSTRAINT {n("task_data_task_id_fkey")} REFERENCES {tasks} (id) ON DELETE CASCADE,
            data_format smallint NOT NULL,
            data bytea NOT NULL
        )""",
        # Large payloads arrive compressed already: store them out of line without recompressing.
        f"ALTER TABLE {data} ALTER COLUMN data SET STORAGE EXTERNAL",
    ]


def _v2(n: _Names) -> list[str]:
    # Nullable without a default: PostgreSQL only changes the catalog, whatever the row count.
    return [f"ALTER TABLE {n.table('tasks')} ADD COLUMN last_traceback text"]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tasks and task_data tables, poll index, unique-key index", _v1),
    Migration(2, "tasks.last_traceback: the traceback of the last failure", _v2),
)
"""Every migration, in order."""

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this code reads and writes."""


def _lock_key(settings: PostgresSettings) -> int:
    digest = hashlib.blake2b(
        f"resilient_task:{settings.schema}.{settings.prefix}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _read_version(conn: AsyncConnection, n: _Names) -> int:
    table = n.table("schema_version")
    exists = await conn.scalar(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": table})
    if not exists:
        return 0
    found = await conn.scalar(sa.text(f"SELECT coalesce(max(version), 0) FROM {table}"))
    return int(found or 0)


def _newer_error(found: int, settings: PostgresSettings) -> SchemaVersionError:
    return SchemaVersionError(
        f"the resilient-task schema {settings.schema!r} (prefix {settings.prefix!r}) is at "
        f"version {found}, newer than this code knows (up to {SCHEMA_VERSION}): upgrade the "
        "resilient-task package on this node; do not run older code against it"
    )


def _engine(engine_or_url: AsyncEngine | str | sa.URL) -> tuple[AsyncEngine, bool]:
    if isinstance(engine_or_url, AsyncEngine):
        return engine_or_url, False
    url = normalize_url(engine_or_url)
    return create_async_engine(url, poolclass=sa.NullPool), True


async def upgrade(
    engine_or_url: AsyncEngine | str | sa.URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    prefix: str = DEFAULT_PREFIX,
) -> int:
    """Create or upgrade the tables; idempotent and safe to run from several processes at once.

    Returns:
        The schema version now in place (:data:`SCHEMA_VERSION`).

    Raises:
        SchemaVersionError: the database is at a newer version than this code.
        BackendError: the database failed (unreachable, missing privileges...).
    """
    return (await upgrade_steps(engine_or_url, schema=schema, prefix=prefix))[0]


async def upgrade_steps(
    engine_or_url: AsyncEngine | str | sa.URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    prefix: str = DEFAULT_PREFIX,
) -> tuple[int, list[Migration]]:
    """Like :func:`upgrade`; also returns the migrations this call applied."""
    settings = PostgresSettings(schema=schema, prefix=prefix)
    n = _Names(schema, prefix)
    engine, owned = _engine(engine_or_url)
    applied: list[Migration] = []
    try:
        with translate_errors("upgrade the schema"):
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(settings)}
                )
                if not await conn.scalar(
                    sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"),
                    {"schema": schema},
                ):
                    await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
                await conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {n.table('schema_version')} ("
                    f"version integer CONSTRAINT {n('schema_version_pkey')} PRIMARY KEY, "
                    "description text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
                found = await _read_version(conn, n)
                if found > SCHEMA_VERSION:
                    raise _newer_error(found, settings)
                for migration in MIGRATIONS:
                    if migration.version <= found:
                        continue
                    for statement in migration.statements(n):
                        await conn.exec_driver_sql(statement)
                    await conn.execute(
                        sa.text(
                            f"INSERT INTO {n.table('schema_version')} (version, description) "
                            "VALUES (:version, :description)"
                        ),
                        {"version": migration.version, "description": migration.description},
                    )
                    applied.append(migration)
    finally:
        if owned:
            await engine.dispose()
    return SCHEMA_VERSION, applied


async def current_version(
    engine_or_url: AsyncEngine | str | sa.URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    prefix: str = DEFAULT_PREFIX,
) -> int:
    """The schema version in the database; 0 when the tables were never created."""
    PostgresSettings(schema=schema, prefix=prefix)  # validates the identifiers
    engine, owned = _engine(engine_or_url)
    try:
        with translate_errors("read the schema version"):
            async with engine.connect() as conn:
                return await _read_version(conn, _Names(schema, prefix))
    finally:
        if owned:
            await engine.dispose()


async def check_schema(engine: AsyncEngine, settings: PostgresSettings) -> None:
    """Raise :class:`SchemaVersionError` unless the tables are at :data:`SCHEMA_VERSION`."""
    found = await current_version(engine, schema=settings.schema, prefix=settings.prefix)
    if found == SCHEMA_VERSION:
        return
    if found > SCHEMA_VERSION:
        raise _newer_error(found, settings)
    options = ""
    if settings.schema != DEFAULT_SCHEMA:
        options += f" --schema {shlex.quote(settings.schema)}"
    if settings.prefix != DEFAULT_PREFIX:
        options += f" --table-prefix {shlex.quote(settings.prefix)}"
    state = "missing" if found == 0 else f"at version {found}, this code needs {SCHEMA_VERSION}"
    raise SchemaVersionError(
        f"the resilient-task tables in schema {settings.schema!r} (prefix "
        f"{settings.prefix!r}) are {state}: run `resilient-task db upgrade --database-url "
        f"{safe_url(engine.url)}{options}` first"
    )

"""Compare the live tables with the declared ones: ``resilient-task db check`` (and after upgrade).

The schema version table says which migrations ran, not that their result is still there: a
column dropped or retyped by hand, or a missing index, goes unnoticed until a statement fails
(or, for an index, until polls slow down). :func:`schema_differences` reflects the live tables
and compares them with :class:`~resilient_task.adapters.postgres.schema.Tables` (columns, types,
nullability, primary keys) and with what the migrations create beside them (indexes, the
foreign key, the status check), one readable line per difference.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from resilient_task.adapters.postgres.engine import normalize_url, safe_url
from resilient_task.adapters.postgres.errors import translate_errors
from resilient_task.adapters.postgres.schema import (
    DEFAULT_PREFIX,
    DEFAULT_SCHEMA,
    PostgresSettings,
    Tables,
)
from resilient_task.errors import ResilientTaskError

__all__ = ["db_check_main", "schema_differences"]


@dataclass(frozen=True, slots=True)
class _Index:
    table: str
    name: str
    columns: tuple[str, ...]
    unique: bool
    where: str | None = None  # a fragment the partial index's predicate must contain


# What migration 1 creates beside the columns (kept in step with migrations.py by a test that
# finds no difference on a freshly migrated schema).
_INDEXES = (
    _Index("tasks", "tasks_poll_idx", ("status", "next_event_time"), unique=False),
    _Index("tasks", "tasks_unique_key_idx", ("type", "unique_key"), True, "unique_key IS NOT NULL"),
)
_CHECKS = (("tasks", "tasks_status_check"),)


async def schema_differences(
    engine_or_url: AsyncEngine | str | sa.URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    prefix: str = DEFAULT_PREFIX,
) -> list[str]:
    """How the live tables differ from the declared ones: one line each; empty when they match.

    Raises:
        BackendError: the database failed (unreachable, missing privileges...).
    """
    settings = PostgresSettings(schema=schema, prefix=prefix)
    tables = Tables.build(settings)
    if isinstance(engine_or_url, AsyncEngine):
        engine, owned = engine_or_url, False
    else:
        engine, owned = (
            create_async_engine(normalize_url(engine_or_url), poolclass=sa.NullPool),
            True,
        )
    try:
        with translate_errors("read the schema"):
            async with engine.connect() as conn:
                return await conn.run_sync(_compare, tables, settings)
    finally:
        if owned:
            await engine.dispose()


def _compare(conn: sa.Connection, tables: Tables, settings: PostgresSettings) -> list[str]:
    inspector = sa.inspect(conn)
    schema, prefix = settings.schema, settings.prefix
    live = set(inspector.get_table_names(schema=schema))
    found: list[str] = []
    for table in (tables.tasks, tables.task_data, tables.schema_version):
        where = f'"{schema}"."{table.name}"'
        if table.name not in live:
            found.append(f"table {where} is missing")
            continue
        found += _columns(inspector, conn.dialect, table, schema, where)
        pk = inspector.get_pk_constraint(table.name, schema=schema)["constrained_columns"]
        expected_pk = [c.name for c in table.primary_key.columns]
        if list(pk) != expected_pk:
            found.append(f"table {where} has primary key {pk}, expected {expected_pk}")
    for index in _INDEXES:
        if prefix + index.table in live:
            found += _index(inspector, index, schema, prefix)
    for table_name, check in _CHECKS:
        if prefix + table_name in live:
            names = {
                c["name"] for c in inspector.get_check_constraints(prefix + table_name, schema)
            }
            if prefix + check not in names:
                found.append(f'check constraint "{prefix}{check}" is missing')
    if tables.task_data.name in live and tables.tasks.name in live:
        found += _cascade(inspector, tables, schema)
    return found


def _columns(
    inspector: Any, dialect: sa.Dialect, table: sa.Table, schema: str, where: str
) -> list[str]:
    reflected = {c["name"]: c for c in inspector.get_columns(table.name, schema=schema)}
    found: list[str] = []
    for column in table.columns:
        live = reflected.pop(column.name, None)
        if live is None:
            found.append(f"column {where}.{column.name} is missing")
            continue
        expected_type = column.type.compile(dialect=dialect)
        live_type = live["type"].compile(dialect=dialect)
        if live_type != expected_type:
            found.append(f"column {where}.{column.name} is {live_type}, expected {expected_type}")
        if bool(live["nullable"]) != bool(column.nullable):
            state, wanted = (
                ("nullable", "NOT NULL") if live["nullable"] else ("NOT NULL", "nullable")
            )
            found.append(f"column {where}.{column.name} is {state}, expected {wanted}")
    found += [f"column {where}.{name} is not declared by resilient-task" for name in reflected]
    return found


def _index(inspector: Any, index: _Index, schema: str, prefix: str) -> list[str]:
    name = prefix + index.name
    live = {i["name"]: i for i in inspector.get_indexes(prefix + index.table, schema=schema)}
    found = live.get(name)
    if found is None:
        return [f'index "{name}" is missing']
    problems: list[str] = []
    if tuple(found["column_names"]) != index.columns:
        problems.append(
            f'index "{name}" is on {tuple(found["column_names"])}, expected {index.columns}'
        )
    if bool(found["unique"]) != index.unique:
        problems.append(f'index "{name}" should {"" if index.unique else "not "}be unique')
    if index.where is not None:
        predicate = str(found.get("dialect_options", {}).get("postgresql_where") or "")
        if index.where not in predicate:
            problems.append(f'index "{name}" should be partial: WHERE {index.where}')
    return problems


def _cascade(inspector: Any, tables: Tables, schema: str) -> list[str]:
    for fk in inspector.get_foreign_keys(tables.task_data.name, schema=schema):
        if (
            fk["referred_table"] == tables.tasks.name
            and fk["constrained_columns"] == ["task_id"]
            and fk["referred_columns"] == ["id"]
        ):
            if (fk.get("options") or {}).get("ondelete", "").upper() != "CASCADE":
                return [f'foreign key "{fk["name"]}" should be ON DELETE CASCADE']
            return []
    return [f"foreign key {tables.task_data.name}.task_id -> {tables.tasks.name}.id is missing"]


def db_check_main(
    database_url: str, schema: str = DEFAULT_SCHEMA, prefix: str = DEFAULT_PREFIX
) -> int:
    """Print each difference between the live and the declared tables; the exit code.

    0 when they match, 1 when they differ or the database cannot be read (the reasons go to
    stderr, one line each).
    """
    run = functools.partial(schema_differences, database_url, schema=schema, prefix=prefix)
    where = f"{safe_url(database_url)} schema {schema!r} prefix {prefix!r}"
    try:
        differences = anyio.run(run)
    except ResilientTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for difference in differences:
        print(f"error: schema differs: {difference}", file=sys.stderr)
    if differences:
        print(
            f"resilient-task tables ({where}) differ from what this code declares in "
            f"{len(differences)} way(s); restore them (or drop and recreate an empty schema "
            "with `resilient-task db upgrade`)",
            file=sys.stderr,
        )
        return 1
    print(f"resilient-task tables ({where}) match what this code declares")
    return 0

"""The hot statements (insert, grab, complete), sent straight to psycopg.

Every add, grab and completion runs one of four statements. Through SQLAlchemy's execution
layer each call pays for the compiled-cache lookup, the greenlet bridge, the result wrapper
and the parameter processing; sent to psycopg directly, the same statement costs a fraction
of that client CPU. The statements are still *built* with SQLAlchemy Core (``statements``)
and compiled once here, so the SQL has one source.

Two choices are made per statement that SQLAlchemy's dialect cannot make:

- **Binary parameters and results** (``%(name)b``, ``binary=True``): UUIDs, timestamps, the
  batch arrays and payloads travel without text quoting and parsing.
- **Preparation**: the four are prepared, so PostgreSQL parses and plans them once per
  connection; it may then use a generic plan. Every one of them joins its batch on the
  primary key, and each is written so that this is the only sensible plan whatever the
  parameters are (see the grab's status test in ``statements``). The other statements are
  never prepared (``engine``): their best plan depends on the values.

The statements run on the connection the DAO lent (a hot one, see ``hot``, whose cursors are
reused, or the caller's transaction), so transactions, after-commit callbacks and error
translation work as for any other statement. A connection a driver error left broken or busy
is discarded, not reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from resilient_task.adapters.postgres.hot import HotConnection

__all__ = ["Connection", "DriverStatement", "fetch_dicts", "fetch_scalars"]

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A Core statement compiled once for psycopg, with its constant parameters."""

    sql: str
    constants: dict[str, Any]
    prepare: bool

    @classmethod
    def compile(cls, statement: sa.ClauseElement, *, prepare: bool) -> DriverStatement:
        """Compile ``statement``; every placeholder becomes a binary one (``%(name)b``)."""
        compiled = statement.compile(dialect=_DIALECT)
        # Parameters without a value are the caller's; a literal NULL must therefore be written
        # as SQL (``CAST(NULL AS ...)``), not as a bound None.
        constants = {k: v for k, v in compiled.params.items() if v is not None}
        return cls(_PLACEHOLDER.sub(r"%(\1)b", str(compiled)), constants, prepare)

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` plus the statement's constants (literals such as the status names)."""
        return self.constants | values if self.constants else values


class Connection(Protocol):
    """What the store's statements run on: an ``AsyncConnection`` or the like.

    A SQLAlchemy ``AsyncConnection``, a hot connection (``hot``) or the synchronous adder's
    ``JoinedConnection``: each gives its psycopg connection
    (``get_raw_connection().driver_connection``) and runs Core statements.
    """

    async def get_raw_connection(self) -> Any: ...  # noqa: D102

    async def execute(self, statement: Any, parameters: Any = None, /) -> Any: ...  # noqa: D102


async def _driver_connection(conn: Connection) -> Any:
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def fetch_dicts(
    conn: Connection, statement: DriverStatement, values: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run ``statement`` on ``conn``'s psycopg connection; the rows as dictionaries."""
    if isinstance(conn, HotConnection):
        cursor = conn.cursor(dicts=True)
        await cursor.execute(statement.sql, statement.params(values), prepare=statement.prepare)
        rows: list[dict[str, Any]] = await cursor.fetchall()
        return rows
    driver = await _driver_connection(conn)
    async with driver.cursor(row_factory=dict_row, binary=True) as cursor:
        await cursor.execute(statement.sql, statement.params(values), prepare=statement.prepare)
        rows = await cursor.fetchall()
        return rows


async def fetch_scalars(
    conn: Connection, statement: DriverStatement, values: dict[str, Any]
) -> list[Any]:
    """Run ``statement`` on ``conn``'s psycopg connection; the first column of every row."""
    if isinstance(conn, HotConnection):
        cursor = conn.cursor(dicts=False)
        await cursor.execute(statement.sql, statement.params(values), prepare=statement.prepare)
        return [row[0] for row in await cursor.fetchall()]
    driver = await _driver_connection(conn)
    async with driver.cursor(binary=True) as cursor:
        await cursor.execute(statement.sql, statement.params(values), prepare=statement.prepare)
        return [row[0] for row in await cursor.fetchall()]

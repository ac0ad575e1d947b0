"""The caller's transaction: a psycopg 3 connection, a SQLAlchemy ``Connection`` or ``Session``.

:class:`JoinedConnection` finds the psycopg 3 connection under the caller's handle and runs the
PostgreSQL store's own statements on it, inside the caller's transaction, never committing or
rolling it back. It presents the few methods of SQLAlchemy's ``AsyncConnection`` that the
store's batch code (``adapters/postgres/inserts.py``, ``changes.py``, ``driver.py``) calls --
``get_raw_connection()`` with its ``info`` and ``driver_connection`` (cursors, ``COPY``,
``transaction()``), and ``execute()`` of a Core statement -- as coroutines that do their
blocking I/O and return without ever suspending (see :mod:`.drive`). So a synchronous add
runs the same statements, the same deduplication and the same retries as an asynchronous one.

Every statement goes to psycopg directly, with a cursor of psycopg's own class and row factory:
a framework's settings on the connection (Django's client-side-binding cursor factory, a
``dict_row`` factory) change nothing. A Core statement is compiled once for psycopg, as
:class:`~resilient_task.adapters.postgres.driver.DriverStatement` compiles the hot ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Self
from weakref import WeakKeyDictionary

import psycopg
import sqlalchemy as sa
from psycopg.pq import Format
from psycopg.rows import RowFactory, tuple_row
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from resilient_task.adapters.postgres.driver import DriverStatement
from resilient_task.adapters.postgres.errors import translate_errors
from resilient_task.errors import ConfigurationError, ValidationError

__all__ = ["JoinedConnection", "current_connection"]

Callback = Callable[[], Any]

_CURRENT: ContextVar[JoinedConnection] = ContextVar("resilient_task_sync_connection")
_COMPILED: dict[int, tuple[sa.ClauseElement, DriverStatement]] = {}
_INFO: WeakKeyDictionary[psycopg.Connection[Any], dict[str, Any]] = WeakKeyDictionary()


def current_connection() -> JoinedConnection:
    """The caller's connection of the add running in this context (see ``current``)."""
    try:
        return _CURRENT.get()
    except LookupError:
        raise RuntimeError("no synchronous add is running in this context") from None


class JoinedConnection:
    """The caller's transaction handle, seen by the store code as an ``AsyncConnection``.

    Args:
        handle: a ``psycopg.Connection``, or a SQLAlchemy ``Connection`` or ``Session`` on the
            ``postgresql+psycopg`` driver. A SQLAlchemy handle without a transaction begins one,
            as its own ``execute`` would (the caller then commits it).

    Raises:
        ValidationError: ``handle`` is none of these (an async handle included).
    """

    def __init__(self, handle: object) -> None:
        if isinstance(
            handle, AsyncEngine | AsyncConnection | AsyncSession | psycopg.AsyncConnection
        ):
            raise ValidationError(
                f"resilient_task.sync needs a synchronous connection, got {type(handle).__name__}; "
                "in async code use await TaskService.add_task(request, transaction=...)"
            )
        if isinstance(handle, Engine):
            raise ValidationError(
                "pass a Connection (with engine.begin() as conn: ...) or a Session, not the "
                "Engine: the task joins the transaction its caller commits"
            )
        if not isinstance(handle, psycopg.Connection | Connection | Session):
            raise ValidationError(
                "connection must be a psycopg.Connection or a SQLAlchemy Connection or Session, "
                f"got {type(handle).__name__}"
            )
        self._handle = handle
        self._driver: psycopg.Connection[Any] | None = None
        self.after_commit: list[Callback] = []
        """What the service asked to run once the transaction commits (see ``store``)."""

    @property
    def driver(self) -> psycopg.Connection[Any]:
        """The psycopg connection under the handle (found, and a transaction begun, once)."""
        if self._driver is None:
            with translate_errors("join the caller's transaction"):
                self._driver = _driver_of(self._handle)
        return self._driver

    @contextmanager
    def current(self) -> Iterator[Self]:
        """Make this the connection :func:`current_connection` returns in the block."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint: an error in the block undoes only the block, not the caller's work."""
        with self.driver.transaction():
            yield

    def run(self, sql: str, params: Any, *, prepare: bool | None = None) -> list[Any]:
        """Run ``sql`` (text-format parameters) and return its rows as tuples."""
        with _cursor(self.driver, tuple_row, binary=False) as cursor:
            cursor.execute(sql, params, prepare=prepare)
            return cursor.fetchall() if cursor.description is not None else []

    # --- the AsyncConnection surface the store's batch code uses ----------------------------
    async def get_raw_connection(self) -> Self:
        """Itself: its :attr:`driver_connection` is what the store's driver code wants."""
        return self

    @property
    def info(self) -> dict[str, Any]:
        """Facts about the psycopg connection's session, as a pool record's ``info`` holds them."""
        info = _INFO.get(self.driver)
        if info is None:
            info = _INFO[self.driver] = {}
        return info

    @property
    def driver_connection(self) -> _AsyncDriver:
        """The psycopg connection, with coroutine methods (see the module docstring)."""
        return _AsyncDriver(self.driver)

    async def execute(self, statement: sa.ClauseElement, params: dict[str, Any]) -> _Rows:
        """Run a Core statement, compiled once for psycopg; its rows as tuples."""
        compiled = _compiled(statement)
        with _cursor(self.driver, tuple_row, binary=True) as cursor:
            cursor.execute(compiled.sql, compiled.params(params), prepare=False)
            return _Rows(cursor.fetchall())


def _driver_of(handle: object) -> psycopg.Connection[Any]:
    if isinstance(handle, psycopg.Connection):
        return handle
    if isinstance(handle, Session):
        handle = handle.connection()  # begins the session's transaction if need be
    assert isinstance(handle, Connection)
    if not handle.in_transaction():
        handle.begin()  # what its execute() would do; the caller commits it
    driver = handle.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise ConfigurationError(
            "resilient_task.sync needs the psycopg 3 driver (postgresql+psycopg://...), "
            f"got a {type(driver).__module__}.{type(driver).__name__} connection"
        )
    return driver


def _compiled(statement: sa.ClauseElement) -> DriverStatement:
    found = _COMPILED.get(id(statement))
    if found is None or found[0] is not statement:
        found = _COMPILED[id(statement)] = (
            statement,
            DriverStatement.compile(statement, prepare=False),
        )
    return found[1]


def _cursor(
    driver: psycopg.Connection[Any], row_factory: RowFactory[Any], *, binary: bool
) -> psycopg.Cursor[Any]:
    cursor = psycopg.Cursor(driver, row_factory=row_factory)
    if binary:
        cursor.format = Format.BINARY
    return cursor


class _Rows:
    """The part of a SQLAlchemy ``Result`` the store reads: ``all()``."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = list(rows)

    def all(self) -> list[Any]:
        return self._rows


class _AsyncDriver:
    """A sync psycopg connection with the async one's methods the store calls."""

    def __init__(self, driver: psycopg.Connection[Any]) -> None:
        self._driver = driver

    @property
    def autocommit(self) -> bool:
        """Whether a statement would commit on its own: autocommit and no transaction block.

        An autocommit connection inside the caller's ``with conn.transaction():`` is in the
        caller's transaction, which the store must neither commit nor outlive.
        """
        idle = self._driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        return self._driver.autocommit and idle

    def cursor(
        self, *, row_factory: RowFactory[Any] = tuple_row, binary: bool = False
    ) -> _AsyncCursor:
        return _AsyncCursor(_cursor(self._driver, row_factory, binary=binary))

    async def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> None:
        with _cursor(self._driver, tuple_row, binary=False) as cursor:
            cursor.execute(sql, params, prepare=prepare)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        with self._driver.transaction():
            yield


class _AsyncCursor:
    """A sync psycopg cursor with the async one's coroutine methods."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cursor.close()

    async def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> Self:
        self._cursor.execute(sql, params, prepare=prepare)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    @asynccontextmanager
    async def copy(self, sql: str) -> AsyncIterator[_AsyncCopy]:
        with self._cursor.copy(sql) as copy:
            yield _AsyncCopy(copy)


class _AsyncCopy:
    """A sync psycopg ``Copy`` with the async one's methods."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy

    def set_types(self, types: Sequence[Any]) -> None:
        self._copy.set_types(types)

    async def write_row(self, row: Sequence[Any]) -> None:
        self._copy.write_row(row)

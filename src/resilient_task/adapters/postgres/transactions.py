"""Transaction handles: after-commit callbacks and ORM sessions on a transaction's connection.

A handle is a SQLAlchemy ``AsyncConnection`` (what :meth:`PostgresTaskDAO.transaction` yields,
or the caller's own) or an ``AsyncSession``. Callbacks run strictly after a successful COMMIT,
in registration order, and never after a rollback. How that is achieved per handle:

- **connection from** ``PostgresTaskDAO.transaction()``: the DAO commits, returns the connection
  to the pool, then awaits the callbacks.
- **the caller's AsyncSession**: its ``after_commit`` event marks the root transaction
  committed (nested savepoints are ignored); its ``after_transaction_end`` event, which fires
  once the session has released its connections, awaits the callbacks.
- **the caller's AsyncConnection**: SQLAlchemy's ``ConnectionEvents.commit`` fires *before*
  the COMMIT is sent. The listener therefore sends the COMMIT itself through the DBAPI
  connection and awaits the callbacks only once it succeeded; SQLAlchemy's own COMMIT that
  follows finds no open transaction and is a no-op (psycopg documents ``commit()`` on an idle
  connection as doing nothing). A failed COMMIT is raised as SQLAlchemy's ``DBAPIError``, as
  SQLAlchemy would have. The callbacks run while the caller's connection is still checked out.
- **a session bound to a connection** (e.g. :func:`async_session_for`): the connection's rules.

An exception from a callback propagates out of the commit call; the commit stands and the
remaining callbacks are skipped. Callbacks registered inside a savepoint that is later rolled
back still run when the outer transaction commits.

:class:`Lending` guards the connection a transactional processor is handed: its transaction
belongs to the DAO, which commits it with the task's completion, so the processor may not end
it (see the class).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary, WeakSet

import psycopg
import sqlalchemy.exc as sa_exc
import sqlalchemy.util as sa_util
from sqlalchemy import event
from sqlalchemy.engine import Connection, RootTransaction
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from resilient_task.errors import ConfigurationError, ValidationError

Transaction = AsyncConnection | AsyncSession
"""What ``transaction=`` accepts: a connection, or an ORM session (its connection is used)."""

__all__ = [
    "AfterCommit",
    "Callback",
    "Lending",
    "Transaction",
    "async_session_for",
    "connection_of",
]

Callback = Callable[[], Awaitable[None]]

# Awaits a coroutine from sync code that SQLAlchemy's asyncio layer runs in a greenlet (event
# listeners); ``await_`` since SQLAlchemy 2.1, ``await_only`` before.
_await_in_greenlet: Callable[[Awaitable[None]], None] = (
    getattr(sa_util, "await_", None) or sa_util.await_only
)


def async_session_for(connection: AsyncConnection) -> AsyncSession:
    """An ORM session whose work joins ``connection``'s transaction.

    For transactional handlers: ``async with async_session_for(current_transaction()) as s:``.
    Flushed changes commit or roll back with the task's completion; the session's own
    ``commit()`` does not end the outer transaction (SQLAlchemy's default
    ``join_transaction_mode``), and objects stay loaded after it (``expire_on_commit=False``).
    The session's ``rollback()`` would roll the outer transaction back: inside a processor it
    raises :class:`~resilient_task.errors.ConfigurationError` instead (raise to roll back).
    """
    return AsyncSession(bind=connection, expire_on_commit=False)


async def connection_of(transaction: object) -> AsyncConnection:
    """The ``AsyncConnection`` of a handle given as ``transaction=``."""
    if isinstance(transaction, AsyncConnection):
        return transaction
    if isinstance(transaction, AsyncSession):
        return await transaction.connection()
    raise ValidationError(
        "transaction must be a SQLAlchemy AsyncConnection or AsyncSession, "
        f"got {type(transaction).__name__}"
    )


@dataclass(eq=False)
class _Pending:
    # A weak reference: the transaction refers to its connection or session, the key of the
    # weak dictionary holding this, which would otherwise never be collected.
    root: weakref.ref[RootTransaction] | weakref.ref[SessionTransaction]
    callbacks: list[Callback] = field(default_factory=list)
    committed: bool = False

    def of(self, transaction: object) -> bool:
        """Whether this was registered for ``transaction``."""
        return transaction is not None and self.root() is transaction


def _run_all(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        _await_in_greenlet(callback())


class AfterCommit:
    """The after-commit callbacks of one DAO's transaction handles."""

    def __init__(self) -> None:
        self._own: dict[Connection, list[Callback]] = {}
        self._connections: WeakKeyDictionary[Connection, _Pending] = WeakKeyDictionary()
        self._sessions: WeakKeyDictionary[Session, _Pending] = WeakKeyDictionary()
        self._listening: WeakSet[Connection | Session] = WeakSet()

    @contextmanager
    def own(self, connection: AsyncConnection) -> Iterator[list[Callback]]:
        """Collect callbacks for a transaction the DAO commits itself (and then runs them)."""
        callbacks: list[Callback] = []
        sync = connection.sync_connection
        assert sync is not None
        self._own[sync] = callbacks
        try:
            yield callbacks
        finally:
            del self._own[sync]

    def register(self, transaction: object, callback: Callback) -> None:
        """Run ``callback`` after ``transaction`` commits; see the module docstring."""
        if isinstance(transaction, AsyncSession):
            bind = transaction.sync_session.bind
            if isinstance(bind, Connection):
                self._on_connection(bind, callback)
            else:
                self._on_session(transaction.sync_session, callback)
        elif isinstance(transaction, AsyncConnection):
            sync = transaction.sync_connection
            if sync is None:
                raise ValidationError("after_commit: the AsyncConnection is not connected")
            self._on_connection(sync, callback)
        else:
            raise ValidationError(
                "after_commit needs a SQLAlchemy AsyncConnection or AsyncSession, "
                f"got {type(transaction).__name__}"
            )

    def _on_connection(self, sync: Connection, callback: Callback) -> None:
        if sync in self._own:
            self._own[sync].append(callback)
            return
        root = sync.get_transaction()
        if root is None or not root.is_active:
            raise ValidationError("after_commit: the connection has no transaction in progress")
        pending = self._connections.get(sync)
        if pending is None or not pending.of(root):
            pending = self._connections[sync] = _Pending(weakref.ref(root))
        pending.callbacks.append(callback)
        if sync not in self._listening:
            self._listening.add(sync)
            event.listen(sync, "commit", self._connection_committing)
            event.listen(sync, "rollback", self._connection_rolled_back)

    def _connection_committing(self, sync: Connection) -> None:
        pending = self._connections.pop(sync, None)
        if pending is None or not pending.of(sync.get_transaction()):
            return
        dbapi_connection = sync.connection.dbapi_connection
        assert dbapi_connection is not None
        try:
            dbapi_connection.commit()
        except Exception as exc:
            raise sa_exc.DBAPIError.instance(
                None, None, exc, psycopg.Error, dialect=sync.dialect
            ) from exc
        _run_all(pending.callbacks)

    def _connection_rolled_back(self, sync: Connection) -> None:
        self._connections.pop(sync, None)

    def _on_session(self, session: Session, callback: Callback) -> None:
        root = session.get_transaction()
        if root is None:
            raise ValidationError("after_commit: the AsyncSession has no transaction in progress")
        pending = self._sessions.get(session)
        if pending is None or not pending.of(root):
            pending = self._sessions[session] = _Pending(weakref.ref(root))
        pending.callbacks.append(callback)
        if session not in self._listening:
            self._listening.add(session)
            event.listen(session, "after_commit", self._session_committed)
            event.listen(session, "after_transaction_end", self._session_ended)

    def _session_committed(self, session: Session) -> None:
        pending = self._sessions.get(session)
        if pending is not None and not session.in_nested_transaction():
            pending.committed = pending.of(session.get_transaction())

    def _session_ended(self, session: Session, transaction: SessionTransaction) -> None:
        pending = self._sessions.get(session)
        if pending is None or not pending.of(transaction):
            return
        del self._sessions[session]
        if pending.committed:
            _run_all(pending.callbacks)


class Lending:
    """Connections whose transaction the DAO lends out: their borrower may not end it.

    A transactional processor is handed the connection whose transaction also records its
    task's completion. Were the processor to commit it, roll it back or close the connection
    (``await current_transaction().commit()``, an ORM session's ``rollback()`` on it), the
    completion written afterwards would be discarded with the connection -- silently. While a
    connection is lent, SQLAlchemy's commit and rollback of it (closing rolls back) raise
    :class:`~resilient_task.errors.ConfigurationError` before anything is sent to the server,
    and the lender is told, so the whole transaction is rolled back and the run fails even
    when the processor swallows the error. Savepoints (``begin_nested()``) stay free to use.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._lent: dict[Connection, list[str]] = {}
        event.listen(engine.sync_engine, "commit", self._committing)
        event.listen(engine.sync_engine, "rollback", self._rolling_back)

    @contextmanager
    def lend(self, connection: AsyncConnection) -> Iterator[list[str]]:
        """Refuse the ending of ``connection``'s transaction in the block; yields the attempts."""
        sync = connection.sync_connection
        assert sync is not None
        attempts: list[str] = []
        self._lent[sync] = attempts
        try:
            yield attempts
        finally:
            del self._lent[sync]

    def _committing(self, sync: Connection) -> None:
        self._refuse(sync, "commit")

    def _rolling_back(self, sync: Connection) -> None:
        self._refuse(sync, "roll back or close")

    def _refuse(self, sync: Connection, action: str) -> None:
        attempts = self._lent.get(sync)
        if attempts is not None:
            attempts.append(action)
            raise misuse_error(action)


def misuse_error(action: str) -> ConfigurationError:
    """The error for a processor that tried to ``action`` the transaction it was handed."""
    return ConfigurationError(
        f"a transactional processor must not {action} the transaction it is handed: "
        "resilient-task commits it together with the task's completion, or rolls it back "
        "when the processor raises (raise to roll back; begin_nested() gives a savepoint)"
    )

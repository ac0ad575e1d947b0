"""Hot connections: a few of the engine's connections kept checked out, in autocommit.

Every add, grab and completion outside a caller's transaction is one statement (or one short
sequence) on a connection of its own. Checking one out of SQLAlchemy's pool for it -- the
``AsyncConnection`` wrapper, the pool's checkout and checkin events, the switch to autocommit
and back -- cost about 440 µs of client CPU per add (``bench.profile_add``), more than the
statement itself. So the DAO keeps up to ``size`` connections checked out of its engine's pool,
already in autocommit, and lends them for one operation at a time: taking one is a pop from a
deque, giving it back a few attribute checks.

- They are the engine's own connections (same connect arguments, session settings, prepared
  statements), counted in its ``pool_size + max_overflow``: a node opens no more connections
  than before. While idle here they are not free for transactions; the executor already keeps
  two of the pool for grabs and completions (``ports.task_dao``), which is what these are.
- Every operation needing one when all are lent checks one out of the pool as before; given
  back, it stays hot if there is room, else returns to the pool.
- A connection comes back only if usable: open, not broken and idle -- no transaction and no
  statement in progress (a cancelled statement leaves it busy). Otherwise it is invalidated
  and the pool discards it. A statement that failed cleanly (a constraint, a lock timeout)
  leaves it usable.
- Liveness as the engine's own check (``engine``): before it is lent, a connection with
  unread input (a server that ends a session says so on the socket) or idle for
  ``ping_after_idle`` seconds is pinged; a failed ping discards it and every other idle one
  (a restart ended them all), and the next operation checks out a fresh one. A connection
  held for ``recycle`` seconds goes back to the pool, which replaces it.
- :meth:`close` returns the idle ones; one lent at that moment returns when given back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Self

import anyio
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, tuple_row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from resilient_task.adapters.postgres import engine
from resilient_task.adapters.postgres.errors import translate

__all__ = ["HotConnection", "HotConnections"]

log = logging.getLogger("resilient_task.postgres")

_IDLE = TransactionStatus.IDLE


class HotConnection:
    """One lent connection: what the store's statements run on (see ``driver.Connection``).

    It keeps its psycopg cursors (binary; rows as tuples and as dictionaries) from one
    statement to the next: a new cursor, and its adaptation context, cost more client CPU
    than the dumping of a single add's parameters.
    """

    __slots__ = ("_cursors", "connection", "driver_connection", "leased_at", "used_at")

    def __init__(self, connection: AsyncConnection, driver_connection: Any) -> None:
        self.connection = connection
        self.driver_connection: psycopg.AsyncConnection[Any] = driver_connection
        self.leased_at = self.used_at = time.monotonic()
        self._cursors: dict[bool, psycopg.AsyncCursor[Any]] = {}

    def cursor(self, *, dicts: bool) -> psycopg.AsyncCursor[Any]:
        """This connection's binary cursor, rows as tuples or (``dicts``) dictionaries."""
        found = self._cursors.get(dicts)
        if found is None:
            factory = dict_row if dicts else tuple_row
            found = self._cursors[dicts] = self.driver_connection.cursor(
                row_factory=factory, binary=True
            )
        return found

    async def get_raw_connection(self) -> Self:
        """Itself: its ``driver_connection`` is the psycopg connection (no greenlet hop)."""
        return self

    async def execute(self, statement: Any, parameters: Any = None, /) -> Any:
        """A SQLAlchemy statement, through the ``AsyncConnection``."""
        return await self.connection.execute(statement, parameters)

    def usable(self) -> bool:
        """Open, not broken, and neither in a transaction nor running a statement.

        libpq says IDLE only for an open, healthy connection between transactions: a closed
        one (SQLAlchemy closes what it invalidates) or a broken one is UNKNOWN.
        """
        return self.driver_connection.pgconn.transaction_status == _IDLE


class HotConnections:
    """Up to ``size`` of ``engine``'s connections kept checked out in autocommit.

    Args:
        async_engine: the DAO's engine.
        size: most connections kept; more may be lent at once (checked out for the call).
        ping_after_idle: seconds a connection may stay unused before it is pinged; ``None``
            turns liveness checks off, as for the engine.
        recycle: seconds after which a connection goes back to the pool; ``None``: never.
    """

    def __init__(
        self,
        async_engine: AsyncEngine,
        *,
        size: int,
        ping_after_idle: float | None,
        recycle: float | None,
    ) -> None:
        self.size = size
        self._engine = async_engine
        self._ping_after_idle = ping_after_idle
        self._recycle = recycle
        self._idle: deque[HotConnection] = deque()
        self._closed = False

    @property
    def idle(self) -> int:
        """How many connections are kept and not lent right now."""
        return len(self._idle)

    async def close(self) -> None:
        """Return every idle connection to the pool; keep none from now on."""
        self._closed = True
        while self._idle:
            await _finish(self._idle.pop(), invalidate=False)

    async def take(self) -> HotConnection:
        """A connection to use; :meth:`give_back` it afterwards, whatever happened."""
        while self._idle:
            hot = self._idle.pop()  # the most recently used: the least likely to be stale
            if await self._alive(hot):
                return hot
        return await self._checkout()

    async def _checkout(self) -> HotConnection:
        conn = await self._engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = await conn.get_raw_connection()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _quietly(conn.close())
            raise
        return HotConnection(conn, raw.driver_connection)

    async def _alive(self, hot: HotConnection) -> bool:
        now = time.monotonic()
        if self._recycle is not None and now - hot.leased_at >= self._recycle:
            await _finish(hot, invalidate=False)
            return False
        # It was usable when given back; a server that ended the session since says so only
        # on the socket (unread input), which the driver reads at its next statement.
        if self._ping_after_idle is None:
            return True
        driver = hot.driver_connection
        if now - hot.used_at < self._ping_after_idle and not engine.has_input(driver):
            return True
        try:
            await driver.execute("SELECT 1")
        except (psycopg.Error, OSError):
            await _finish(hot, invalidate=True)
            while self._idle:  # a restart or failover ended them all
                await _finish(self._idle.pop(), invalidate=True)
            return False
        except BaseException:  # cancelled mid-ping: in no known state, and no one's to return
            await _finish(hot, invalidate=True)
            raise
        return True

    async def give_back(self, hot: HotConnection) -> None:
        """Keep ``hot`` for the next operation if usable and there is room, else return it."""
        if not hot.usable():
            await _finish(hot, invalidate=True)
        elif self._closed or len(self._idle) >= self.size:
            await _finish(hot, invalidate=False)
        else:
            hot.used_at = time.monotonic()
            self._idle.append(hot)


async def _finish(hot: HotConnection, *, invalidate: bool) -> None:
    """Return ``hot`` to the pool; ``invalidate``: to be discarded (closed), not reused."""
    with anyio.CancelScope(shield=True):
        if invalidate:
            await _quietly(hot.connection.invalidate())
        await _quietly(hot.connection.close())


async def _quietly(operation: Any) -> None:
    try:
        await operation
    except Exception as exc:  # nothing left to do: the pool drops a connection it cannot reset
        log.warning("PostgreSQL: could not release a connection: %s", translate(exc, "release"))

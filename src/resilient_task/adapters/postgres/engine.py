"""Creating the SQLAlchemy engine: URL normalisation and pool settings."""

from __future__ import annotations

import select
import sys
import time
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from resilient_task.errors import ConfigurationError

__all__ = ["create_engine", "has_input", "liveness", "normalize_url", "safe_url"]

_ASYNC_DRIVERS = ("postgresql+psycopg",)


def normalize_url(url: str | sa.URL) -> sa.URL:
    """``url`` with the psycopg async driver when none is named (``postgresql://...``).

    Raises:
        ConfigurationError: the URL cannot be parsed or is not a PostgreSQL URL.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"database URL must be postgresql+psycopg://... (or postgresql://...), "
            f"got driver {parsed.drivername!r}"
        )
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """``url`` for messages and logs: the password replaced by ``***``."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


def create_engine(
    url: str | sa.URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    pool_recycle: float = 1800.0,
    connect_timeout: int = 10,
    application_name: str = "resilient-task",
    ping_after_idle: float | None = 10.0,
    **engine_options: Any,
) -> AsyncEngine:
    """An async engine with the pool settings resilient-task expects.

    A connection leaving the pool is checked so that one the server dropped (restart,
    failover, ``pg_terminate_backend``) is replaced instead of failing the next statement,
    without a round trip per checkout: a server that ends a session says so on the socket
    (an error message, then end of file), so a pooled connection with unread input is pinged,
    and so is one idle for ``ping_after_idle`` seconds (a silent network drop). A failed ping
    replaces every pooled connection. ``pool_pre_ping=True`` restores SQLAlchemy's ping on
    every checkout. ``pool_timeout`` bounds the wait for a free connection.

    Args:
        url: the database URL; ``postgresql://`` means the psycopg async driver.
        pool_size: connections kept open.
        max_overflow: extra connections opened under load and closed again.
        pool_timeout: seconds to wait for a free connection before failing (transiently).
        pool_recycle: seconds after which a connection is replaced.
        connect_timeout: seconds to wait for the server when connecting.
        application_name: shown in ``pg_stat_activity``.
        ping_after_idle: seconds a pooled connection may sit idle before it is pinged;
            ``None`` turns the check off (a dropped connection then fails one statement,
            as :class:`~resilient_task.errors.BackendUnavailableError`, and is replaced).
        engine_options: more :func:`~sqlalchemy.ext.asyncio.create_async_engine` options;
            ``connect_args`` are merged into the defaults above.
    """
    connect_args: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "application_name": application_name,
    }
    connect_args.update(engine_options.pop("connect_args", {}))
    options: dict[str, Any] = {
        "pool_pre_ping": False,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
        "pool_recycle": pool_recycle,
        "connect_args": connect_args,
    }
    options.update(engine_options)
    engine = create_async_engine(normalize_url(url), **options)
    event.listen(engine.sync_engine, "connect", _configure_connection)
    _LIVENESS[engine.sync_engine] = (
        0.0 if options["pool_pre_ping"] else ping_after_idle,
        options["pool_recycle"] if options["pool_recycle"] >= 0 else None,
    )
    if ping_after_idle is not None and not options["pool_pre_ping"]:
        check = _LivenessCheck(engine.sync_engine.dialect, ping_after_idle)
        event.listen(engine.sync_engine, "checkout", check.on_checkout)
        event.listen(engine.sync_engine, "checkin", check.on_checkin)
    return engine


_LIVENESS: WeakKeyDictionary[sa.Engine, tuple[float | None, float | None]] = WeakKeyDictionary()
_DEFAULT_LIVENESS = (10.0, None)


def liveness(engine: AsyncEngine) -> tuple[float | None, float | None]:
    """``(ping_after_idle, pool_recycle)`` of an engine: as given to :func:`create_engine`.

    For connections the DAO keeps checked out (``hot``), which the pool's own checks never
    see; ``pool_pre_ping=True`` gives 0 (a ping before every use). An engine made elsewhere
    gets the defaults, with its pool's recycle time.
    """
    found = _LIVENESS.get(engine.sync_engine)
    if found is not None:
        return found
    recycle = getattr(engine.sync_engine.pool, "_recycle", -1)  # no public accessor
    usable = isinstance(recycle, int | float) and recycle >= 0
    return _DEFAULT_LIVENESS[0], float(recycle) if usable else None


class _LivenessCheck:
    """Pool events: ping a connection leaving the pool only when it may be dead."""

    def __init__(self, dialect: sa.Dialect, ping_after_idle: float) -> None:
        self._dialect = dialect
        self._idle = ping_after_idle

    def on_checkin(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    def on_checkout(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None:
            return  # fresh from connect()
        recent = time.monotonic() - checked_in_at < self._idle
        if recent and not has_input(dbapi_connection.driver_connection):
            return
        try:
            alive = self._dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces the connection and retries the checkout
            raise sa_exc.InvalidatePoolError(f"ping failed: {exc}") from exc
        if not alive:
            raise sa_exc.InvalidatePoolError("ping failed")


_CHECKED_IN_AT = "resilient_task.checked_in_at"


def has_input(driver_connection: Any) -> bool:
    """Whether the server sent something to an idle psycopg connection (a closed session does)."""
    try:
        fileno = driver_connection.fileno()
        return bool(select.select([fileno], [], [], 0)[0])
    except (OSError, ValueError, psycopg.Error):  # closed, or a descriptor select cannot take
        return True


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    """Our settings for every new connection of this engine (only this engine's).

    - No automatic preparation: psycopg prepares a statement after five executions, and
      PostgreSQL may then switch to a generic plan that cannot see the parameters. The hot
      statements, written so that their generic plan is the right one, are prepared
      explicitly (``driver``); a threshold of ``None`` would disable that too.
    - List parameters (the ``unnest`` batches) go as binary arrays: psycopg's text format
      quotes every element with a regular expression.
    """
    driver = dbapi_connection.driver_connection
    # Never by count; ``prepare=True`` still prepares (a threshold of None would disable it).
    driver.prepare_threshold = sys.maxsize
    driver.adapters.register_dumper(list, ListBinaryDumper)

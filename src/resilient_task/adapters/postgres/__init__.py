"""The PostgreSQL adapter: task store, schema migrations and their command-line entry points.

Public API::

    PostgresTaskDAO(engine=..., settings=PostgresSettings(...))   # on your engine
    PostgresTaskDAO.from_url(url, settings=..., **pool_options)   # owns its engine
    async with open_postgres_dao(url, schema=..., prefix=...) as dao: ...
    await upgrade(engine_or_url, schema=..., prefix=...)          # create/upgrade the tables
    await current_version(engine_or_url, schema=..., prefix=...)  # 0 = no tables yet
    db_upgrade_main(database_url, schema, prefix) -> exit code    # `resilient-task db upgrade`
    async_session_for(connection)   # an AsyncSession inside a transactional handler's transaction
    PostgresNotifyTriggerer(url=..., settings=...)  # triggers through LISTEN/NOTIFY (no Kafka)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from resilient_task.adapters.postgres.commands import db_current_main, db_upgrade_main
from resilient_task.adapters.postgres.dao import PostgresTaskDAO
from resilient_task.adapters.postgres.engine import create_engine
from resilient_task.adapters.postgres.migrations import (
    SCHEMA_VERSION,
    current_version,
    upgrade,
)
from resilient_task.adapters.postgres.notify import PostgresNotifyTriggerer
from resilient_task.adapters.postgres.schema import (
    DEFAULT_PREFIX,
    DEFAULT_SCHEMA,
    PostgresSettings,
)
from resilient_task.adapters.postgres.transactions import async_session_for

__all__ = [
    "SCHEMA_VERSION",
    "PostgresNotifyTriggerer",
    "PostgresSettings",
    "PostgresTaskDAO",
    "async_session_for",
    "create_engine",
    "current_version",
    "db_current_main",
    "db_upgrade_main",
    "open_postgres_dao",
    "upgrade",
]

_DEFAULTS = PostgresSettings()


@asynccontextmanager
async def open_postgres_dao(
    database_url: str | sa.URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    prefix: str = DEFAULT_PREFIX,
    compression_threshold: int | None = 1024,
    compression_level: int = 6,
    prepared_statements: bool = True,
    lock_timeout: timedelta | None = _DEFAULTS.lock_timeout,
    idle_in_transaction_timeout: timedelta | None = _DEFAULTS.idle_in_transaction_timeout,
    migrate: bool = False,
    hot_connections: int | None = None,
    **pool_options: Any,
) -> AsyncIterator[PostgresTaskDAO]:
    """A :class:`PostgresTaskDAO` with its own engine, schema-checked, disposed of on exit.

    ``pool_options`` go to :func:`create_engine` (``pool_size``, ``pool_timeout``...); the
    other keywords are :class:`PostgresSettings` fields (``lock_timeout`` and
    ``idle_in_transaction_timeout`` are set on every session; None leaves the server's own).
    ``migrate=True`` creates or upgrades the tables first (as ``resilient-task db upgrade``);
    by default a missing or outdated schema is an error, so deployments migrate explicitly.
    ``hot_connections`` (None: 2) pool connections stay checked out for one-statement
    operations (see :class:`PostgresTaskDAO`).

    Raises:
        SchemaVersionError: the tables are missing or at another version.
        BackendUnavailableError: the database cannot be reached.
    """
    settings = PostgresSettings(
        schema=schema,
        prefix=prefix,
        compression_threshold=compression_threshold,
        compression_level=compression_level,
        prepared_statements=prepared_statements,
        lock_timeout=lock_timeout,
        idle_in_transaction_timeout=idle_in_transaction_timeout,
    )
    dao = PostgresTaskDAO.from_url(
        database_url, settings=settings, hot_connections=hot_connections, **pool_options
    )
    try:
        if migrate:
            await upgrade(dao.engine, schema=schema, prefix=prefix)
        await dao.open()
        yield dao
    finally:
        await dao.close()

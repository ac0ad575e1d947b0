"""A session-level PostgreSQL advisory lock: one node of the cluster at a time does a job.

The lock lives on one dedicated connection kept open while this node holds it: PostgreSQL
releases it when that session ends, so a node that dies or loses its connection hands the
job over to the next node that tries. The key is derived from the schema and table prefix,
so two stores in one database do not share it.
"""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from resilient_task.adapters.postgres.dao import PostgresTaskDAO
from resilient_task.adapters.postgres.errors import translate_errors

__all__ = ["PostgresAdvisoryLock"]

log = logging.getLogger("resilient_task.metrics")


class PostgresAdvisoryLock:
    """:class:`~resilient_task.adapters.prometheus.cluster.ClusterLock` on PostgreSQL.

    Args:
        dao: the store whose engine and settings are used.
        purpose: what the lock guards; part of its key.
    """

    def __init__(self, *, dao: PostgresTaskDAO, purpose: str = "cluster-gauges") -> None:
        self._dao = dao
        settings = dao.settings
        digest = hashlib.sha256(
            f"resilient-task:{purpose}:{settings.schema}:{settings.prefix}".encode()
        ).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        """The advisory lock key (a signed 64-bit int)."""
        self._conn: AsyncConnection | None = None

    async def try_hold(self) -> bool:
        """True when this node holds the lock (already, or taken now); False if another does."""
        with translate_errors("taking the cluster gauges lock"):
            try:
                if self._conn is not None and not self._conn.closed:
                    # Still ours while the session lives: a cheap round trip proves it.
                    await self._conn.execute(sa.text("SELECT 1"))
                    return True
                conn = await self._dao.engine.connect()
                got = await conn.scalar(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                )
                await conn.commit()
            except Exception:
                await self._drop()
                raise
            if got:
                self._conn = conn
                return True
            await conn.close()
            return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:
                log.debug("closing the cluster lock connection failed", exc_info=True)

    async def release(self) -> None:
        """Release the lock by ending its session."""
        await self._drop()

"""PostgresNotifyTriggerer: the ``Triggerer`` port over PostgreSQL LISTEN/NOTIFY.

Millisecond triggers for deployments without Kafka; the resumer's database poll stays the
safety net. What it promises, and what it does not:

- ``trigger`` is **one round trip** per call, whatever the number of tasks:
  ``SELECT pg_notify(channel, payload)`` (prepared; ``... FROM unnest(payloads)`` for more
  than one payload) on a dedicated autocommit connection, many task references per payload
  (:mod:`.notify_payloads`). The channel is
  derived from the schema and table prefix, so deployments sharing a database stay apart.
- A started triggerer holds one more connection, which listens with ``LISTEN`` and hands each
  reference to the callback, at most ``max_in_flight`` at once. When every slot is busy it
  stops reading: the notifications wait in the server's queue instead of in this process
  (that queue is shared by the whole cluster, 8 GB; a listener that stays blocked holds it
  back, see ``pg_notification_queue_usage()``).
- A node's adds do not call ``trigger``: its store NOTIFYs in the insert statement itself
  (``PostgresTaskDAO.notify_on_insert``, set for ``NotifyTriggers``), delivered when the insert
  commits; ``trigger`` serves the resumer's re-triggers.
- PostgreSQL serialises the commits of NOTIFYing transactions on one global lock, so an add's
  commit (the caller's, with ``transaction=``) takes it too: a hint channel, not a bus for
  many thousands of tiny transactions.
- **Not durable, but catching up**: a notification reaches only the connections listening
  when it is committed. Triggers sent while no node listens (before ``start``, after
  ``stop``, while the listener reconnects) are lost, and so are triggers whose callback
  ``stop`` cancelled. So each time ``LISTEN`` takes effect, the listener reads the tasks that
  are SUBMITTED in the store (oldest pick-up deadline first, at most ``catch_up_limit``) and
  delivers them as triggers: tasks added while no worker listened start as soon as one
  listens. Beyond that limit, or when the references were not real tasks, the resumer
  triggers them again after their pick-up deadline (``expected_queue_time``).
- **Every listener gets every trigger**: with several workers all of them try the
  version-checked grab and one wins. Correct, but each task costs one grab attempt per
  worker; for many workers, Kafka partitions the triggers instead.
- The listener reconnects with capped, jittered backoff when the database goes away, logs once
  per outage and once when it is back, and never lets an error escape into the node. An idle
  listener checks its connection every ``health_check_interval`` (a silent network drop
  would otherwise go unnoticed).

asyncio only (psycopg's async connections), like the rest of the PostgreSQL adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.array import ListBinaryDumper
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg

from resilient_task.adapters.postgres.driver import DriverStatement
from resilient_task.adapters.postgres.engine import normalize_url
from resilient_task.adapters.postgres.errors import translate
from resilient_task.adapters.postgres.notify_listener import CatchUp, NotifyListener
from resilient_task.adapters.postgres.notify_payloads import channel_name, encode_payloads
from resilient_task.adapters.postgres.schema import PostgresSettings, Tables
from resilient_task.domain.task import BaseTask, TaskStatus
from resilient_task.errors import BackendError, ConfigurationError, TriggerError
from resilient_task.ports.triggerer import TriggerCallback

__all__ = ["PostgresNotifyTriggerer"]

_NOTIFY_ONE = "SELECT pg_notify(%b, %b)"
_NOTIFY_MANY = "SELECT count(pg_notify(%b, p)) FROM unnest(%b::text[]) AS p"
"""Prepared, with binary parameters: most calls carry one payload (one ``add_task``), and the
array statement's text quoting cost more client CPU than the round trip's own work."""
_DRIVER_ERRORS = (psycopg.Error, OSError)


class PostgresNotifyTriggerer:
    """Sends triggers with ``pg_notify`` and receives them with ``LISTEN`` on one channel.

    The sending connection opens on the first :meth:`trigger`, so nodes that only add tasks
    never listen. :meth:`stop` stops listening and closes the sending connection too; a later
    :meth:`trigger` opens a new one. ``async with`` calls :meth:`stop` on exit.

    Args:
        url: the database URL (``postgresql+psycopg://...``), as for the task store.
        settings: schema and table prefix of the deployment; they name the channel.
        max_in_flight: most callbacks running at once; then reading pauses.
        stop_timeout: seconds :meth:`stop` waits for running callbacks before cancelling them.
        send_timeout: seconds :meth:`trigger` may take before it raises TriggerError.
        connect_timeout: seconds to connect; also how long :meth:`start` waits for ``LISTEN``
            before returning anyway (it keeps trying in the background).
        health_check_interval: seconds without notifications after which the listener checks
            its connection with a ``SELECT 1``.
        application_name: the connections show as ``<application_name>-notify`` (sending)
            and ``<application_name>-listen`` in ``pg_stat_activity``.
        catch_up_limit: most SUBMITTED tasks delivered when ``LISTEN`` takes effect; 0 turns
            the catch-up off.
    """

    def __init__(
        self,
        *,
        url: str | sa.URL,
        settings: PostgresSettings | None = None,
        max_in_flight: int = 1000,
        stop_timeout: float = 5.0,
        send_timeout: float = 3.0,
        connect_timeout: float = 10.0,
        health_check_interval: float = 30.0,
        application_name: str = "resilient-task",
        catch_up_limit: int = 1000,
    ) -> None:
        if max_in_flight < 1 or min(stop_timeout, send_timeout, connect_timeout) < 0:
            raise ConfigurationError("max_in_flight must be positive and timeouts not negative")
        if catch_up_limit < 0:
            raise ConfigurationError("catch_up_limit must not be negative")
        if health_check_interval <= 0:
            raise ConfigurationError("health_check_interval must be positive")
        settings = settings or PostgresSettings()
        self.channel = channel_name(settings)
        """The NOTIFY channel: ``<schema>.<prefix>triggers``."""
        # SQLAlchemy's own URL -> psycopg keywords (multiple hosts, query options, ...).
        dialect = PGDialectAsync_psycopg()  # type: ignore[no-untyped-call]
        _, params = dialect.create_connect_args(normalize_url(url))  # type: ignore[no-untyped-call]
        # Whole seconds: libpq reads connect_timeout as an integer.
        params["connect_timeout"] = max(1, round(connect_timeout))
        self._params, self._application_name = dict(params), application_name
        self._max_in_flight, self._stop_timeout = max_in_flight, stop_timeout
        self._send_timeout, self._connect_timeout = send_timeout, connect_timeout
        self._health_check_interval = health_check_interval
        self._sender: psycopg.AsyncConnection[Any] | None = None
        self._cursor: psycopg.AsyncCursor[Any] | None = None  # the sender's, reused
        self._send_lock = asyncio.Lock()
        self._listener: NotifyListener | None = None
        t = Tables.build(settings).tasks
        self._submitted = DriverStatement.compile(
            sa.select(t.c.id, t.c.version, t.c.type, t.c.sub_type, t.c.priority)
            .where(t.c.status == TaskStatus.SUBMITTED.value)
            .order_by(t.c.next_event_time)
            .limit(catch_up_limit),
            prepare=False,
        )
        self._catch_up: CatchUp | None = self._read_submitted if catch_up_limit else None

    @property
    def listening(self) -> bool:
        """True while the listening connection is open and ``LISTEN`` is in effect."""
        return self._listener is not None and self._listener.listening

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """NOTIFY the channel about ``tasks`` in one round trip (several tasks per payload).

        Raises:
            TriggerError: not committed within ``send_timeout`` or refused by the server;
                ``__cause__`` holds the driver's error.
        """
        if not tasks:
            return
        payloads = encode_payloads(tasks)
        try:
            async with asyncio.timeout(self._send_timeout), self._send_lock:
                await self._send(payloads)
        except (*_DRIVER_ERRORS, TimeoutError) as exc:
            ids = ", ".join(str(task.id) for task in tasks[:5])
            more = f" and {len(tasks) - 5} more" if len(tasks) > 5 else ""
            if isinstance(exc, TimeoutError):
                reason, transient = f"no answer within {self._send_timeout} s", True
            else:
                error = translate(exc, "send triggers")
                reason = str(error)
                transient = isinstance(error, BackendError) and error.transient
            raise TriggerError(
                f"could not NOTIFY channel {self.channel!r} for task(s) {ids}{more}: {reason}",
                transient=transient,
            ) from exc

    async def start(self, on_trigger: TriggerCallback) -> None:
        """LISTEN and deliver triggers to ``on_trigger`` in the background.

        Returns once listening, or after ``connect_timeout`` while the database is unreachable
        (it keeps trying, logging once per outage).
        """
        if self._listener is not None:
            raise RuntimeError("PostgresNotifyTriggerer is already started")
        self._listener = NotifyListener(
            channel=self.channel,
            connect=self._connect,
            on_trigger=on_trigger,
            max_in_flight=self._max_in_flight,
            stop_timeout=self._stop_timeout,
            connect_timeout=self._connect_timeout,
            health_check_interval=self._health_check_interval,
            catch_up=self._catch_up,
        )
        await self._listener.start()

    async def _read_submitted(self, conn: psycopg.AsyncConnection[Any]) -> list[BaseTask]:
        statement = self._submitted
        cursor = await conn.execute(statement.sql, statement.params({}), prepare=statement.prepare)
        return [BaseTask(*row) for row in await cursor.fetchall()]

    async def stop(self) -> None:
        """Stop listening, let callbacks finish for ``stop_timeout``, close both connections.

        Idempotent.
        """
        listener, self._listener = self._listener, None
        try:
            if listener is not None:
                await listener.stop()
        finally:
            # Not under a running trigger(): closing a socket another task waits on would
            # leave that task waiting for its timeout. A trigger holds the lock briefly.
            async with self._send_lock:
                sender, self._sender, self._cursor = self._sender, None, None
                if sender is not None:
                    await sender.close()

    async def __aenter__(self) -> PostgresNotifyTriggerer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _connect(self, role: str) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection named ``<application_name>-<role>``."""
        params = {**self._params, "application_name": f"{self._application_name}-{role}"}
        return await psycopg.AsyncConnection.connect(autocommit=True, **params)

    async def _send(self, payloads: list[str]) -> None:
        while True:
            reused = self._cursor is not None and not self._cursor.connection.closed
            if not reused:
                self._sender = await self._connect("notify")
                self._sender.adapters.register_dumper(list, ListBinaryDumper)
                self._cursor = self._sender.cursor()
            conn, cursor = self._sender, self._cursor
            assert conn is not None
            assert cursor is not None
            try:
                if len(payloads) == 1:
                    await cursor.execute(_NOTIFY_ONE, (self.channel, payloads[0]), prepare=True)
                else:
                    await cursor.execute(_NOTIFY_MANY, (self.channel, payloads), prepare=True)
                return
            except BaseException as exc:
                self._sender = self._cursor = None
                await conn.close()
                # An idle connection the server dropped meanwhile (restart, terminated
                # backend): once more on a new one. Duplicates would be harmless anyway.
                if not (reused and isinstance(exc, psycopg.OperationalError)):
                    raise

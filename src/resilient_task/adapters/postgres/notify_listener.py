"""The receiving half of :class:`~.notify.PostgresNotifyTriggerer`: LISTEN, decode, hand over.

One :class:`NotifyListener` per start..stop period. It owns one connection that runs ``LISTEN``
and reads ``notifies()``; each task reference goes to the callback in its own asyncio task, at
most ``max_in_flight`` at once. With every slot busy it stops reading, so notifications wait
in the server's queue (bounded backpressure, nothing buffered here). A lost connection is
logged once per outage (:class:`~resilient_task.service.outage.OutageLog`) and re-opened with
capped, jittered backoff; nothing escapes into the node. Notifications sent while it was not
listening are lost, so each time ``LISTEN`` is in effect it first *catches up*: ``catch_up``
reads the tasks that are SUBMITTED in the store now, and those go to the callback too. A task
committed before ``LISTEN`` is in that read; one committed after it is notified (some may come
both ways: the grab is version-checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from resilient_task.adapters.delivery import Backoff, drain_callbacks
from resilient_task.adapters.postgres.errors import translate
from resilient_task.adapters.postgres.notify_payloads import decode_payload, malformed_reason
from resilient_task.domain.task import BaseTask
from resilient_task.errors import BackendUnavailableError
from resilient_task.ports.triggerer import TriggerCallback
from resilient_task.service.outage import OutageLog

__all__ = ["CatchUp", "NotifyListener"]

CatchUp = Callable[[psycopg.AsyncConnection[Any]], Awaitable[list[BaseTask]]]
"""Reads, on the listening connection, the tasks that are SUBMITTED now."""

logger = logging.getLogger(__name__)

_DRIVER_ERRORS = (psycopg.Error, OSError)
_STABLE_AFTER = 10.0
"""Seconds a listening connection must last before the reconnect backoff starts over: a server
that accepts and then drops every connection must not be hammered."""


class NotifyListener:
    """One start..stop period of listening (the triggerer makes a new one per start).

    Attributes:
        listening: True while the connection is open and ``LISTEN`` is in effect.
    """

    def __init__(
        self,
        *,
        channel: str,
        connect: Callable[[str], Awaitable[psycopg.AsyncConnection[Any]]],
        on_trigger: TriggerCallback,
        max_in_flight: int,
        stop_timeout: float,
        connect_timeout: float,
        health_check_interval: float,
        catch_up: CatchUp | None = None,
    ) -> None:
        self._channel, self._connect, self._on_trigger = channel, connect, on_trigger
        self._catch_up = catch_up
        self._stop_timeout, self._connect_timeout = stop_timeout, connect_timeout
        self._health_check_interval = health_check_interval
        self._slots = asyncio.Semaphore(max_in_flight)
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage = OutageLog(logger, "PostgreSQL trigger listener")
        self.listening = False

    async def start(self) -> None:
        """Listen in the background; return once listening or after ``connect_timeout``."""
        self._task = asyncio.create_task(self._run(), name="resilient-task-notify-listener")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            logger.warning(
                "not listening on channel %r after %.1f s; still trying in the background",
                self._channel,
                self._connect_timeout,
            )

    async def stop(self) -> None:
        """Stop reading, wait ``stop_timeout`` for running callbacks, cancel the rest."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # stops reading and closes the connection; notifications not read
            await asyncio.wait({task})  # are lost, as if this node had never listened
        await drain_callbacks(self._handlers, self._stop_timeout, logger)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        channel = self._channel
        while True:
            connected_at: float | None = None
            try:
                conn = await self._listen()
                connected_at = loop.time()
                try:
                    await self._deliver_submitted(conn)
                    await self._read(conn)
                finally:
                    self.listening = False
                    await conn.close()
            except TimeoutError:
                unanswered = BackendUnavailableError(
                    f"PostgreSQL did not answer within {self._connect_timeout} s"
                )
                self._outage.failed(unanswered, f"listening on channel {channel!r}")
            except _DRIVER_ERRORS as exc:
                self._outage.failed(translate(exc, "listen"), f"listening on channel {channel!r}")
            except Exception:
                logger.exception("trigger listener of %r failed unexpectedly; restarting", channel)
            if connected_at is not None and loop.time() - connected_at > _STABLE_AFTER:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        async with asyncio.timeout(self._connect_timeout):
            conn = await self._connect("listen")
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            except BaseException:
                await conn.close()
                raise
        self.listening = True
        self._ready.set()
        self._outage.succeeded()
        return conn

    async def _deliver_submitted(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Catch up with the triggers this node may have missed while it was not listening."""
        if self._catch_up is None:
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                tasks = await self._catch_up(conn)
        except psycopg.errors.UndefinedTable:
            return  # no task store in this schema (a triggerer used on its own)
        except (*_DRIVER_ERRORS, TimeoutError) as exc:
            logger.warning(
                "could not read SUBMITTED tasks after LISTEN on channel %r (%s); any trigger "
                "missed meanwhile runs after its pick-up deadline",
                self._channel,
                exc,
            )
            return
        if tasks:
            logger.info("catching up with %d SUBMITTED task(s) after LISTEN", len(tasks))
        for task in tasks:
            await self._deliver(task)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        interval = self._health_check_interval
        while True:
            received = False
            async with contextlib.aclosing(conn.notifies(timeout=interval)) as notifies:
                async for notify in notifies:
                    received = True
                    await self._dispatch(notify.payload)
            if not received:  # idle for a whole interval: is the server still there?
                async with asyncio.timeout(self._connect_timeout):
                    await conn.execute("SELECT 1")

    async def _dispatch(self, payload: str) -> None:
        tasks = decode_payload(payload)
        if tasks is None:
            logger.warning(
                "skipping a malformed notification on channel %r: %s",
                self._channel,
                malformed_reason(payload),
            )
            return
        for task in tasks:
            await self._deliver(task)

    async def _deliver(self, task: BaseTask) -> None:
        # Backpressure: with every slot busy, stop reading until a callback returns.
        await self._slots.acquire()
        handler = asyncio.create_task(self._handle(task))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _handle(self, task: BaseTask) -> None:
        try:
            await self._on_trigger(task)
        except Exception:
            # Handled all the same: the store and the resumer own retries.
            logger.exception(
                "trigger callback failed for task %s (version %s)", task.id, task.version
            )
        finally:
            self._slots.release()

"""The store and the trigger of a synchronous add, both inside the caller's transaction.

:class:`JoinedTaskDAO` is the part of the ``TaskDAO`` port the task service's add path uses
(``insert_tasks``, ``apply``, ``after_commit``), on the caller's connection
(:class:`~.connection.JoinedConnection`): the PostgreSQL store's argument checks
(``check_new``), statements (``Statements``), batch insert (``insert_batch``: deduplication by
id and ``(type, unique_key)``), compare-and-set writes (``apply_batch``) and error translation
(``translate_errors``) -- imported, not restated.

With ``triggers="notify"`` the insert itself NOTIFYs the workers' channel
(``Statements.notifying_inserts``): PostgreSQL delivers a notification when its transaction
commits and drops it when it rolls back, so a notification inside the caller's transaction *is*
one sent after commit -- and, built in the insert's statement, it costs no round trip of its
own (it used to take three: a savepoint, the NOTIFY, its release). The outcomes of the tasks it
notified say ``triggered``, so the service never calls :class:`NoTriggers`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from resilient_task.adapters.postgres.changes import apply_batch
from resilient_task.adapters.postgres.codec import RAW, ZLIB, PayloadCodec
from resilient_task.adapters.postgres.errors import translate_errors
from resilient_task.adapters.postgres.inserts import insert_batch
from resilient_task.adapters.postgres.notify_payloads import channel_name
from resilient_task.adapters.postgres.schema import PostgresSettings, Tables
from resilient_task.adapters.postgres.statements import Statements
from resilient_task.adapters.validation import check_change, check_new
from resilient_task.domain.task import BaseTask, Task
from resilient_task.errors import TriggerError
from resilient_task.ports.task_dao import InsertOutcome, TaskChange
from resilient_task.ports.triggerer import TriggerCallback
from resilient_task.sync.connection import Callback, JoinedConnection, current_connection

__all__ = ["JoinedTaskDAO", "NoTriggers"]


class _CallerThreadCodec(PayloadCodec):
    """:class:`PayloadCodec` compressing in the caller's thread.

    The async codec hands large payloads to a worker thread to keep its event loop responsive;
    a synchronous caller has no event loop, and ``anyio.to_thread`` needs one.
    """

    def __init__(self, *, threshold: int | None, level: int) -> None:
        super().__init__(threshold=threshold, level=level)
        self._limit, self._zlib_level = threshold, level

    async def encode(self, data: bytes) -> tuple[int, bytes]:
        """The ``(data_format, stored bytes)`` of ``data``, as :class:`PayloadCodec` decides."""
        if self._limit is None or len(data) <= self._limit:
            return RAW, data
        packed = zlib.compress(data, self._zlib_level)
        return (ZLIB, packed) if len(packed) < len(data) else (RAW, data)


def _joined(transaction: Any) -> JoinedConnection:
    return transaction if isinstance(transaction, JoinedConnection) else current_connection()


class JoinedTaskDAO:
    """Inserts and compare-and-set writes on the caller's connection, never committed here.

    Without ``transaction=``, the connection of the add running in this thread is used (the
    service's fallback after a failed trigger writes through ``apply`` without one). With
    ``notify``, inserts NOTIFY the workers' channel of the due tasks they create.
    """

    def __init__(self, settings: PostgresSettings, *, notify: bool) -> None:
        self.settings = settings
        self._sql = Statements(Tables.build(settings), prepare=settings.prepared_statements)
        self._inserts = (
            self._sql.notifying_inserts(channel_name(settings)) if notify else self._sql.inserts
        )
        self._codec = _CallerThreadCodec(
            threshold=settings.compression_threshold, level=settings.compression_level
        )

    async def insert_tasks(
        self, tasks: Sequence[Task], *, transaction: Any = None
    ) -> list[InsertOutcome]:
        """Insert new tasks, deduplicating by id and ``(type, unique_key)``."""
        for task in tasks:
            check_new(task)
        if not tasks:
            return []
        conn = _joined(transaction)
        with translate_errors("insert tasks"):
            return await insert_batch(conn, self._sql, self._codec, tasks, self._inserts)  # type: ignore[arg-type]

    async def apply(self, changes: Sequence[TaskChange], *, transaction: Any = None) -> list[bool]:
        """Compare-and-set every change (one UPDATE and one DELETE per round)."""
        for change in changes:
            check_change(change)
        if not changes:
            return []
        conn = _joined(transaction)
        with translate_errors("write task changes"):
            return await apply_batch(conn, self._sql, changes)  # type: ignore[arg-type]

    def after_commit(self, transaction: Any, callback: Callback) -> None:
        """Keep ``callback`` for the adder, which runs it before returning (see ``adder``)."""
        _joined(transaction).after_commit.append(callback)


class NoTriggers:
    """No trigger of its own: the insert NOTIFYs (``notify``) or the workers poll (``poll``).

    In poll-only mode the service stores due tasks as overdue, for the workers' poll.
    """

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Never called (the inserts trigger, or nothing does); a failed trigger if it were."""
        raise TriggerError("resilient_task.sync sends no triggers of its own")

    async def start(self, on_trigger: TriggerCallback) -> None:
        """Not for receiving."""
        raise NotImplementedError("resilient_task.sync only sends triggers")

    async def stop(self) -> None:
        """Nothing to stop."""

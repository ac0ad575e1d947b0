"""Payload encoding (raw or zlib) and the mapping between rows and :class:`Task` values."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import anyio.to_thread

from resilient_task.adapters.postgres.statements import INSERT_COLUMNS
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import BackendError

__all__ = [
    "RAW",
    "ZLIB",
    "PayloadCodec",
    "task_columns",
    "task_from_row",
    "task_params",
    "task_values",
]

RAW = 0
"""``data_format`` of a payload stored as given."""
ZLIB = 1
"""``data_format`` of a zlib-compressed payload."""

_THREAD_THRESHOLD = 256 * 1024
"""Payloads this large are (de)compressed in a worker thread so the event loop keeps running."""


class PayloadCodec:
    """Compresses payloads above ``threshold`` bytes (when that makes them smaller)."""

    def __init__(self, *, threshold: int | None, level: int) -> None:
        self._threshold = threshold
        self._level = level

    async def encode(self, data: bytes) -> tuple[int, bytes]:
        """The ``(data_format, stored bytes)`` of payload ``data``."""
        if self._threshold is None or len(data) <= self._threshold:
            return RAW, data
        if len(data) >= _THREAD_THRESHOLD:
            packed = await anyio.to_thread.run_sync(zlib.compress, data, self._level)
        else:
            packed = zlib.compress(data, self._level)
        return (ZLIB, packed) if len(packed) < len(data) else (RAW, data)

    async def encode_all(self, payloads: list[bytes]) -> tuple[list[int], list[bytes]]:
        """:meth:`encode` of each payload: the ``data_format`` and stored bytes columns.

        A batch of payloads none of which is compressed (the common case) costs no await
        per payload.
        """
        threshold = self._threshold
        if threshold is None or max(map(len, payloads), default=0) <= threshold:
            return [RAW] * len(payloads), payloads
        encoded = [await self.encode(data) for data in payloads]
        return [e[0] for e in encoded], [e[1] for e in encoded]

    @staticmethod
    async def decode(data_format: int | None, stored: bytes | None) -> bytes:
        """The payload stored as ``stored`` in ``data_format`` (no row means empty)."""
        if stored is None:
            return b""
        if data_format == RAW:
            return bytes(stored)
        if data_format == ZLIB:
            if len(stored) >= _THREAD_THRESHOLD // 4:
                return await anyio.to_thread.run_sync(zlib.decompress, stored)
            return zlib.decompress(stored)
        raise BackendError(
            f"unknown payload data_format {data_format!r}: written by a newer resilient-task?",
            transient=False,
        )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def task_from_row(row: Mapping[Any, Any], data: bytes = b"") -> Task:
    """The task stored in ``row`` (the ``tasks`` columns), with payload ``data``.

    A row without ``last_traceback`` (a listing leaves it out) is a task without one.
    """
    return Task(
        id=row["id"],
        type=row["type"],
        data=data,
        status=TaskStatus(row["status"]),
        next_event_time=_utc(row["next_event_time"]),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        version=row["version"],
        sub_type=row["sub_type"],
        priority=row["priority"],
        unique_key=row["unique_key"],
        processing_tries_count=row["processing_tries_count"],
        recovery_count=row["recovery_count"],
        processing_node=row["processing_node"],
        last_error=row["last_error"],
        last_traceback=row.get("last_traceback"),
    )


def _error_text(error: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL or a lone surrogate; an error message must never make a
    # write fail. The domain already escapes both (Task.mark_error...); this covers a Task
    # built by hand.
    if error is None:
        return None
    if not error.isascii():
        error = error.encode("utf-8", "backslashreplace").decode()
    return error.replace("\x00", "\\x00")


# How each ``tasks`` column (everything but the payload) is read from a Task.
_GETTERS: dict[str, Callable[[Task], Any]] = {name: attrgetter(name) for name in INSERT_COLUMNS}
_GETTERS["status"] = attrgetter("status._value_")
_GETTERS["last_error"] = lambda task: _error_text(task.last_error)
_INSERTED = tuple(_GETTERS.items())
_PARAMS = tuple((f"t_{name}", get) for name, get in _INSERTED)
_GETTERS["last_traceback"] = lambda task: _error_text(task.last_traceback)


def task_columns(tasks: Sequence[Task], names: Iterable[str]) -> dict[str, list[Any]]:
    """Columns ``names`` of many tasks, column by column (the ``unnest`` arrays).

    The same values as :func:`task_values` of each task, without a dictionary per task.
    """
    return {name: list(map(_GETTERS[name], tasks)) for name in names}


def task_values(task: Task) -> dict[str, Any]:
    """The ``tasks`` columns an insert writes of ``task`` (everything but the payload)."""
    return {name: get(task) for name, get in _INSERTED}


def task_params(task: Task) -> dict[str, Any]:
    """:func:`task_values` as the single insert's parameters, ``t_<column>``."""
    return {name: get(task) for name, get in _PARAMS}

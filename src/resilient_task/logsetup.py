"""Log output of a worker: level, text or JSON lines, and a muzzle on aiokafka's reconnects.

- Lines about a task carry ``extra={"task_id", "task_type", "task_version"}``
  (:func:`task_extra`); the JSON format prints them as fields, so a log search for one task
  id finds every line about it.
- While the broker is down, aiokafka logs every failed reconnect attempt at ERROR (846 lines
  in 12 s from one worker, measured). :class:`RateLimitFilter` lets the first line of each
  kind through, then at most one per ``interval`` with the count of lines held back; the
  outage itself is logged once by resilient-task's own outage log.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from resilient_task.logtext import loggable

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "RateLimitFilter",
    "configure_logging",
    "task_extra",
]

LOG_FORMATS = ("text", "json")
"""The values of ``--log-format``."""

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
"""The text format of a worker's log lines."""

_TASK_FIELDS = ("task_id", "task_type", "task_version")


def task_extra(task: Any) -> dict[str, object]:
    """``extra=`` for a log line about ``task`` (anything with id, type and version)."""
    return {"task_id": str(task.id), "task_type": task.type, "task_version": task.version}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, task fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (user strings are escaped by ``json.dumps``)."""
        body: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _TASK_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                body[name] = value if isinstance(value, int | str) else loggable(value)
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exception"] = record.exc_text
        return json.dumps(body, ensure_ascii=False, default=str)


class RateLimitFilter(logging.Filter):
    """Rate-limits WARNING-and-above lines of the loggers under ``prefix`` (aiokafka's).

    The first line of each (logger, message template) passes; the next ones pass at most one
    per ``interval`` seconds, with the number held back meanwhile appended. Lines of other
    loggers and below WARNING pass untouched. The state is bounded: at most ``max_kinds``
    kinds are tracked (aiokafka has a handful of message templates).
    """

    def __init__(self, prefix: str = "aiokafka", interval: float = 60.0, max_kinds: int = 256):
        super().__init__()
        self._prefix = prefix
        self._dotted = prefix + "."
        self.interval = interval
        """Seconds between two lines of one kind."""
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[str, str], list[float]] = {}  # kind -> [last passed, held]

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written (it may get a count of held-back lines appended)."""
        name = record.name
        if record.levelno < logging.WARNING or not (
            name == self._prefix or name.startswith(self._dotted)
        ):
            return True
        kind = (name, str(record.msg))
        now = time.monotonic()
        state = self._kinds.get(kind)
        if state is None:
            if len(self._kinds) >= self._max_kinds:
                self._kinds.clear()
            self._kinds[kind] = [now, 0]
            return True
        if now - state[0] < self.interval:
            state[1] += 1
            return False
        held = int(state[1])
        state[0], state[1] = now, 0
        if held:
            record.msg = f"{record.msg} [{held} similar line(s) held back in {self.interval:g} s]"
        return True


def configure_logging(
    level: int = logging.INFO, fmt: str = "text", *, kafka_interval: float = 60.0
) -> None:
    """Set up the root logger for a worker process.

    Args:
        level: the root level.
        fmt: ``text`` (human-readable lines) or ``json`` (one object per line).
        kafka_interval: seconds between two aiokafka lines of one kind at WARNING or above
            (0: no limit).

    Raises:
        ValueError: ``fmt`` is not one of :data:`LOG_FORMATS`.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if kafka_interval > 0:
        handler.addFilter(RateLimitFilter(interval=kafka_interval))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

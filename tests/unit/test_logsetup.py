"""Worker logging: JSON lines with the task fields, and aiokafka's reconnect flood held back."""

from __future__ import annotations

import json
import logging
import uuid

from hypothesis import given
from hypothesis import strategies as st

from resilient_task.logsetup import JsonFormatter, RateLimitFilter, task_extra


def record(name: str, level: int, msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


class _Task:
    def __init__(self, type: str) -> None:
        self.id = uuid.uuid4()
        self.type = type
        self.version = 3


@given(st.text(max_size=200), st.text(max_size=60))
def test_json_lines_carry_the_task_fields_and_stay_one_line(message: str, task_type: str) -> None:
    task = _Task(task_type)
    line = JsonFormatter().format(_with_args(message, task_extra(task)))
    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == message
    assert body["task_id"] == str(task.id)
    assert body["task_type"] == task_type
    assert body["task_version"] == 3
    assert body["level"] == "INFO"
    assert body["logger"] == "resilient_task.executor"


def _with_args(message: str, extra: dict[str, object]) -> logging.LogRecord:
    rec = logging.LogRecord(
        "resilient_task.executor", logging.INFO, __file__, 1, "%s", (message,), None
    )
    rec.__dict__.update(extra)
    return rec


def test_lines_without_a_task_have_no_task_fields() -> None:
    body = json.loads(JsonFormatter().format(record("x", logging.WARNING, "hello")))
    assert "task_id" not in body


def test_aiokafka_floods_are_held_back_and_counted() -> None:
    limit = RateLimitFilter(interval=3600)
    flood = [record("aiokafka.conn", logging.ERROR, "Unable connect to %s") for _ in range(846)]
    passed = [r for r in flood if limit.filter(r)]
    assert len(passed) == 1  # the first of its kind, then silence within the interval
    limit.interval = 0  # the interval is over: the next line says how many were held back
    late = record("aiokafka.conn", logging.ERROR, "Unable connect to %s")
    assert limit.filter(late)
    assert "845 similar line(s) held back" in str(late.msg)


def test_other_loggers_and_debug_lines_are_never_held_back() -> None:
    limit = RateLimitFilter(interval=3600)
    ours = [record("resilient_task.executor", logging.ERROR, "task failed") for _ in range(50)]
    debug = [record("aiokafka.conn", logging.DEBUG, "retrying") for _ in range(50)]
    assert all(limit.filter(r) for r in ours + debug)
    assert limit.filter(record("aiokafkaesque", logging.ERROR, "not aiokafka"))

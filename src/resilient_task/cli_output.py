"""What the ``tasks`` commands print: tables for people, one JSON object per line for tools.

Task types, nodes, errors and payloads are user-controlled: every one is printed with its
control characters escaped (and cut in tables), so a task cannot rewrite the operator's
terminal. JSON output escapes everything outside ASCII.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from resilient_task.cli_values import format_duration
from resilient_task.domain.task import Task
from resilient_task.logtext import loggable
from resilient_task.service.operator import Action, ActionResult, Outcome, TaskCounts

__all__ = ["print_counts", "print_results", "print_task", "print_tasks"]


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fields(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.id),
        "type": task.type,
        "sub_type": task.sub_type,
        "status": task.status.value,
        "version": task.version,
        "priority": task.priority,
        "processing_tries_count": task.processing_tries_count,
        "recovery_count": task.recovery_count,
        "next_event_time": task.next_event_time.isoformat(),
        "created_at": task.created_at.isoformat(),
        "updated_at": task.updated_at.isoformat(),
        "processing_node": task.processing_node,
        "unique_key": task.unique_key,
        "last_error": task.last_error,
    }


def _json(value: dict[str, Any]) -> None:
    print(json.dumps(value, ensure_ascii=True))


_ROW = "{:36}  {:24}  {:10}  {:>7}  {:>5}  {:20}  {:16}  {}"


def print_tasks(tasks: Sequence[Task], as_json: bool) -> None:
    """One row per task (id, type, status, version, tries, next event, node, error cut)."""
    if as_json:
        for task in tasks:
            _json(_fields(task))
        return
    print(_ROW.format("ID", "TYPE", "STATUS", "VERSION", "TRIES", "NEXT EVENT", "NODE", "ERROR"))
    for t in tasks:
        print(
            _ROW.format(
                str(t.id),
                loggable(t.type, 24),
                t.status.value,
                t.version,
                t.processing_tries_count,
                _time(t.next_event_time),
                loggable(t.processing_node or "-", 16),
                loggable(t.last_error or "", 60),
            )
        )


def print_task(task: Task, data: str, as_json: bool) -> None:
    """Every field; the payload only for ``data`` ``utf8`` or ``base64`` (not ``none``).

    The traceback of the last failure comes last, one escaped line per line, indented.
    """
    fields = _fields(task)
    fields["last_traceback"] = task.last_traceback
    if data != "none":
        fields["data_encoding"] = data
        fields["data"] = (
            base64.b64encode(task.data).decode("ascii")
            if data == "base64"
            else task.data.decode("utf-8", "backslashreplace")
        )
    if as_json:
        _json(fields)
        return
    fields["data_bytes"] = len(task.data)
    trace = fields.pop("last_traceback")
    for name, value in fields.items():
        if name in ("data", "last_error") and value is not None:
            text = _printable(value)  # uncut
        else:
            text = "-" if value is None else loggable(value, 500)
        print(f"{name + ':':24}{text}")
    if trace is None:
        print(f"{'last_traceback:':24}-")
        return
    print("last_traceback:")
    for line in trace.splitlines():
        print(f"    {_printable(line)}")


def _printable(text: str) -> str:
    """``text`` with every unprintable character (newline, escape...) escaped, the rest kept."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def print_counts(counts: TaskCounts, as_json: bool) -> None:
    """Counts by status (and type) and the age of the oldest overdue tasks."""
    ages = {
        s.value: None if a is None else a.total_seconds() for s, a in counts.oldest_overdue.items()
    }
    if as_json:
        value: dict[str, Any] = {
            "at": counts.at.isoformat(),
            "by_status": {s.value: n for s, n in counts.by_status.items()},
            "oldest_overdue_seconds": ages,
        }
        if counts.by_type is not None:
            value["by_type"] = [
                {"status": s.value, "type": t, "count": n}
                for (s, t), n in sorted(counts.by_type.items())
            ]
        _json(value)
        return
    for status, n in counts.by_status.items():
        print(f"{status.value:12}{n:>12}")
    if counts.by_type is not None:
        print()
        for (status, type_), n in sorted(counts.by_type.items()):
            print(f"{status.value:12}{n:>12}  {loggable(type_, 80)}")
    print()
    for status, age in counts.oldest_overdue.items():
        shown = "none" if age is None else format_duration(age - age % timedelta(seconds=1))
        print(f"oldest overdue {status.value}: {shown}")


def print_results(action: Action, results: Sequence[ActionResult], as_json: bool) -> None:
    """One line per task with its outcome; a tally of the outcomes on stderr."""
    for r in results:
        if as_json:
            _json(
                {
                    "id": str(r.task_id),
                    "action": action.value,
                    "outcome": r.outcome.value,
                    "status": None if r.task is None else r.task.status.value,
                    "version": None if r.task is None else r.task.version,
                    "detail": r.detail or None,
                    "dry_run": r.dry_run,
                }
            )
            continue
        if r.outcome is Outcome.OK and r.task is not None:
            state = f"{r.task.status.value} at version {r.task.version}"
            detail = f"would {action.value}: {state}" if r.dry_run else f"now {state}"
        else:
            detail = loggable(r.detail, 200)
        print(f"{r.task_id}  {r.outcome.value:11}  {detail}")
    tally: dict[str, int] = {}
    for r in results:
        tally[r.outcome.value] = tally.get(r.outcome.value, 0) + 1
    summary = ", ".join(f"{n} {o}" for o, n in tally.items()) or "no tasks"
    dry = " (dry run: nothing written)" if any(r.dry_run for r in results) else ""
    print(f"{action.value}: {summary}{dry}", file=sys.stderr)

"""The ``tasks`` commands on the in-memory store: output, outcomes and exit codes.

``run`` parses like ``resilient-task`` does and runs the command on an operator over an
:class:`InMemoryTaskDAO` (``build_operator``, as the command line composes it, with a fake
clock). The same commands against PostgreSQL through ``main`` are in
``tests/integration/test_cli_tasks.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from uuid import uuid4

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.cli import main
from resilient_task.cli_tasks import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_tasks_commands,
    build_operator,
    run_tasks,
)
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.service.operator import TaskOperator
from tests.unit.helpers import START, stored_task
from tests.unit.hostile import fuzz

SECOND = timedelta(seconds=1)
_S = TaskStatus


@dataclass
class Result:
    code: int
    out: str
    err: str
    opened: bool


class Store:
    """An in-memory store and the ``tasks`` commands on it."""

    def __init__(self, *tasks: Task) -> None:
        self.dao = InMemoryTaskDAO(tasks=tasks)
        self.clock = FakeClock()
        self.opened = False

    @asynccontextmanager
    async def operator(self, _args: argparse.Namespace) -> AsyncIterator[TaskOperator]:
        self.opened = True
        yield build_operator(
            dao=self.dao, queries=InMemoryTaskQueries(dao=self.dao), clock=self.clock
        )

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
        parser = argparse.ArgumentParser(prog="resilient-task")
        add_tasks_commands(parser.add_subparsers(dest="command", required=True))
        self.opened = False
        code = run_tasks(parser.parse_args(["tasks", *argv]), operator=self.operator)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err, self.opened)


def error_task(**fields: object) -> Task:
    fields.setdefault("next_event_time", START - 60 * SECOND)
    return stored_task(status=_S.ERROR, **fields)  # type: ignore[arg-type]


def one_error_line(result: Result) -> bool:
    lines = result.err.splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.err


# -- list, show, count ------------------------------------------------------------------


def test_list_prints_one_row_per_task_with_user_strings_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hostile = stored_task(status=_S.WAITING, next_event_time=START, type="pay\x1b[2J\nFAKE")
    error = replace(error_task(), last_error="boom\r\n\x1b]0;owned\x07" + "x" * 500)
    store = Store(hostile, error)

    result = store.run(capsys, "list")

    assert result.code == EXIT_OK
    header, *rows = result.out.splitlines()
    assert header.split()[:3] == ["ID", "TYPE", "STATUS"]
    assert len(rows) == 2
    assert "\x1b" not in result.out
    assert "\r" not in result.out
    assert "pay\\x1b[2J\\nFAKE" in rows[1]
    assert str(error.id) in rows[0]
    assert len(rows[0]) < 300  # the error is cut


def test_list_json_prints_one_object_per_line_without_payload(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks = [error_task(type="charge", data=b"card 4242") for _ in range(3)]
    store = Store(*tasks, stored_task(status=_S.WAITING, next_event_time=START))

    result = store.run(capsys, "list", "--status", "error", "--type", "charge", "--json")

    objects = [json.loads(line) for line in result.out.splitlines()]
    assert {o["id"] for o in objects} == {str(t.id) for t in tasks}
    assert all(o["status"] == "ERROR" and o["version"] == 1 for o in objects)
    assert all("data" not in o for o in objects)
    assert "4242" not in result.out


def test_list_says_on_stderr_when_the_limit_cut_the_listing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = Store(*[error_task() for _ in range(3)])

    result = store.run(capsys, "list", "--limit", "2", "--json")

    assert len(result.out.splitlines()) == 2
    assert "limit 2 reached" in result.err


def test_list_older_than_counts_back_from_now(capsys: pytest.CaptureFixture[str]) -> None:
    old = error_task(next_event_time=START - 11 * 60 * SECOND)
    store = Store(old, error_task(next_event_time=START - 9 * 60 * SECOND))

    result = store.run(capsys, "list", "--older-than", "10m", "--json")

    assert [json.loads(line)["id"] for line in result.out.splitlines()] == [str(old.id)]


def test_show_prints_every_field_and_the_payload_only_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = error_task(data="naïve\n\x1b[31m".encode())
    store = Store(task)

    plain = store.run(capsys, "show", str(task.id))
    utf8 = store.run(capsys, "show", str(task.id), "--data", "utf8")
    b64 = store.run(capsys, "show", str(task.id), "--data", "base64", "--json")

    assert plain.code == utf8.code == b64.code == EXIT_OK
    assert "naïve" not in plain.out
    assert "data:" not in plain.out
    assert "data_bytes:" in plain.out
    assert "naïve\\n\\x1b[31m" in utf8.out
    assert "\x1b" not in utf8.out
    shown = json.loads(b64.out)
    assert shown["data"] == "bmHDr3ZlChtbMzFt"
    assert shown["data_encoding"] == "base64"
    assert shown["status"] == "ERROR"


TRACE = (
    "Traceback (most recent call last):\n"
    '  File "/app/pay.py", line 3, in charge\n'
    "    bank.charge()\n"
    "ValueError: declined \x1b[31mred\r\n"
)


def test_show_prints_the_stored_traceback_line_by_line_escaped_and_list_leaves_it_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = replace(error_task(), last_error="ValueError: declined", last_traceback=TRACE)
    plain_task = replace(error_task(), last_error="no handler")
    store = Store(task, plain_task)

    plain = store.run(capsys, "show", str(task.id))
    as_json = store.run(capsys, "show", str(task.id), "--json")
    without = store.run(capsys, "show", str(plain_task.id))
    listed = store.run(capsys, "list", "--json")

    lines = plain.out.splitlines()
    start = lines.index("last_traceback:")
    assert lines[start + 1 :] == [
        "    Traceback (most recent call last):",
        '      File "/app/pay.py", line 3, in charge',
        "        bank.charge()",
        "    ValueError: declined \\x1b[31mred",
    ]
    assert "\x1b" not in plain.out
    assert "\r" not in plain.out
    assert json.loads(as_json.out)["last_traceback"] == TRACE
    assert "last_traceback:         -" in without.out.splitlines()
    rows = [json.loads(line) for line in listed.out.splitlines()]
    assert len(rows) == 2
    assert all("last_traceback" not in row for row in rows)


def test_show_of_an_unknown_id_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = Store().run(capsys, "show", str(uuid4()))

    assert result.code == EXIT_FAILED
    assert one_error_line(result)
    assert "does not exist" in result.err


def test_count_prints_statuses_types_and_overdue_ages(capsys: pytest.CaptureFixture[str]) -> None:
    overdue = stored_task(status=_S.SUBMITTED, next_event_time=START - 125 * SECOND)
    store = Store(overdue, error_task(type="charge"))

    text = store.run(capsys, "count", "--by-type")
    as_json = json.loads(store.run(capsys, "count", "--by-type", "--json").out)

    assert "oldest overdue SUBMITTED: 2m5s" in text.out
    assert "oldest overdue PROCESSING: none" in text.out
    assert as_json["by_status"]["ERROR"] == 1
    assert as_json["by_status"]["DONE"] == 0
    assert as_json["oldest_overdue_seconds"] == {"SUBMITTED": 125.0, "PROCESSING": None}
    assert {"status": "ERROR", "type": "charge", "count": 1} in as_json["by_type"]


# -- actions ----------------------------------------------------------------------------


def test_resume_of_ids_prints_each_outcome_and_exits_1_if_any_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error, done = error_task(), stored_task(status=_S.DONE, next_event_time=START)
    missing = uuid4()
    store = Store(error, done)

    result = store.run(capsys, "resume", str(error.id), str(done.id), str(missing))

    lines = result.out.splitlines()
    assert result.code == EXIT_FAILED
    assert lines[0].startswith(f"{error.id}  OK")
    assert lines[1].startswith(f"{done.id}  NOT_ALLOWED")
    assert lines[2].startswith(f"{missing}  NOT_FOUND")
    assert "resume: 1 OK, 1 NOT_ALLOWED, 1 NOT_FOUND" in result.err
    assert store.dao.tasks[error.id].status is _S.SUBMITTED


def test_resume_stores_the_task_overdue_so_the_next_worker_poll_starts_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = error_task()
    store = Store(error)

    assert store.run(capsys, "resume", str(error.id)).code == EXIT_OK

    resumed = store.dao.tasks[error.id]
    assert resumed.status is _S.SUBMITTED
    assert resumed.next_event_time <= store.clock.now() + timedelta(microseconds=1)


def test_a_version_that_is_not_the_tasks_is_changed_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = error_task(version=4)
    store = Store(error)

    result = store.run(capsys, "fail", str(error.id), "--version", "3", "--json")

    assert result.code == EXIT_FAILED
    assert json.loads(result.out)["outcome"] == "CHANGED"
    assert store.dao.tasks[error.id] == error


def test_all_ok_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [error_task() for _ in range(3)]
    store = Store(*tasks)

    result = store.run(capsys, "fail", *[str(t.id) for t in tasks], "--reason", "by hand")

    assert result.code == EXIT_OK
    assert all(store.dao.tasks[t.id].last_error == "by hand" for t in tasks)


def test_a_bulk_dry_run_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [error_task(type="charge") for _ in range(5)]
    store = Store(*tasks)

    result = store.run(
        capsys, "resume", "--status", "ERROR", "--type", "charge", "--limit", "3", "--dry-run"
    )

    assert result.code == EXIT_OK
    assert len(result.out.splitlines()) == 3
    assert "would resume" in result.out
    assert "dry run: nothing written" in result.err
    assert all(t.status is _S.ERROR for t in store.dao.tasks.values())


def test_reschedule_accepts_a_relative_and_an_absolute_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = stored_task(status=_S.WAITING, next_event_time=START)
    second = stored_task(status=_S.WAITING, next_event_time=START)
    store = Store(first, second)

    relative = store.run(capsys, "reschedule", str(first.id), "--at", "+10m")
    absolute = store.run(capsys, "reschedule", str(second.id), "--at", "2031-12-01T12:00+02:00")

    assert relative.code == absolute.code == EXIT_OK
    assert store.dao.tasks[first.id].next_event_time == START + timedelta(minutes=10)
    assert store.dao.tasks[second.id].next_event_time.isoformat() == "2031-12-01T10:00:00+00:00"


# -- wrong input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--status", "BOGUS"],
        ["list", "--status", "erro\x1br"],
        ["list", "--older-than", "10"],
        ["list", "--older-than", "ten minutes"],
        ["list", "--limit", "0"],
        ["list", "--limit", "100001"],
        ["list", "--limit", "-5"],
        ["list", "--type", "a\x00b"],
        ["list", "--type", ""],
        ["show", "not-a-uuid"],
        ["show", "1" * 5000],
        ["resume", "not-a-uuid"],
        ["resume", str(uuid4()), "--version", "x"],
        ["resume", str(uuid4()), "--version", str(2**63)],
        ["resume", str(uuid4()), "--status", "ERROR"],
        ["resume"],
        ["resume", "--type", "charge"],
        ["resume", "--status", "ERROR", "--version", "1"],
        ["reschedule", str(uuid4()), "--at", "tomorrow"],
        ["reschedule", str(uuid4()), "--at", "2026-12-01T10:00"],
        ["reschedule", str(uuid4()), "--at", "+99999w"],
        ["fail", "--status", "ERROR", "--older-than", "1y"],
    ],
)
def test_wrong_input_is_one_line_and_exit_2_before_the_store_is_opened(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    store = Store(error_task())
    before = dict(store.dao.tasks)

    result = store.run(capsys, *argv)

    assert result.code == EXIT_USAGE
    assert one_error_line(result), result.err
    assert "\x1b" not in result.err
    assert result.out == ""
    assert not result.opened
    assert dict(store.dao.tasks) == before


def test_without_a_database_url_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RESILIENT_TASK_DATABASE_URL", raising=False)

    assert main(["tasks", "list"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: --database-url (or $RESILIENT_TASK_DATABASE_URL)")


@pytest.mark.parametrize(
    "argv",
    [
        ["--database-url", "mysql://root@localhost/db"],
        ["--database-url", "::not a url::"],
        ["--database-url", "postgresql://u@h/db", "--schema", "Bad-Schema"],
        ["--database-url", "postgresql://u@h/db", "--table-prefix", "x;drop"],
    ],
)
def test_an_invalid_url_schema_or_prefix_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(["tasks", "count", *argv])

    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("resilient-task 0.")


_option_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["ERROR", "error", "10m", "+10m", "0", "1", "2026-12-01T10:00Z", "-1"]),
    st.uuids().map(str),
)
_commands = st.tuples(
    st.sampled_from(["list", "show", "count", "resume", "fail", "cancel", "reschedule"]),
    st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(
                    ["--status", "--type", "--older-than", "--limit", "--version", "--at"]
                ),
                _option_values,
            ).map(list),
            st.sampled_from([["--json"], ["--dry-run"], ["--by-type"], ["--data", "utf8"]]),
            _option_values.map(lambda v: [v]),
        ),
        max_size=5,
    ),
)


@fuzz
@given(command=_commands)
def test_any_command_line_ends_with_an_exit_code_never_a_traceback(
    command: tuple[str, list[list[str]]],
) -> None:
    name, options = command
    argv = [name, *(token for option in options for token in option)]
    store = Store(error_task(), stored_task(status=_S.WAITING, next_event_time=START))
    parser = argparse.ArgumentParser(prog="resilient-task", exit_on_error=False)
    add_tasks_commands(parser.add_subparsers(dest="command", required=True))
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()) as err,
    ):
        try:
            args = parser.parse_args(["tasks", *argv])
        except (argparse.ArgumentError, SystemExit):
            event("argparse usage error")
            return  # argparse's own usage error (exit 2)
        code = run_tasks(args, operator=store.operator)
    event(f"exit {code}")

    assert code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE)
    if code == EXIT_USAGE:
        assert len(err.getvalue().splitlines()) == 1
        assert not store.opened

"""``resilient-task tasks ...`` through ``main`` against real PostgreSQL.

``main`` runs its own event loop, so each call runs in a worker thread while the test's loop
seeds and checks the store through a PostgresTaskDAO on the same schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread
import pytest

from resilient_task import (
    PostgresOptions,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    TaskProperties,
    TaskResumerProperties,
    TaskStatus,
)
from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO
from resilient_task.cli import main
from resilient_task.cli_tasks import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_OK, EXIT_STORE
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from resilient_task.testing.task_dao_contract import make_task

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECOND = timedelta(seconds=1)


@dataclass
class Cli:
    url: str
    settings: PostgresSettings
    dao: PostgresTaskDAO
    capsys: pytest.CaptureFixture[str]

    async def run(self, *argv: str) -> tuple[int, str, str]:
        """``resilient-task tasks <argv> --database-url ... --schema ...``: code, out, err."""
        args = [
            "tasks",
            *argv,
            "--database-url",
            self.url,
            "--schema",
            self.settings.schema,
            "--table-prefix",
            self.settings.prefix,
        ]
        self.capsys.readouterr()
        code = await anyio.to_thread.run_sync(main, args)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    async def errors(
        self, count: int, *, type: str, data: bytes = b"{}", traceback: str | None = None
    ) -> list[Task]:
        """``count`` tasks that a worker left in ERROR."""
        now = datetime.now(UTC)
        tasks = [
            make_task(type=type, status=TaskStatus.SUBMITTED, next_event_time=now, data=data)
            for _ in range(count)
        ]
        await self.dao.insert_tasks(tasks)
        grabbed = await self.dao.grab(
            [GrabRequest(t.id, 0, "dead-node", now + 60 * SECOND) for t in tasks], now=now
        )
        failed = [
            t.mark_error(now=now, reason=f"boom {i}", traceback=traceback)
            for i, t in enumerate(grabbed)
        ]
        applied = await self.dao.apply(
            [TaskChange(f, g.version) for f, g in zip(failed, grabbed, strict=True)]
        )
        assert all(applied)
        return failed

    async def status(self, task: Task) -> TaskStatus:
        stored = await self.dao.get_task(task.id)
        assert stored is not None
        return stored.status


@pytest.fixture
async def cli(
    database_url: str, settings: PostgresSettings, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Cli]:
    async with PostgresTaskDAO.from_url(database_url, settings=settings) as dao:
        yield Cli(database_url, settings, dao, capsys)


async def test_a_bulk_resume_of_1000_error_tasks_resumes_exactly_them(cli: Cli) -> None:
    charges = await cli.errors(1000, type="charge")
    refunds = await cli.errors(5, type="refund")

    dry_code, dry_out, _ = await cli.run(
        "resume", "--status", "ERROR", "--type", "charge", "--limit", "1000", "--dry-run"
    )
    assert dry_code == EXIT_OK
    assert len(dry_out.splitlines()) == 1000
    assert {await cli.status(t) for t in charges[:20]} == {TaskStatus.ERROR}

    code, out, err = await cli.run(
        "resume", "--status", "ERROR", "--type", "charge", "--limit", "1000", "--json"
    )

    assert code == EXIT_OK, err
    results = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["id"] for r in results) == sorted(str(t.id) for t in charges)
    assert all(r["outcome"] == "OK" and r["status"] == "SUBMITTED" for r in results)
    assert "resume: 1000 OK" in err
    counts = json.loads((await cli.run("count", "--by-type", "--json"))[1])
    by_type = {(c["status"], c["type"]): c["count"] for c in counts["by_type"]}
    assert by_type == {("SUBMITTED", "charge"): 1000, ("ERROR", "refund"): 5}
    assert {await cli.status(t) for t in refunds} == {TaskStatus.ERROR}
    again = await cli.run("resume", "--status", "ERROR", "--type", "charge", "--limit", "1000")
    assert again[0] == EXIT_OK
    assert "resume: no tasks" in again[2]


async def test_a_version_conflict_is_changed_exit_1_and_writes_nothing(cli: Cli) -> None:
    [task] = await cli.errors(1, type="charge")

    code, out, _ = await cli.run("fail", str(task.id), "--version", str(task.version - 1))
    stale_status = await cli.status(task)
    ok_code, ok_out, _ = await cli.run("fail", str(task.id), "--version", str(task.version))

    assert code == EXIT_FAILED
    assert out.split()[:2] == [str(task.id), "CHANGED"]
    assert stale_status is TaskStatus.ERROR
    assert ok_code == EXIT_OK
    assert ok_out.split()[:2] == [str(task.id), "OK"]
    assert await cli.status(task) is TaskStatus.FAILED


async def test_list_show_and_count_read_the_store(cli: Cli) -> None:
    payload = b"card 4242 " * 500  # stored compressed
    [task] = await cli.errors(1, type="pay\x1b[31m", data=payload)
    waiting = make_task(type="later", next_event_time=datetime.now(UTC) + timedelta(hours=1))
    await cli.dao.insert_tasks([waiting])

    listed = await cli.run("list", "--status", "ERROR", "--json")
    table = await cli.run("list")
    shown = await cli.run("show", str(task.id), "--data", "utf8", "--json")
    hidden = await cli.run("show", str(task.id))
    counted = await cli.run("count")

    [row] = [json.loads(line) for line in listed[1].splitlines()]
    assert row["id"] == str(task.id)
    assert row["type"] == "pay\x1b[31m"
    assert row["last_error"] == "boom 0"
    assert "\x1b" not in table[1]
    assert len(table[1].splitlines()) == 3
    assert json.loads(shown[1])["data"] == payload.decode()
    assert "4242" not in hidden[1]
    assert "ERROR                  1" in counted[1]
    assert "WAITING                1" in counted[1]


async def test_show_prints_the_stored_traceback_of_the_last_failure(cli: Cli) -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: \x1b[2J\n'
    [task] = await cli.errors(1, type="charge", traceback=trace)

    code, out, _ = await cli.run("show", str(task.id))
    shown = json.loads((await cli.run("show", str(task.id), "--json"))[1])
    listed = json.loads((await cli.run("list", "--json"))[1])

    assert code == EXIT_OK
    assert out.splitlines()[-4:] == [
        "last_traceback:",
        "    Traceback (most recent call last):",
        '      File "x.py", line 1',
        "    KeyError: \\x1b[2J",
    ]
    assert shown["last_traceback"] == trace
    assert shown["last_error"] == "boom 0"
    assert "last_traceback" not in listed


async def test_cancel_and_reschedule_change_waiting_tasks(cli: Cli) -> None:
    first, second = make_task(type="later"), make_task(type="later")
    await cli.dao.insert_tasks([first, second])

    cancelled = await cli.run("cancel", str(first.id))
    moved = await cli.run("reschedule", str(second.id), "--at", "2031-06-01T08:00Z")

    assert cancelled[0] == moved[0] == EXIT_OK
    assert await cli.status(first) is TaskStatus.CANCELLED
    stored = await cli.dao.get_task(second.id)
    assert stored is not None
    assert stored.next_event_time == datetime(2031, 6, 1, 8, tzinfo=UTC)


async def test_a_task_resumed_from_the_command_line_runs_on_a_worker_at_its_next_poll(
    cli: Cli,
) -> None:
    ran: list[uuid.UUID] = []

    async def processor(task: Task) -> ProcessResult:
        ran.append(task.id)
        return ProcessResult.DONE

    properties = TaskProperties(
        resumer=TaskResumerProperties(polling_interval=timedelta(milliseconds=200)),
        expected_queue_time=timedelta(minutes=10),  # only the resumed task's own deadline counts
        node_id="cli-test-worker",
        shutdown_grace=timedelta(seconds=5),
    )
    worker = ResilientTask(
        handlers=[TaskHandler(types={"charge"}, processor=processor)],
        properties=properties,
        database_url=cli.url,
        postgres=PostgresOptions(schema=cli.settings.schema, prefix=cli.settings.prefix),
    )
    [task] = await cli.errors(1, type="charge")
    async with worker:
        code, _, err = await cli.run("resume", str(task.id))
        assert code == EXIT_OK, err
        with anyio.fail_after(10):
            while await cli.status(task) is not TaskStatus.DONE:  # noqa: ASYNC110 - polls the store
                await anyio.sleep(0.05)

    assert ran == [task.id]


async def test_an_unreachable_database_is_one_line_and_exit_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["tasks", "list", "--database-url", "postgresql://postgres@127.0.0.1:1/none"]

    code = await anyio.to_thread.run_sync(main, argv)

    err = capsys.readouterr().err
    assert code == EXIT_STORE
    assert len(err.splitlines()) == 1
    assert err.startswith("error: PostgreSQL unavailable")


async def test_missing_tables_are_one_line_naming_db_upgrade_and_exit_3(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = f"rt_missing_{uuid.uuid4().hex[:8]}"
    argv = ["tasks", "count", "--database-url", database_url, "--schema", schema]

    code = await anyio.to_thread.run_sync(main, argv)

    err = capsys.readouterr().err
    assert code == EXIT_STORE
    assert len(err.splitlines()) == 1
    assert "resilient-task db upgrade" in err


async def test_a_listing_piped_into_head_stops_quietly(cli: Cli) -> None:
    await cli.errors(2000, type="charge")  # more output than a pipe buffers
    argv = [
        *("tasks", "list", "--limit", "2000", "--database-url", cli.url),
        *("--schema", cli.settings.schema),
    ]
    script = "import sys; from resilient_task.cli import main; sys.exit(main(sys.argv[1:]))"

    def run_into_head() -> tuple[int, bytes, bytes]:
        with subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            assert process.stdout is not None
            first = process.stdout.readline()
            process.stdout.close()  # what `| head -1` does after one line
            _, err = process.communicate(timeout=60)
            return process.returncode, first, err

    code, first, err = await anyio.to_thread.run_sync(run_into_head)

    assert first.split()[:2] == [b"ID", b"TYPE"]
    assert err == b""
    assert code == EXIT_BROKEN_PIPE

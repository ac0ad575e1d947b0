"""The dashboard end to end: ``resilient-task dashboard`` on PostgreSQL, in real Chromium.

The server is the real command in a child process, on a schema of the test's own; the test
seeds tasks the way workers leave them, then uses the pages as an operator would: the
overview, the ERROR tasks filtered by type, a task resumed and its new status.

The overview's screenshot is saved under the test's tmp_path; with
``RESILIENT_TASK_UPDATE_SCREENSHOT=1`` it also replaces docs/dashboard.png (the README's).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, upgrade
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from resilient_task.testing.task_dao_contract import make_task
from tests.integration.postgres_env import database_url, drop_schema

__all__ = ["database_url"]

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "dashboard.png"
MINUTE = timedelta(minutes=1)


@dataclass
class Seeded:
    charges: list[Task]
    email: Task


async def _seed(url: str, settings: PostgresSettings) -> Seeded:
    """What a few busy workers leave behind: DONE tasks over the hour, some ERROR ones."""
    dao = PostgresTaskDAO.from_url(url, settings=settings)
    now = datetime.now(UTC)

    async def bring(task_type: str, status: TaskStatus, at: datetime, node: str, why: str) -> Task:
        task = make_task(
            type=task_type, status=TaskStatus.SUBMITTED, next_event_time=at, created_at=at
        )
        await dao.insert_tasks([task])
        [grabbed] = await dao.grab([GrabRequest(task.id, 0, node, at + MINUTE)], now=at)
        done = (
            grabbed.complete(now=at)
            if status is TaskStatus.DONE
            else grabbed.mark_error(now=at, reason=why)
        )
        assert await dao.apply([TaskChange(done, grabbed.version)]) == [True]
        return done

    try:
        for i in range(240):
            at = now - timedelta(seconds=(i * 37) % 3500 + 5)
            await bring(
                ("charge", "email", "invoice")[i % 3], TaskStatus.DONE, at, f"node-{i % 3}", ""
            )
        charges = [
            await bring(
                "charge",
                TaskStatus.ERROR,
                now - timedelta(minutes=20 - i),
                "node-1",
                f"CardDeclined: issuer said no (attempt {i})\nTraceback (most recent call last):",
            )
            for i in range(2)
        ]
        email = await bring("email", TaskStatus.ERROR, now - 5 * MINUTE, "node-2", "SMTP 451")
        return Seeded(charges, email)
    finally:
        await dao.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    seeded: Seeded


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    settings = PostgresSettings(schema=f"rt_browser_{uuid.uuid4().hex[:10]}")
    anyio.run(lambda: upgrade(database_url, schema=settings.schema))
    try:
        seeded = anyio.run(_seed, database_url, settings)
        port = _free_port()
        log = (tmp_path / "server.log").open("w")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resilient_task.cli",
                "dashboard",
                "--database-url",
                database_url,
                "--schema",
                settings.schema,
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RESILIENT_TASK_DASHBOARD_TOKEN": ""},
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        output = (tmp_path / "server.log").read_text()
                        pytest.fail(f"the dashboard did not start:\n{output}")
                    time.sleep(0.1)
            yield Server(f"http://127.0.0.1:{port}", seeded)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        server_log = (tmp_path / "server.log").read_text()
        for secret in ("CardDeclined", "SMTP 451"):
            assert secret not in server_log, f"{secret!r} leaked into the server's log"
        access = [line for line in server_log.splitlines() if "dashboard.access" in line]
        assert any("GET /errors 200" in line for line in access)
        assert any("GET /static/style.css 200" in line for line in access)
        assert not [line for line in access if "?" in line], "a query string was logged"
    finally:
        anyio.run(drop_schema, database_url, settings.schema)


def test_an_operator_finds_and_resumes_an_error_task(
    server: Server, browser_context: Any, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = browser_context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(server.url + "/")
    assert page.title().startswith("Overview")
    assert page.locator('[data-status="ERROR"] .value').inner_text() == "3"
    assert page.locator('[data-status="DONE"] .value').inner_text() == "240"
    assert page.locator("svg#chart rect.bar").count() == 60
    assert page.locator("#nodes").inner_text().count("node-") >= 3
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RESILIENT_TASK_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)

    page.click("text=ERROR tasks")
    assert page.locator("#errors tr[data-task]").count() == 3
    page.select_option("#filter-type", "charge")
    page.click("#filter button[type=submit]")
    rows = page.locator("#errors tr[data-task]")
    assert rows.count() == 2
    assert "email" not in page.locator("#errors").inner_text()
    assert "CardDeclined" in page.locator("#errors").inner_text()

    target = server.seeded.charges[0]
    page.click(f'a[href="/tasks/{target.id}"]')
    assert page.locator("#status").inner_text() == "ERROR"
    assert page.locator("#payload").count() == 0  # the payload only after an explicit click
    page.click("#action-resume button[type=submit]")
    page.wait_for_url(f"{server.url}/tasks/{target.id}?done=resume")
    assert page.locator("#status").inner_text() == "SUBMITTED"
    assert "Resumed" in page.locator("#message").inner_text()

    page.click("text=ERROR tasks")
    assert page.locator("#errors tr[data-task]").count() == 2
    assert str(target.id) not in page.locator("#errors").inner_text()
    assert problems == [], f"the browser reported errors: {problems}"

"""Route tests of the dashboard with Starlette's TestClient, on the in-memory store.

:class:`DashboardRoutes` holds every test; it runs here on the in-memory store and in
``tests/integration/test_dashboard_postgres.py`` on PostgreSQL. A :class:`Board` seeds tasks
through the TaskDAO port (insert, grab, transition, apply: what a worker does) and reads
them back, on the TestClient's own event loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.cli_tasks import build_operator
from resilient_task.dashboard import DashboardStats, InMemoryDashboardStats, create_app
from resilient_task.dashboard.security import SESSION_COOKIE, Guard
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.ports.task_dao import GrabRequest, TaskChange
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.testing.task_dao_contract import make_task

MINUTE = timedelta(minutes=1)
XSS_TYPE = "<script>alert('type')</script>"
XSS_ERROR = '<img src=x onerror="alert(1)"> & </pre><script>alert(2)</script>'
TOKEN = "s3cret-token-for-tests"
SECRET = b"k" * 32


@dataclass
class Board:
    """A dashboard over one store, with a client and helpers to seed and read tasks."""

    client: TestClient
    dao: AnyTaskDAO
    call: Callable[..., Any]

    def seed(
        self,
        *,
        type: str = "charge",
        status: TaskStatus = TaskStatus.ERROR,
        error: str = "boom",
        traceback: str | None = None,
        node: str = "node-a",
        data: bytes = b'{"card": "4111"}',
        at: datetime | None = None,
    ) -> Task:
        """One task in ``status``, brought there as a worker would (at ``at``, default now)."""
        now = at or datetime.now(UTC)
        first = TaskStatus.WAITING if status is TaskStatus.WAITING else TaskStatus.SUBMITTED
        task = make_task(type=type, status=first, next_event_time=now, data=data, created_at=now)
        self.call(self.dao.insert_tasks, [task])
        if status in (TaskStatus.WAITING, TaskStatus.SUBMITTED):
            return task
        deadline = now + MINUTE if status is not TaskStatus.PROCESSING else now - MINUTE
        grabbed_tasks: list[Task] = self.call(
            lambda: self.dao.grab([GrabRequest(task.id, 0, node, deadline)], now=now)
        )
        [grabbed] = grabbed_tasks
        if status is TaskStatus.PROCESSING:
            return grabbed
        if status is TaskStatus.ERROR:
            done = grabbed.mark_error(now=now, reason=error, traceback=traceback)
        elif status is TaskStatus.DONE:
            done = grabbed.complete(now=now)
        else:
            raise AssertionError(status)
        [applied] = self.call(lambda: self.dao.apply([TaskChange(done, grabbed.version)]))
        assert applied
        return done

    def get(self, task_id: UUID) -> Task:
        found: Task | None = self.call(self.dao.get_task, task_id)
        assert found is not None
        return found


BoardFactory = Callable[..., AbstractContextManager[Board]]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


class DashboardRoutes:
    """Every route test; subclasses provide the ``make_board`` fixture."""

    @pytest.fixture
    def board(self, make_board: BoardFactory) -> Iterator[Board]:
        with make_board() as board:
            yield board

    def form(self, board: Board, task: Task) -> str:
        page = board.client.get(f"/tasks/{task.id}")
        assert page.status_code == 200
        return csrf_of(page.text)

    # -- pages --------------------------------------------------------------------------

    def test_overview_shows_counts_chart_overdue_and_nodes(self, board: Board) -> None:
        now = datetime.now(UTC)
        for minutes_ago in (1, 1, 5):
            board.seed(
                status=TaskStatus.DONE, type="email", node="node-b", at=now - minutes_ago * MINUTE
            )
        board.seed(status=TaskStatus.ERROR, type="charge")
        stuck = board.seed(
            status=TaskStatus.PROCESSING, type="charge", node="node-c", at=now - 10 * MINUTE
        )
        page = board.client.get("/")
        assert page.status_code == 200
        text = page.text
        assert re.search(
            r'data-status="DONE">\s*<div class="label">DONE</div>\s*'
            r'<div class="value">3</div>',
            text,
        )
        assert re.search(
            r'data-status="ERROR">\s*<div class="label">ERROR</div>\s*'
            r'<div class="value">1</div>',
            text,
        )
        assert '<svg class="chart"' in text
        assert text.count('<rect class="bar"') == 60
        assert "last 60 minutes: 3</h2>" in text
        assert f'href="/tasks/{stuck.id}"' in text  # the oldest overdue PROCESSING task
        assert "node-b" in text
        assert "node-c" in text
        assert re.search(r"<td>email</td><td>DONE</td><td class=\"num\">3</td>", text)

    def test_errors_page_filters_by_type_and_age(self, board: Board) -> None:
        now = datetime.now(UTC)
        old = board.seed(type="charge", error="card declined", at=now - 3 * 60 * MINUTE)
        new = board.seed(type="charge", error="timeout talking to bank")
        other = board.seed(type="email", error="smtp down")
        page = board.client.get("/errors")
        assert page.status_code == 200
        for task in (old, new, other):
            assert str(task.id) in page.text
        assert "card declined" in page.text
        assert "smtp down" in page.text
        by_type = board.client.get("/errors", params={"type": "charge"})
        assert str(old.id) in by_type.text
        assert str(new.id) in by_type.text
        assert str(other.id) not in by_type.text
        aged = board.client.get("/errors", params={"type": "charge", "age": "1h"})
        assert str(old.id) in aged.text
        assert str(new.id) not in aged.text
        assert str(other.id) not in aged.text

    def test_errors_page_refuses_a_bad_filter(self, board: Board) -> None:
        assert board.client.get("/errors", params={"age": "soon"}).status_code == 400
        assert board.client.get("/errors", params={"type": "a\x00b"}).status_code == 400

    def test_task_page_shows_every_field_but_the_payload(self, board: Board) -> None:
        task = board.seed(error="Traceback (most recent call last):\n  boom", data=b"SECRET-PII")
        page = board.client.get(f"/tasks/{task.id}")
        assert page.status_code == 200
        for shown in (str(task.id), "ERROR", "charge", "node-a", "Traceback (most recent"):
            assert shown in page.text
        assert f'<td id="version">{task.version}</td>' in page.text
        assert "SECRET-PII" not in page.text
        assert "Show the payload" in page.text

    def test_task_page_shows_the_stored_traceback_escaped(self, board: Board) -> None:
        trace = 'Traceback (most recent call last):\n  File "<script>x</script>"\nKeyError: 1\n'
        task = board.seed(error="KeyError: 1", traceback=trace)
        plain = board.seed(error="no handler")
        page = board.client.get(f"/tasks/{task.id}").text
        assert '<pre id="last-traceback">Traceback (most recent call last):\n' in page
        assert "File &#34;&lt;script&gt;x&lt;/script&gt;&#34;\nKeyError: 1\n</pre>" in page
        assert "<script>x" not in page
        assert 'id="last-traceback"' not in board.client.get(f"/tasks/{plain.id}").text

    def test_payload_is_shown_after_an_explicit_post(self, board: Board) -> None:
        task = board.seed(data=b"SECRET-PII <b>bold</b>")
        csrf = self.form(board, task)
        page = board.client.post(f"/tasks/{task.id}/payload", data={"csrf": csrf})
        assert page.status_code == 200
        assert "SECRET-PII &lt;b&gt;bold&lt;/b&gt;" in page.text

    def test_binary_payload_is_shown_as_base64(self, board: Board) -> None:
        task = board.seed(data=b"\xff\xfe\x00")
        csrf = self.form(board, task)
        page = board.client.post(f"/tasks/{task.id}/payload", data={"csrf": csrf})
        assert "//4A" in page.text
        assert "Shown as base64" in page.text

    def test_unknown_and_malformed_task_ids_are_404(self, board: Board) -> None:
        assert board.client.get(f"/tasks/{UUID(int=7)}").status_code == 404
        assert board.client.get("/tasks/not-a-uuid").status_code == 404

    # -- actions ------------------------------------------------------------------------

    def act(self, board: Board, task: Task, action: str, **fields: str) -> Any:
        csrf = self.form(board, task)
        data = {"csrf": csrf, "action": action, "version": str(task.version), **fields}
        return board.client.post(f"/tasks/{task.id}/action", data=data, follow_redirects=False)

    def test_resume_moves_an_error_task_to_submitted(self, board: Board) -> None:
        task = board.seed()
        answer = self.act(board, task, "resume")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/tasks/{task.id}?done=resume"
        assert board.get(task.id).status is TaskStatus.SUBMITTED
        page = board.client.get(answer.headers["location"])
        assert 'id="status">SUBMITTED<' in page.text
        assert "Resumed" in page.text

    def test_fail_records_the_reason(self, board: Board) -> None:
        task = board.seed()
        assert self.act(board, task, "fail", reason="written off").status_code == 303
        failed = board.get(task.id)
        assert failed.status is TaskStatus.FAILED
        assert failed.last_error == "written off"

    def test_cancel_a_waiting_task(self, board: Board) -> None:
        task = board.seed(status=TaskStatus.WAITING)
        assert self.act(board, task, "cancel").status_code == 303
        assert board.get(task.id).status is TaskStatus.CANCELLED

    def test_reschedule_a_waiting_task(self, board: Board) -> None:
        task = board.seed(status=TaskStatus.WAITING)
        before = datetime.now(UTC)
        assert self.act(board, task, "reschedule", run_at="+2h").status_code == 303
        moved = board.get(task.id)
        assert moved.status is TaskStatus.WAITING
        assert before + timedelta(hours=2) <= moved.next_event_time
        assert moved.next_event_time <= datetime.now(UTC) + timedelta(hours=2)

    def test_reschedule_with_a_bad_time_writes_nothing(self, board: Board) -> None:
        task = board.seed(status=TaskStatus.WAITING)
        answer = self.act(board, task, "reschedule", run_at="2026-12-01T10:00")
        assert answer.status_code == 400
        assert board.get(task.id).version == task.version

    def test_a_task_changed_since_the_page_was_loaded_is_left_alone(self, board: Board) -> None:
        task = board.seed()
        csrf = self.form(board, task)  # the operator loads the page at this version...
        assert self.act(board, task, "resume").status_code == 303  # ...someone else acts
        changed = board.get(task.id)
        data = {"csrf": csrf, "action": "fail", "version": str(task.version)}
        answer = board.client.post(f"/tasks/{task.id}/action", data=data)
        assert answer.status_code == 409
        assert "changed since you loaded it" in answer.text
        assert board.get(task.id) == changed

    def test_an_action_the_status_forbids_writes_nothing(self, board: Board) -> None:
        task = board.seed()
        answer = self.act(board, task, "cancel")
        assert answer.status_code == 409
        assert "cannot cancel" in answer.text
        assert board.get(task.id) == task

    def test_the_task_page_offers_only_allowed_actions(self, board: Board) -> None:
        page = board.client.get(f"/tasks/{board.seed().id}").text
        assert 'id="action-resume"' in page
        assert 'id="action-fail"' in page
        assert 'id="action-cancel"' not in page
        assert 'id="action-reschedule"' not in page

    def test_bulk_resume_asks_for_confirmation_first(self, board: Board) -> None:
        charges = [board.seed(type="charge") for _ in range(3)]
        email = board.seed(type="email")
        page = board.client.get("/errors", params={"type": "charge"})
        csrf = csrf_of(page.text)
        asked = board.client.post("/bulk/resume", data={"csrf": csrf, "type": "charge"})
        assert asked.status_code == 200
        assert "3 tasks of this type are in ERROR" in asked.text
        assert all(board.get(t.id).status is TaskStatus.ERROR for t in charges)
        done = board.client.post(
            "/bulk/resume", data={"csrf": csrf, "type": "charge", "confirm": "yes"}
        )
        assert done.status_code == 200
        assert "3 of 3 resumed" in done.text
        assert all(board.get(t.id).status is TaskStatus.SUBMITTED for t in charges)
        assert board.get(email.id).status is TaskStatus.ERROR

    # -- safety -------------------------------------------------------------------------

    def test_a_post_without_a_valid_csrf_token_is_refused(self, board: Board) -> None:
        task = board.seed()
        csrf = self.form(board, task)
        url = f"/tasks/{task.id}/action"
        base = {"action": "resume", "version": str(task.version)}
        assert board.client.post(url, data=base).status_code == 403
        forged = csrf[:-1] + ("1" if csrf.endswith("0") else "0")  # one character off
        assert board.client.post(url, data={**base, "csrf": forged}).status_code == 403
        foreign = board.client.post(
            url, data={**base, "csrf": csrf}, headers={"origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        stranger = TestClient(board.client.app)  # another browser: its own session...
        stranger.portal = board.client.portal  # ...on the loop that owns the store's pool
        assert stranger.get("/").status_code == 200
        assert stranger.post(url, data={**base, "csrf": csrf}).status_code == 403
        for path in (f"/tasks/{task.id}/payload", "/bulk/resume"):
            assert board.client.post(path, data={"type": "charge"}).status_code == 403
        assert board.get(task.id) == task

    def test_user_strings_are_escaped_on_every_page(self, board: Board) -> None:
        task = board.seed(type=XSS_TYPE, error=XSS_ERROR)
        csrf = self.form(board, task)
        pages = [
            board.client.get("/"),
            board.client.get("/errors"),
            board.client.get("/errors", params={"type": XSS_TYPE}),
            board.client.get(f"/tasks/{task.id}"),
            board.client.post("/bulk/resume", data={"csrf": csrf, "type": XSS_TYPE}),
        ]
        for page in pages:
            assert page.status_code == 200
            assert "<script>alert" not in page.text
            assert "<img src=x" not in page.text
            assert str(escape(XSS_TYPE)) in page.text
        for page in pages[1:4]:
            assert str(escape(XSS_ERROR))[:40] in page.text

    def test_a_same_origin_post_is_accepted_and_a_null_origin_refused(self, board: Board) -> None:
        """Browsers send ``Origin: null`` on a POST from a page whose Referrer-Policy is
        no-referrer: the pages must send their origin (same-origin), and null is refused."""
        headers = board.client.get("/").headers
        assert headers["referrer-policy"] == "same-origin"
        task = board.seed()
        csrf = self.form(board, task)
        data = {"csrf": csrf, "action": "resume", "version": str(task.version)}
        url = f"/tasks/{task.id}/action"
        null = board.client.post(url, data=data, headers={"origin": "null"})
        assert null.status_code == 403
        same = board.client.post(
            url, data=data, headers={"origin": "http://testserver"}, follow_redirects=False
        )
        assert same.status_code == 303

    def test_responses_forbid_scripts_and_framing(self, board: Board) -> None:
        headers = board.client.get("/").headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"

    def test_the_access_log_has_no_query_strings_or_form_fields(
        self, board: Board, caplog: pytest.LogCaptureFixture
    ) -> None:
        task = board.seed(type="secret-type", error="secret-error", data=b"secret-payload")
        with caplog.at_level(logging.INFO, logger="resilient_task.dashboard"):
            board.client.get("/errors", params={"type": "secret-type", "age": "1h"})
            csrf = self.form(board, task)
            board.client.post(f"/tasks/{task.id}/payload", data={"csrf": csrf})
        access = [r.getMessage() for r in caplog.records if r.name.endswith(".access")]
        assert "GET /errors 200" in " ".join(access)
        assert f"POST /tasks/{task.id}/payload 200" in " ".join(access)
        logged = " ".join(r.getMessage() for r in caplog.records)
        for secret in ("secret-type", "secret-error", "secret-payload", "age="):
            assert secret not in logged


class ReadOnlyRoutes:
    """The dashboard with ``read_only=True`` and ``show_payload=False``."""

    @pytest.fixture
    def board(self, make_board: BoardFactory) -> Iterator[Board]:
        with make_board(read_only=True, show_payload=False) as board:
            yield board

    def test_no_action_is_offered_or_accepted(self, board: Board) -> None:
        task = board.seed()
        page = board.client.get(f"/tasks/{task.id}")
        assert page.status_code == 200
        assert "action-resume" not in page.text
        assert "Show the payload" not in page.text
        assert "disabled on this dashboard" in page.text
        errors = board.client.get("/errors", params={"type": "charge"})
        assert 'id="bulk"' not in errors.text
        csrf = session_csrf(board)
        data = {"csrf": csrf, "action": "resume", "version": str(task.version)}
        assert board.client.post(f"/tasks/{task.id}/action", data=data).status_code == 403
        bulk = {"csrf": csrf, "type": "charge", "confirm": "yes"}
        assert board.client.post("/bulk/resume", data=bulk).status_code == 403
        assert board.client.post(f"/tasks/{task.id}/payload", data=data).status_code == 403
        assert board.get(task.id) == task


def session_csrf(board: Board) -> str:
    """The CSRF token of the client's session, signed as the app signs it (with SECRET)."""
    board.client.get("/")
    session = board.client.cookies.get(SESSION_COOKIE)
    assert session
    return Guard(secret=SECRET, token=None).csrf_token(session)


class TokenRoutes:
    """The dashboard with an access token."""

    @pytest.fixture
    def board(self, make_board: BoardFactory) -> Iterator[Board]:
        with make_board(token=TOKEN) as board:
            yield board

    def test_every_page_needs_the_token(self, board: Board) -> None:
        task = board.seed()
        for path in ("/", "/errors", f"/tasks/{task.id}"):
            answer = board.client.get(path, follow_redirects=False)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/login"
        login = board.client.get("/login")
        csrf = csrf_of(login.text)
        wrong = board.client.post("/login", data={"csrf": csrf, "token": "guess"})
        assert wrong.status_code == 403
        right = board.client.post(
            "/login", data={"csrf": csrf, "token": TOKEN}, follow_redirects=False
        )
        assert right.status_code == 303
        page = board.client.get(f"/tasks/{task.id}")
        assert page.status_code == 200
        data = {"csrf": csrf_of(page.text), "action": "resume", "version": str(task.version)}
        acted = board.client.post(f"/tasks/{task.id}/action", data=data, follow_redirects=False)
        assert acted.status_code == 303

    def test_a_bearer_token_works_without_signing_in(self, board: Board) -> None:
        headers = {"authorization": f"Bearer {TOKEN}"}
        assert board.client.get("/", headers=headers).status_code == 200
        wrong = board.client.get(
            "/", headers={"authorization": "Bearer nope"}, follow_redirects=False
        )
        assert wrong.status_code == 303


# -- the in-memory store ----------------------------------------------------------------


def memory_board(**options: Any) -> AbstractContextManager[Board]:
    @contextmanager
    def opened() -> Iterator[Board]:
        dao = InMemoryTaskDAO()
        queries: TaskQueries = InMemoryTaskQueries(dao=dao)
        stats: DashboardStats = InMemoryDashboardStats(dao=dao)
        operator = build_operator(dao=dao, queries=queries, clock=SystemClock())
        app = create_app(operator=operator, stats=stats, secret=SECRET, **options)
        with TestClient(app) as client:
            yield Board(client, dao, lambda fn, *args: client.portal.call(fn, *args))  # type: ignore[union-attr]

    return opened()


@pytest.fixture
def make_board() -> BoardFactory:
    return memory_board


class TestDashboardInMemory(DashboardRoutes):
    pass


class TestReadOnlyInMemory(ReadOnlyRoutes):
    pass


class TestTokenInMemory(TokenRoutes):
    pass


def test_the_dashboard_mounted_under_a_prefix_links_and_redirects_under_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    dao = InMemoryTaskDAO()
    operator = build_operator(dao=dao, queries=InMemoryTaskQueries(dao=dao), clock=SystemClock())
    dashboard = create_app(operator=operator, stats=InMemoryDashboardStats(dao=dao))
    parent = Starlette(routes=[Mount("/ops/tasks", app=dashboard)])
    with TestClient(parent) as client:
        board = Board(client, dao, lambda fn, *args: client.portal.call(fn, *args))  # type: ignore[union-attr]
        task = board.seed()
        page = client.get(f"/ops/tasks/tasks/{task.id}")
        assert page.status_code == 200
        assert 'href="/ops/tasks/static/style.css"' in page.text
        assert f'action="/ops/tasks/tasks/{task.id}/action"' in page.text
        assert "Path=/ops/tasks;" in page.headers["set-cookie"]
        data = {"csrf": csrf_of(page.text), "action": "resume", "version": str(task.version)}
        with caplog.at_level(logging.INFO, logger="resilient_task.dashboard.access"):
            answer = client.post(
                f"/ops/tasks/tasks/{task.id}/action", data=data, follow_redirects=False
            )
            assert client.get("/ops/tasks/static/style.css").status_code == 200
        assert answer.headers["location"] == f"/ops/tasks/tasks/{task.id}?done=resume"
        logged = [r.getMessage() for r in caplog.records]
        assert f"POST /ops/tasks/tasks/{task.id}/action 303" in " ".join(logged)
        assert "GET /ops/tasks/static/style.css 200" in " ".join(logged)

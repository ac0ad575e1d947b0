"""Hostile input to the dashboard, as a class: any filter, any form field, any task type or
error text. Pages never fail (no 500), never write on a refused form, and show every
user string as text (no element of its own)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from starlette.testclient import TestClient

from resilient_task.domain.requests import MAX_TYPE_LENGTH, text_problem
from resilient_task.domain.task import TaskStatus
from tests.unit.test_dashboard_routes import Board, csrf_of, memory_board

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def tags_of(html: str) -> list[str]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@contextmanager
def board() -> Iterator[Board]:
    with memory_board() as opened:
        yield opened


valid_text = st.text(min_size=1, max_size=80).filter(
    lambda t: text_problem(t, MAX_TYPE_LENGTH) is None
)


@SETTINGS
@given(task_type=valid_text, error=st.text(max_size=200))
def test_any_type_and_error_text_is_shown_as_text(task_type: str, error: str) -> None:
    with board() as b:
        baseline_task = b.seed(type="plain", error="plain")
        baseline = tags_of(b.client.get(f"/tasks/{baseline_task.id}").text)
        task = b.seed(type=task_type, error=error)
        page = b.client.get(f"/tasks/{task.id}")
        assert page.status_code == 200
        assert f'<td id="type">{escape(task_type)}</td>' in page.text
        assert tags_of(page.text) == baseline or not error  # same elements, however hostile
        listing = b.client.get("/errors", params={"type": task_type})
        assert listing.status_code == 200
        assert str(task.id) in listing.text
        assert "<script" not in page.text + listing.text


@SETTINGS
@given(task_type=st.text(max_size=300), age=st.text(max_size=20))
def test_any_filter_is_answered_without_failing(task_type: str, age: str) -> None:
    with board() as b:
        b.seed()
        answer = b.client.get("/errors", params={"type": task_type, "age": age})
        assert answer.status_code in (200, 400)


@SETTINGS
@given(
    action=st.one_of(st.sampled_from(["resume", "fail", "cancel", "reschedule"]), st.text()),
    version=st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(max_size=30)),
    run_at=st.text(max_size=40),
    reason=st.text(max_size=50),
)
@example(action="resume", version=" 0", run_at="", reason="")  # int() would accept these
@example(action="resume", version="\u0660", run_at="", reason="")
@example(action="resume", version="0_0", run_at="", reason="")
@example(action="resume", version="+0", run_at="", reason="")
def test_any_action_form_is_refused_or_applied_never_a_500(
    action: str, version: str, run_at: str, reason: str
) -> None:
    with board() as b:
        task = b.seed(status=TaskStatus.WAITING)
        client: TestClient = b.client
        csrf = csrf_of(client.get(f"/tasks/{task.id}").text)
        data = {
            "csrf": csrf,
            "action": action,
            "version": version,
            "run_at": run_at,
            "reason": reason,
        }
        answer = client.post(f"/tasks/{task.id}/action", data=data, follow_redirects=False)
        assert answer.status_code in (303, 400, 409)
        after = b.get(task.id)
        if answer.status_code == 303:
            assert version == str(task.version)
            assert after.version == task.version + 1
        else:
            assert after == task
            assert re.search(r'class="problem"', answer.text)

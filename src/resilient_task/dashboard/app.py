"""The dashboard's ASGI app: overview, ERROR tasks, a task page and the operator actions.

Build it with :func:`create_app` and serve it (``resilient-task dashboard`` runs it under
uvicorn) or mount it in your own Starlette/FastAPI app. Every read goes through the
:class:`~resilient_task.service.operator.TaskOperator` and the bounded
:class:`~resilient_task.dashboard.stats.DashboardStats`; every change is an operator action
carrying the version the page showed, so a task changed meanwhile is left alone.

Pages (GET) and actions (POST, each with a CSRF token; absent in read-only mode)::

    GET  /                          overview
    GET  /errors?type=T&age=1h      ERROR tasks, filtered
    GET  /tasks/{id}                every field of one task (no payload)
    POST /tasks/{id}/payload        the same page with the payload (unless disabled)
    POST /tasks/{id}/action         resume | fail | cancel | reschedule at a version
    POST /bulk/resume               confirm, then resume the ERROR tasks of one type
    GET|POST /login                 sign in with the access token (when one is set)
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from resilient_task.cli_values import format_duration, parse_duration, parse_time, parse_version
from resilient_task.dashboard.chart import Chart, bar_chart
from resilient_task.dashboard.security import AUTH_COOKIE, SESSION_COOKIE, Guard
from resilient_task.dashboard.stats import (
    DashboardStats,
    MinuteCount,
    NodeSeen,
    StatusCount,
    TypeCounts,
)
from resilient_task.domain.requests import MAX_TYPE_LENGTH, text_problem
from resilient_task.domain.task import TRANSITIONS, Task, TaskStatus
from resilient_task.errors import BackendError, TaskNotFoundError, ValidationError
from resilient_task.logtext import loggable
from resilient_task.service.operator import OVERDUE_STATUSES, Action, Outcome, TaskOperator

__all__ = ["DashboardLimits", "create_app"]

logger = logging.getLogger("resilient_task.dashboard")

_HERE = Path(__file__).parent
_AGES = ("", "5m", "1h", "6h", "1d", "7d")
_MESSAGES = {
    "resume": "Resumed: the task is SUBMITTED and the next poll of a worker starts it.",
    "fail": "Marked as FAILED.",
    "cancel": "Cancelled.",
    "reschedule": "Rescheduled.",
    "signed-in": "Signed in.",
}
_CHANGED = "This task changed since you loaded it; nothing was written. Look again, then act."


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardLimits:
    """How much one page reads (each overview read is bounded; see ``stats``).

    Attributes:
        count_cap: per status, counted exactly up to this; estimated above.
        type_sample: per status, the types of this many tasks are counted.
        chart_minutes: the chart's width in minutes.
        slot_cap: each ten-second slot of the chart counted exactly up to this, estimated
            above (from how long its first ``slot_cap`` tasks took).
        node_window: a node is "seen" if it finished a task within this.
        node_sample: PROCESSING and recently DONE tasks read for the nodes (each).
        error_page: ERROR tasks listed on one page.
        bulk_limit: the most tasks one bulk resume acts on.
    """

    count_cap: int = 2_000
    type_sample: int = 500
    chart_minutes: int = 60
    slot_cap: int = 50
    node_window: timedelta = timedelta(minutes=15)
    node_sample: int = 1_000
    error_page: int = 200
    bulk_limit: int = 1_000


@dataclass(frozen=True, slots=True)
class _Config:
    operator: TaskOperator
    stats: DashboardStats
    read_only: bool
    show_payload: bool
    guard: Guard
    limits: DashboardLimits
    templates: jinja2.Environment


def create_app(
    *,
    operator: TaskOperator,
    stats: DashboardStats,
    read_only: bool = False,
    show_payload: bool = True,
    token: str | None = None,
    secret: bytes | None = None,
    limits: DashboardLimits | None = None,
    access_log: bool = True,
) -> Starlette:
    """The dashboard as an ASGI app, to serve or to mount (``Mount("/tasks", app=...)``).

    Args:
        operator: the operator service every read and action goes through.
        stats: the bounded overview reads (``PostgresDashboardStats`` or
            ``InMemoryDashboardStats``) over the same store.
        read_only: no actions: no buttons, and every action POST is refused (403).
        show_payload: offer the payload behind an explicit click; False removes it.
        token: the access token; when set, every page but the sign-in page needs it
            (a signed-in cookie, or ``Authorization: Bearer``). Mounted behind your own
            authentication, None leaves that to you.
        secret: the key signing CSRF tokens and sign-in cookies; random per process when None
            (give one when several processes serve the same dashboard).
        limits: how much each page reads.
        access_log: log each request on ``resilient_task.dashboard.access`` as method, path
            (task ids at most; never a query string or form field), status and duration.
    """
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = _when
    environment.filters["number"] = _number
    config = _Config(
        operator=operator,
        stats=stats,
        read_only=read_only,
        show_payload=show_payload,
        guard=Guard(secret=secret, token=token),
        limits=limits or DashboardLimits(),
        templates=environment,
    )

    def bind(
        handler: Callable[[_Config, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await _guarded(config, request, handler)

        return endpoint

    routes = [
        Route("/", bind(_overview), methods=["GET"], name="overview"),
        Route("/errors", bind(_errors), methods=["GET"], name="errors"),
        Route("/tasks/{task_id}", bind(_task_page), methods=["GET"], name="task"),
        Route("/tasks/{task_id}/payload", bind(_payload), methods=["POST"]),
        Route("/tasks/{task_id}/action", bind(_action), methods=["POST"]),
        Route("/bulk/resume", bind(_bulk_resume), methods=["POST"]),
        Route("/login", bind(_login), methods=["GET", "POST"], name="login"),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Headers, access_log=access_log)
    return app


# -- request plumbing -------------------------------------------------------------------


class _Headers:
    """Security headers on every response; optionally an access log without query strings."""

    def __init__(self, app: Any, *, access_log: bool) -> None:
        self._app = app
        self._log = logging.getLogger("resilient_task.dashboard.access") if access_log else None

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        # The full path (ASGI: it includes root_path), read before routing rewrites the scope.
        path = str(scope.get("path", ""))

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _CSP),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                ]
                message["headers"] = headers
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            if self._log is not None:
                elapsed = (time.perf_counter() - started) * 1000
                shown = loggable(path, 200)
                self._log.info("%s %s %d %.0fms", scope["method"], shown, status, elapsed)


_CSP = (
    b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)


class _RefusedError(Exception):
    """A request the dashboard answers with an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _guarded(
    config: _Config, request: Request, handler: Callable[[_Config, Request], Awaitable[Response]]
) -> Response:
    """Session cookie, sign-in and CSRF checks around ``handler``; errors as pages."""
    session = config.guard.session_of(request)
    new_session = session is None
    if session is None:
        session = config.guard.new_session()
    request.state.session = session
    try:
        needs = config.guard.needs_sign_in and handler is not _login
        if needs and not config.guard.signed_in(request):
            response: Response = RedirectResponse(_base(request) + "/login", status_code=303)
            raise _RedirectError(response)
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=50, max_part_size=64 * 1024)
            request.state.form = form
            if new_session or not config.guard.csrf_ok(request, form.get("csrf")):
                raise _RefusedError(403, "This form has expired or did not come from this page.")
        response = await handler(config, request)
    except _RedirectError as redirect:
        response = redirect.response
    except _RefusedError as refused:
        response = _page(
            config, request, "message.html", status=refused.status, message=refused.message
        )
    except TaskNotFoundError:
        response = _page(config, request, "message.html", status=404, message="No such task.")
    except BackendError as exc:
        logger.warning("dashboard: the store failed: %s", loggable(exc, 300))
        response = _page(
            config,
            request,
            "message.html",
            status=503,
            message="The task store cannot be reached right now; try again shortly.",
        )
    if new_session:
        response.set_cookie(
            SESSION_COOKIE,
            session,
            httponly=True,
            samesite="strict",
            path=_cookie_path(request),
            secure=request.url.scheme == "https",
        )
    return response


class _RedirectError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("redirect")
        self.response = response


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_path(request: Request) -> str:
    return _base(request) or "/"


def _page(
    config: _Config, request: Request, template: str, *, status: int = 200, **context: Any
) -> HTMLResponse:
    session = getattr(request.state, "session", "")
    html = config.templates.get_template(template).render(
        base=_base(request),
        csrf=config.guard.csrf_token(session) if session else "",
        read_only=config.read_only,
        show_payload=config.show_payload,
        signed_in=config.guard.needs_sign_in and config.guard.signed_in(request),
        **context,
    )
    return HTMLResponse(html, status_code=status)


def _form(request: Request) -> FormData:
    form: FormData = request.state.form
    return form


def _field(request: Request, name: str) -> str:
    value = _form(request).get(name)
    return value if isinstance(value, str) else ""


def _task_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["task_id"])
    except ValueError:
        raise _RefusedError(404, "No such task.") from None


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.isoformat(sep=" ", timespec="seconds")


def _number(value: int) -> str:
    return f"{value:,}"


# -- pages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Overdue:
    status: TaskStatus
    task: Task | None
    late: str


async def _overview(config: _Config, request: Request) -> Response:
    operator, stats, limits = config.operator, config.stats, config.limits
    now = operator.now()
    results: dict[str, Any] = {}

    async def read(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        results[name] = await call()

    async def oldest(status: TaskStatus) -> _Overdue:
        query = operator.query(statuses=[status], older_than=timedelta(0), limit=1)
        found = await operator.list_tasks(query)
        task = found[0] if found else None
        late = "" if task is None else format_duration(now - task.next_event_time)
        return _Overdue(status, task, late)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, "counts", lambda: stats.status_counts(cap=limits.count_cap))
        tg.start_soon(read, "types", lambda: stats.type_counts(cap=limits.type_sample))
        tg.start_soon(
            read,
            "done",
            lambda: stats.done_per_minute(
                now=now, minutes=limits.chart_minutes, cap=limits.slot_cap
            ),
        )
        tg.start_soon(
            read,
            "nodes",
            lambda: stats.recent_nodes(now=now, within=limits.node_window, cap=limits.node_sample),
        )
        for status in OVERDUE_STATUSES:
            tg.start_soon(read, f"overdue-{status}", lambda s=status: oldest(s))
    counts: dict[TaskStatus, StatusCount] = results["counts"]
    types: TypeCounts = results["types"]
    nodes: list[NodeSeen] = results["nodes"]
    done: list[MinuteCount] = results["done"]
    chart: Chart = bar_chart(done, now=now)
    type_rows = sorted(types.counts.items(), key=lambda item: (item[0][1], item[0][0]))
    return _page(
        config,
        request,
        "overview.html",
        now=now,
        statuses=list(TaskStatus),
        counts=counts,
        type_rows=type_rows,
        sampled=sorted(types.sampled),
        type_sample=limits.type_sample,
        chart=chart,
        done_total=sum(m.count for m in done),
        done_exact=all(m.exact for m in done),
        slot_cap=limits.slot_cap,
        overdue=[results[f"overdue-{s}"] for s in OVERDUE_STATUSES],
        nodes=nodes,
        node_window=format_duration(limits.node_window),
    )


async def _errors(config: _Config, request: Request) -> Response:
    operator = config.operator
    task_type = request.query_params.get("type", "")
    age = request.query_params.get("age", "")
    problem = None
    if task_type and text_problem(task_type, MAX_TYPE_LENGTH) is not None:
        problem, task_type = "That task type cannot exist.", ""
    older_than = None
    if age:
        try:
            older_than = parse_duration(age)
        except ValidationError:
            problem, age = "Age is a duration such as 10m, 1h or 2d.", ""
    query = operator.query(
        statuses=[TaskStatus.ERROR],
        types=[task_type] if task_type else [],
        older_than=older_than,
        limit=config.limits.error_page,
    )
    tasks, types = await _both(
        operator.list_tasks(query), config.stats.type_counts(cap=config.limits.type_sample)
    )
    error_types = sorted(t for (s, t) in types.counts if s is TaskStatus.ERROR)
    if task_type and task_type not in error_types:
        error_types.append(task_type)
    return _page(
        config,
        request,
        "errors.html",
        status=400 if problem else 200,
        problem=problem,
        tasks=tasks,
        task_type=task_type,
        age=age,
        ages=_AGES if age in _AGES else (*_AGES, age),
        error_types=error_types,
        limited=len(tasks) == query.limit,
        now=operator.now(),
    )


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    found: list[Any] = [None, None]

    async def one(index: int, call: Awaitable[Any]) -> None:
        found[index] = await call

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0, first)
        tg.start_soon(one, 1, second)
    return found[0], found[1]


def _actions_for(task: Task) -> list[Action]:
    return [a for a in Action if task.status in TRANSITIONS[a.transition][0]]


async def _task_page(config: _Config, request: Request) -> Response:
    return await _render_task(config, request, _task_id(request))


async def _render_task(
    config: _Config,
    request: Request,
    task_id: UUID,
    *,
    status: int = 200,
    message: str | None = None,
    problem: str | None = None,
    payload: tuple[str, str] | None = None,
) -> Response:
    task = await config.operator.show(task_id)
    notice = message or _MESSAGES.get(request.query_params.get("done", ""))
    return _page(
        config,
        request,
        "task.html",
        status=status,
        task=task,
        payload_size=len(task.data),
        payload=payload,
        actions=[] if config.read_only else _actions_for(task),
        message=notice,
        problem=problem,
        now=config.operator.now(),
    )


async def _payload(config: _Config, request: Request) -> Response:
    if not config.show_payload:
        raise _RefusedError(403, "Payload viewing is disabled on this dashboard.")
    task_id = _task_id(request)
    task = await config.operator.show(task_id)
    try:
        shown = ("utf-8", task.data.decode("utf-8"))
    except UnicodeDecodeError:
        shown = ("base64", base64.b64encode(task.data).decode("ascii"))
    logger.info("dashboard: payload of task %s viewed", task_id)
    return await _render_task(config, request, task_id, payload=shown)


async def _action(config: _Config, request: Request) -> Response:
    if config.read_only:
        raise _RefusedError(403, "This dashboard is read-only.")
    task_id = _task_id(request)
    operator = config.operator
    try:
        action = Action(_field(request, "action"))
    except ValueError:
        raise _RefusedError(400, "Unknown action.") from None
    try:  # ASCII digits only: int() would also take " 1", "1_0" and other scripts' digits
        version = parse_version(_field(request, "version"))
    except ValidationError:
        raise _RefusedError(400, "The form has no valid task version.") from None
    run_at = None
    reason = None
    try:
        if action is Action.RESCHEDULE:
            run_at = parse_time(_field(request, "run_at").strip(), now=operator.now())
        if action is Action.FAIL and _field(request, "reason").strip():
            reason = _field(request, "reason").strip()
        [result] = await operator.act(
            action, [task_id], version=version, run_at=run_at, reason=reason
        )
    except ValidationError as exc:
        return await _render_task(config, request, task_id, status=400, problem=str(exc))
    logger.info(
        "dashboard: %s task %s at version %d: %s", action.value, task_id, version, result.outcome
    )
    if result.outcome is Outcome.OK:
        url = f"{_base(request)}/tasks/{task_id}?done={action.value}"
        return RedirectResponse(url, status_code=303)
    if result.outcome is Outcome.NOT_FOUND:
        raise TaskNotFoundError(task_id)
    if result.outcome is Outcome.CHANGED:
        return await _render_task(config, request, task_id, status=409, problem=_CHANGED)
    return await _render_task(config, request, task_id, status=409, problem=result.detail)


async def _bulk_resume(config: _Config, request: Request) -> Response:
    if config.read_only:
        raise _RefusedError(403, "This dashboard is read-only.")
    task_type = _field(request, "type")
    problem = text_problem(task_type, MAX_TYPE_LENGTH)
    if problem is not None:
        raise _RefusedError(400, "Choose a task type first.")
    operator = config.operator
    query = operator.query(
        statuses=[TaskStatus.ERROR], types=[task_type], limit=config.limits.bulk_limit
    )
    confirmed = _field(request, "confirm") == "yes"
    results = await operator.act_on_selection(Action.RESUME, query, dry_run=not confirmed)
    ok = sum(r.outcome is Outcome.OK for r in results)
    if confirmed:
        logger.info(
            "dashboard: bulk resume of ERROR tasks of type %s: %d of %d resumed",
            loggable(task_type),
            ok,
            len(results),
        )
    return _page(
        config,
        request,
        "bulk.html",
        task_type=task_type,
        confirmed=confirmed,
        selected=len(results),
        ok=ok,
        not_ok=[r for r in results if r.outcome is not Outcome.OK],
        limit=query.limit,
    )


async def _login(config: _Config, request: Request) -> Response:
    if not config.guard.needs_sign_in:
        return RedirectResponse(_base(request) + "/", status_code=303)
    if request.method == "GET":
        return _page(config, request, "login.html", problem=None)
    if not config.guard.token_ok(_field(request, "token")):
        logger.warning("dashboard: sign-in refused (wrong token)")
        return _page(config, request, "login.html", status=403, problem="Wrong token.")
    response = RedirectResponse(_base(request) + "/", status_code=303)
    response.set_cookie(
        AUTH_COOKIE,
        config.guard.auth_cookie(request.state.session),
        httponly=True,
        samesite="strict",
        path=_cookie_path(request),
        secure=request.url.scheme == "https",
    )
    return response

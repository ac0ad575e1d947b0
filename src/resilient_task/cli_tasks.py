"""``resilient-task tasks ...``: list, count, show and act on tasks in a PostgreSQL store.

Commands (every one takes ``--database-url`` (default ``$RESILIENT_TASK_DATABASE_URL``),
``--schema`` and ``--table-prefix``, like ``db upgrade``)::

    tasks list [--status S]... [--type T]... [--older-than 10m] [--limit N] [--json]
    tasks show ID [--data none|utf8|base64] [--json]
    tasks count [--by-type] [--json]
    tasks resume|fail|cancel ID... [--version V] [--dry-run] [--json]
    tasks resume|fail|cancel --status S [--type T]... [--older-than D] [--limit N] [--dry-run]
    tasks reschedule ID... --at 2026-12-01T10:00Z|+10m [--version V] [--dry-run]

Everything goes through :class:`~resilient_task.service.operator.TaskOperator`; no SQL here.
Each acted-on task prints one line with its outcome (OK, NOT_FOUND, CHANGED, NOT_ALLOWED).

Exit codes::

    0    done; every task acted on is OK
    1    at least one task was NOT_FOUND, CHANGED or NOT_ALLOWED; `tasks show` of an unknown id
    2    wrong input: a bad status name, duration, time, uuid, version or limit, no
         --database-url, an invalid URL, schema or prefix (argparse's own usage errors too)
    3    the store cannot be used: unreachable, tables missing or at another version, or
         another database failure (a bulk action may then have changed some tasks already)
    130  interrupted (Ctrl-C)
    141  stdout was closed early (``... | head``), like a command killed by SIGPIPE

Wrong input never shows a traceback: one line ``error: ...`` on stderr.

This command line has no trigger broker: a resumed task is stored already overdue, so the next
poll of any worker (every ``polling_interval``, 2 s by default) starts it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio

from resilient_task.cli_output import print_counts, print_results, print_task, print_tasks
from resilient_task.cli_values import (
    parse_duration,
    parse_limit,
    parse_status,
    parse_task_id,
    parse_time,
    parse_version,
)
from resilient_task.domain.task import BaseTask, TaskStatus
from resilient_task.errors import (
    BackendError,
    ConfigurationError,
    ResilientTaskError,
    SchemaVersionError,
    TaskNotFoundError,
    ValidationError,
)
from resilient_task.logtext import loggable
from resilient_task.ports.clock import Clock
from resilient_task.ports.task_queries import MAX_LIST_LIMIT, TaskQueries, TaskQuery
from resilient_task.properties import TaskProperties
from resilient_task.service.operator import (
    Action,
    Outcome,
    TaskOperator,
)
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.service.task_service import TaskService

if TYPE_CHECKING:  # imported when a command runs: the parser loads without the drivers
    from resilient_task.adapters.postgres import PostgresTaskDAO

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_USAGE",
    "OperatorFactory",
    "add_tasks_commands",
    "add_version_option",
    "build_operator",
    "open_operator",
    "open_store",
    "postgres_operator",
    "run_tasks",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DATABASE_URL_ENV = "RESILIENT_TASK_DATABASE_URL"

OperatorFactory = Callable[[argparse.Namespace], AbstractAsyncContextManager[TaskOperator]]
"""Opens the operator a command runs on (tests pass one over the in-memory store)."""

# -- the parser -------------------------------------------------------------------------


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``resilient-task <version>`` and exit 0."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("resilient-task")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "unknown"
    parser.add_argument("--version", action="version", version=f"resilient-task {found}")


def _store_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        help=f"defaults to ${DATABASE_URL_ENV}",
    )
    parent.add_argument("--schema", default="public")
    parent.add_argument("--table-prefix", default="resilient_task_")
    parent.add_argument("--json", action="store_true", help="one JSON object per line")
    return parent


def _filters(parser: argparse.ArgumentParser, default_limit: int) -> None:
    parser.add_argument("--status", action="append", default=[], help="repeatable")
    parser.add_argument("--type", action="append", default=[], help="repeatable")
    parser.add_argument(
        "--older-than", help="next event time at least this long ago: 90s, 10m, 2h, 1d"
    )
    parser.add_argument(
        "--limit",
        default=str(default_limit),
        help=f"at most {MAX_LIST_LIMIT} (default %(default)s)",
    )


def add_tasks_commands(commands: Any) -> None:
    """Add ``tasks`` and its sub-commands to ``commands`` (``parser.add_subparsers()``)."""
    store = _store_options()
    tasks = commands.add_parser(
        "tasks",
        help="list, count, show, resume, fail, cancel or reschedule tasks",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit codes: 0 ok, 1 some task not OK, 2 wrong input, 3 store unusable, "
        "130 interrupted, 141 stdout closed early",
    )
    sub = tasks.add_subparsers(dest="tasks_command", required=True)

    listing = sub.add_parser("list", parents=[store], help="tasks by status, type and age")
    _filters(listing, 100)
    show = sub.add_parser("show", parents=[store], help="every field of one task")
    show.add_argument("task_id")
    show.add_argument(
        "--data", choices=("none", "utf8", "base64"), default="none", help="show the payload"
    )
    count = sub.add_parser("count", parents=[store], help="counts and the oldest overdue tasks")
    count.add_argument("--by-type", action="store_true")
    for action in Action:
        what = {
            Action.RESUME: "run now (WAITING, SUBMITTED, PROCESSING, ERROR)",
            Action.FAIL: "mark as FAILED (ERROR, PROCESSING)",
            Action.CANCEL: "cancel (WAITING)",
            Action.RESCHEDULE: "move to another time (WAITING)",
        }[action]
        command = sub.add_parser(action.value, parents=[store], help=what)
        command.add_argument("task_ids", nargs="*", metavar="ID")
        command.add_argument("--version", help="act only if the task is at this version")
        command.add_argument("--dry-run", action="store_true", help="say what would happen")
        _filters(command, 100)
        if action is Action.RESCHEDULE:
            command.add_argument("--at", required=True, help="2026-12-01T10:00Z or +10m")
        if action is Action.FAIL:
            command.add_argument("--reason", help="recorded as the task's last error")


# -- composition ------------------------------------------------------------------------


class _NoTriggers:
    """The command line's triggerer: nothing to send to.

    The store is the truth and triggers are only hints: the operator's task service stores
    resumed tasks already overdue (see :func:`build_operator`), so every worker's resumer
    starts them on its next poll.
    """

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Send nothing; the tasks wait in the store for the next poll."""

    async def start(self, on_trigger: Any) -> None:
        """Nothing to deliver."""

    async def stop(self) -> None:
        """Nothing to stop."""


def build_operator(*, dao: AnyTaskDAO, queries: TaskQueries, clock: Clock) -> TaskOperator:
    """The operator of a process that runs no workers and has no broker (this CLI).

    Its task service sends no triggers and gives resumed tasks a pick-up deadline of one
    microsecond, so the next poll of any worker re-triggers and starts them.
    """
    service = TaskService(
        dao=dao,
        triggerer=_NoTriggers(),
        registry=HandlerRegistry(),
        clock=clock,
        properties=TaskProperties(
            expected_queue_time=timedelta(microseconds=1), node_id="resilient-task-cli"
        ),
        poll_only=True,
    )
    return TaskOperator(service=service, queries=queries, clock=clock)


@asynccontextmanager
async def open_store(
    args: argparse.Namespace, application_name: str = "resilient-task-cli"
) -> AsyncIterator[PostgresTaskDAO]:
    """The PostgreSQL store named by ``args`` (URL, schema, prefix), schema-checked.

    A small pool and a short connect timeout: a command line waits on nothing for long. The
    dashboard opens its store here too.
    """
    from resilient_task.adapters.postgres import open_postgres_dao

    async with open_postgres_dao(
        args.database_url,
        schema=args.schema,
        prefix=args.table_prefix,
        pool_size=8,
        max_overflow=0,
        connect_timeout=5,
        application_name=application_name,
    ) as dao:
        yield dao


def postgres_operator(dao: PostgresTaskDAO) -> TaskOperator:
    """The operator over ``dao``, its read queries and the system clock."""
    from resilient_task.adapters.postgres.queries import PostgresTaskQueries
    from resilient_task.adapters.system.clock import SystemClock

    return build_operator(dao=dao, queries=PostgresTaskQueries(dao=dao), clock=SystemClock())


@asynccontextmanager
async def open_operator(args: argparse.Namespace) -> AsyncIterator[TaskOperator]:
    """The operator over the PostgreSQL store named by ``args`` (URL, schema, prefix)."""
    async with open_store(args) as dao:
        yield postgres_operator(dao)


# -- running ----------------------------------------------------------------------------


def run_tasks(args: argparse.Namespace, *, operator: OperatorFactory | None = None) -> int:
    """Run a parsed ``tasks`` command; returns the exit code (see the module docstring)."""
    if operator is None:
        if not args.database_url:
            return _fail(f"--database-url (or ${DATABASE_URL_ENV}) is required", EXIT_USAGE)
        operator = open_operator
    try:
        return anyio.run(_run, args, operator)
    except (ValidationError, TaskNotFoundError, SchemaVersionError, BackendError) as exc:
        code = {ValidationError: EXIT_USAGE, TaskNotFoundError: EXIT_FAILED}.get(
            type(exc), EXIT_STORE
        )
        return _fail(str(exc), code)
    except ConfigurationError as exc:  # an invalid URL, schema or prefix
        return _fail(str(exc), EXIT_USAGE)
    except ResilientTaskError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured output)
        pass


def _fail(message: str, code: int) -> int:
    print(f"error: {loggable(message, 500)}", file=sys.stderr)
    return code


@dataclass(frozen=True, slots=True)
class _Input:
    """A command's arguments, parsed and checked before the store is contacted."""

    task_ids: list[UUID] = field(default_factory=list)
    statuses: list[TaskStatus] = field(default_factory=list)
    types: tuple[str, ...] = ()
    older_than: timedelta | None = None
    limit: int = 100
    version: int | None = None


def _parse(args: argparse.Namespace) -> _Input:
    """Every argument of ``args`` checked; ValidationError (exit 2) for the first bad one."""
    command = args.tasks_command
    if command == "show":
        return _Input(task_ids=[parse_task_id(args.task_id)])
    if command == "count":
        return _Input()
    parsed = _Input(
        statuses=[parse_status(s) for s in args.status],
        types=TaskQuery(types=args.type).types,
        older_than=None if args.older_than is None else parse_duration(args.older_than),
        limit=parse_limit(args.limit),
    )
    if command == "list":
        return parsed
    action = Action(command)
    if action is Action.RESCHEDULE:
        parse_time(args.at, now=datetime.now(UTC))  # checked now, read on the operator's clock
    if args.task_ids:
        if args.status or args.type or args.older_than:
            raise ValidationError("give task ids or --status/--type/--older-than, not both")
        version = None if args.version is None else parse_version(args.version)
        return replace(parsed, task_ids=[parse_task_id(t) for t in args.task_ids], version=version)
    if not args.status:
        raise ValidationError(
            f"{action.value} needs task ids, or --status (with optional --type, --older-than, "
            "--limit) to select tasks"
        )
    if args.version is not None:
        raise ValidationError("--version is for task ids; a selection acts on what it read")
    return parsed


async def _run(args: argparse.Namespace, factory: OperatorFactory) -> int:
    command = args.tasks_command
    given = _parse(args)
    async with factory(args) as operator:
        if command == "show":
            print_task(await operator.show(given.task_ids[0]), args.data, args.json)
            return EXIT_OK
        if command == "count":
            print_counts(await operator.count(by_type=args.by_type), args.json)
            return EXIT_OK
        query = operator.query(
            statuses=given.statuses,
            types=given.types,
            older_than=given.older_than,
            limit=given.limit,
        )
        if command == "list":
            tasks = await operator.list_tasks(query)
            print_tasks(tasks, args.json)
            if len(tasks) == query.limit:
                print(f"(limit {query.limit} reached: more tasks may match)", file=sys.stderr)
            return EXIT_OK
        return await _act(args, given, operator, query)


async def _act(
    args: argparse.Namespace, given: _Input, operator: TaskOperator, query: TaskQuery
) -> int:
    action = Action(args.tasks_command)
    run_at = parse_time(args.at, now=operator.now()) if action is Action.RESCHEDULE else None
    reason = getattr(args, "reason", None)
    if given.task_ids:
        results = await operator.act(
            action,
            given.task_ids,
            version=given.version,
            run_at=run_at,
            reason=reason,
            dry_run=args.dry_run,
        )
    else:
        results = await operator.act_on_selection(
            action, query, run_at=run_at, reason=reason, dry_run=args.dry_run
        )
        if len(results) == query.limit:
            print(f"(limit {query.limit} reached: run again for more)", file=sys.stderr)
    print_results(action, results, args.json)
    return EXIT_OK if all(r.outcome is Outcome.OK for r in results) else EXIT_FAILED

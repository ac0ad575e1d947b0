"""The ``resilient-task`` command line: ``demo``, ``db upgrade``, ``db check``, ``worker``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from resilient_task import __version__
from resilient_task.cli_ops import (
    add_db_commands,
    add_healthcheck_command,
    run_db_command,
    run_healthcheck,
)
from resilient_task.cli_tasks import add_tasks_commands, run_tasks
from resilient_task.dashboard.cli import add_dashboard_command, run_dashboard
from resilient_task.errors import ConfigurationError, ResilientTaskError
from resilient_task.extras import require_extra

__all__ = ["main"]

_DATABASE_URL = "RESILIENT_TASK_DATABASE_URL"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resilient-task", description=__doc__)
    parser.add_argument("--version", action="version", version=f"resilient-task {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the payment-flow demo on one node")
    demo.add_argument(
        "--database-url",
        default=None,
        help="postgresql+psycopg://... to run on PostgreSQL (default: in-memory); the demo "
        "uses its own schema, resilient_task_demo, and leaves its tasks there",
    )

    db = sub.add_parser("db", help="database schema management")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser(
        "upgrade", help="create or upgrade the schema (idempotent), then check it"
    )
    check = db_sub.add_parser(
        "check", help="compare the live tables with the declared ones; exit 1 if they differ"
    )
    add_db_commands(db_sub)
    for command in (upgrade, check):
        command.add_argument(
            "--database-url",
            default=os.environ.get(_DATABASE_URL),
            help=f"defaults to ${_DATABASE_URL}",
        )
        command.add_argument("--schema", default="public")
        command.add_argument("--table-prefix", default="resilient_task_")

    worker = sub.add_parser("worker", help="run one node with your handlers until SIGTERM/SIGINT")
    worker.add_argument(
        "--app",
        required=True,
        help="module:attribute naming a ResilientTask, or a zero-argument function returning one",
    )
    worker.add_argument(
        "--in-memory",
        action="store_true",
        help="allow a node whose tasks live in this process's memory (no database): they are "
        "lost when it exits and no other process can add to them",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz on this port (needs resilient-task[metrics])",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the endpoints listen on (default 127.0.0.1: this machine only)",
    )
    worker.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=None,
        help="default: $RESILIENT_TASK_LOG_LEVEL, else INFO",
    )
    worker.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one object per line, with task_id/task_type/task_version on task lines",
    )
    add_healthcheck_command(sub)
    add_tasks_commands(sub)
    add_dashboard_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from resilient_task.demo import run_demo

            return anyio.run(run_demo, args.database_url)
        if args.command in ("db", "tasks"):
            require_extra("postgres", f"resilient-task {args.command}")
        if args.command == "db":
            return _db(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "healthcheck":
            return run_healthcheck(args)
        if args.command == "tasks":
            return run_tasks(args)
        if args.command == "dashboard":
            return run_dashboard(args)
    except ResilientTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _db(args: argparse.Namespace) -> int:
    code = run_db_command(args)  # db current, db sql
    if code is not None:
        return code
    if not args.database_url:
        print(f"error: --database-url (or ${_DATABASE_URL}) is required", file=sys.stderr)
        return 2
    from resilient_task.adapters.postgres import db_upgrade_main
    from resilient_task.adapters.postgres.schema_check import db_check_main

    where = (args.database_url, args.schema, args.table_prefix)
    if args.db_command == "upgrade":
        code = db_upgrade_main(*where)
        if code != 0:
            return code
    return db_check_main(*where)


def _worker(args: argparse.Namespace) -> int:
    from resilient_task.environment import log_level_from_env
    from resilient_task.logsetup import configure_logging
    from resilient_task.worker import load_app, run_worker

    target, in_memory = args.app, args.in_memory
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print("error: --metrics-port must be from 0 to 65535", file=sys.stderr)
        return 2
    level = (
        logging.getLevelNamesMapping()[args.log_level]
        if args.log_level
        else log_level_from_env(os.environ)
    )
    configure_logging(level, args.log_format)
    app = load_app(target)
    if app.in_memory and not in_memory:
        raise ConfigurationError(
            f"{target} keeps its tasks in this process's memory: no producer can reach them and "
            f"they vanish when the worker exits. Set {_DATABASE_URL} (read by "
            f"ResilientTask.from_env) or give the node a database_url; pass --in-memory if an "
            "in-memory worker is what you want"
        )
    # The node loaded above is the one served (a factory is called once), until SIGTERM/SIGINT.
    return run_worker(
        target, app=app, metrics_port=args.metrics_port, metrics_host=args.metrics_host
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``resilient-task`` command line: ``demo``, ``db upgrade``, ``worker``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio

from resilient_task.errors import ResilientTaskError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resilient-task", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the payment-flow demo on one node")
    demo.add_argument(
        "--database-url",
        default=None,
        help="postgresql+psycopg://... to run on PostgreSQL (default: in-memory)",
    )

    db = sub.add_parser("db", help="database schema management")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create or upgrade the schema (idempotent)")
    upgrade.add_argument(
        "--database-url",
        default=os.environ.get("RESILIENT_TASK_DATABASE_URL"),
        help="defaults to $RESILIENT_TASK_DATABASE_URL",
    )
    upgrade.add_argument("--schema", default="public")
    upgrade.add_argument("--table-prefix", default="resilient_task_")

    worker = sub.add_parser("worker", help="run one node with your handlers until SIGTERM/SIGINT")
    worker.add_argument(
        "--app",
        required=True,
        help="module:attribute naming a ResilientTask, or a zero-argument function returning one",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from resilient_task.demo import run_demo

            return anyio.run(run_demo, args.database_url)
        if args.command == "db":
            if not args.database_url:
                print(
                    "error: --database-url (or $RESILIENT_TASK_DATABASE_URL) is required",
                    file=sys.stderr,
                )
                return 2
            from resilient_task.adapters.postgres import db_upgrade_main

            return db_upgrade_main(args.database_url, args.schema, args.table_prefix)
        if args.command == "worker":
            from resilient_task.worker import run_worker

            return run_worker(args.app)
    except ResilientTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

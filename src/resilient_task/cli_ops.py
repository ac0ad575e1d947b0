"""``resilient-task healthcheck``, ``db current`` and ``db sql``.

Exit codes (every command): 0 all good; 1 a check failed or the store could not be read (one
line on stderr, no traceback); 2 wrong usage.

``healthcheck`` checks the store (reachable, schema at the version this code needs) and,
when a broker is configured (``--kafka-bootstrap`` or
``RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS``), that the broker answers a metadata request.
``--json`` prints one object: ``{"ok": bool, "checks": {name: {"ok": bool, "detail": str}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import anyio

from resilient_task.errors import ResilientTaskError

__all__ = ["add_db_commands", "add_healthcheck_command", "run_db_command", "run_healthcheck"]

_DATABASE_URL = "RESILIENT_TASK_DATABASE_URL"
_KAFKA = "RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS"


@dataclass(frozen=True, slots=True)
class Check:
    """One health check's verdict."""

    name: str
    ok: bool
    detail: str


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get(_DATABASE_URL),
        help=f"defaults to ${_DATABASE_URL}",
    )
    parser.add_argument("--schema", default="public")
    parser.add_argument("--table-prefix", default="resilient_task_")


def add_db_commands(db_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``db current`` and ``db sql`` to the ``db`` sub-commands."""
    current = db_sub.add_parser(
        "current",
        help="print the schema version found and the one this code needs; exit 1 if they differ",
    )
    _store_options(current)
    sql = db_sub.add_parser(
        "sql", help="print the migration SQL (for DBAs who apply schema changes themselves)"
    )
    sql.add_argument("--schema", default="public")
    sql.add_argument("--table-prefix", default="resilient_task_")
    sql.add_argument(
        "--from-version", type=int, default=0, help="the version already in place (default 0)"
    )


def run_db_command(args: argparse.Namespace) -> int | None:
    """Run ``db current`` or ``db sql``; None for any other ``db`` command."""
    if args.db_command == "sql":
        from resilient_task.adapters.postgres.migration_sql import migration_sql

        try:
            script = migration_sql(
                schema=args.schema, prefix=args.table_prefix, from_version=args.from_version
            )
        except ResilientTaskError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(script)
        return 0
    if args.db_command == "current":
        if not args.database_url:
            print(f"error: --database-url (or ${_DATABASE_URL}) is required", file=sys.stderr)
            return 2
        from resilient_task.adapters.postgres.commands import db_current_main

        return db_current_main(args.database_url, args.schema, args.table_prefix)
    return None


def add_healthcheck_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``healthcheck``."""
    check = sub.add_parser(
        "healthcheck",
        help="check the store (reachable, schema current) and the broker; exit 0 or 1",
    )
    _store_options(check)
    check.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get(_KAFKA),
        help=f"host:port,... of the broker to check; defaults to ${_KAFKA} (unset: no check)",
    )
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    check.add_argument("--json", action="store_true", help="print one JSON object")


async def _store_check(url: str, schema: str, prefix: str, seconds: float) -> list[Check]:
    from resilient_task.adapters.postgres.migrations import SCHEMA_VERSION, current_version

    found: int | None = None
    problem = ""
    with anyio.move_on_after(seconds) as scope:
        try:
            found = await current_version(url, schema=schema, prefix=prefix)
        except ResilientTaskError as exc:
            problem = str(exc)
    if scope.cancelled_caught:
        problem = f"no answer within {seconds} s"
    if found is None:
        return [
            Check("store", False, problem or "unreachable"),
            Check("schema", False, "not checked: store unreachable"),
        ]
    state = f"version {found}, this code needs {SCHEMA_VERSION}"
    hint = "" if found == SCHEMA_VERSION else " (run `resilient-task db upgrade`)"
    return [
        Check("store", True, "reachable"),
        Check("schema", found == SCHEMA_VERSION, state + hint),
    ]


async def _checks(args: argparse.Namespace) -> list[Check]:
    checks: list[Check] = []
    if args.database_url:
        checks += await _store_check(
            args.database_url, args.schema, args.table_prefix, args.timeout
        )
    else:
        checks.append(Check("store", False, f"no --database-url (or ${_DATABASE_URL})"))
    if args.kafka_bootstrap:
        from resilient_task.adapters.kafka.health import broker_problem
        from resilient_task.adapters.kafka.properties import KafkaProperties

        problem = await broker_problem(
            KafkaProperties(bootstrap_servers=args.kafka_bootstrap), seconds=args.timeout
        )
        checks.append(Check("broker", problem is None, problem or "reachable"))
    return checks


def run_healthcheck(args: argparse.Namespace) -> int:
    """Run ``healthcheck``; returns the exit code."""
    if not args.timeout > 0:
        print("error: --timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        checks = anyio.run(_checks, args)
    except ResilientTaskError as exc:  # e.g. an invalid schema name or broker address
        checks = [Check("configuration", False, str(exc))]
    ok = all(c.ok for c in checks)
    if args.json:
        body = {"ok": ok, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
        print(json.dumps(body, sort_keys=True))
    else:
        for c in checks:
            print(f"{c.name}: {'ok' if c.ok else 'FAILED'} ({c.detail})")
    return 0 if ok else 1

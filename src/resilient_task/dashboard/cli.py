"""``resilient-task dashboard``: serve the dashboard over a PostgreSQL store with uvicorn.

Options: ``--database-url`` (default ``$RESILIENT_TASK_DATABASE_URL``), ``--schema``,
``--table-prefix``, ``--host`` (127.0.0.1), ``--port`` (8080), ``--read-only``,
``--no-payload``, ``--token`` (default ``$RESILIENT_TASK_DASHBOARD_TOKEN``).

Bound to anything but a loopback address, it refuses to start without a token. Exit codes:
0 stopped, 2 wrong input (no URL, no token off loopback, a missing extra), 3 the store
cannot be used.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Any

import anyio

from resilient_task.cli_tasks import (
    EXIT_OK,
    EXIT_STORE,
    EXIT_USAGE,
    open_store,
    postgres_operator,
)
from resilient_task.errors import BackendError, ConfigurationError, SchemaVersionError
from resilient_task.logtext import loggable

__all__ = ["TOKEN_ENV", "add_dashboard_command", "is_loopback", "run_dashboard"]

DATABASE_URL_ENV = "RESILIENT_TASK_DATABASE_URL"
TOKEN_ENV = "RESILIENT_TASK_DASHBOARD_TOKEN"
_MIN_TOKEN_LENGTH = 16


def add_dashboard_command(commands: Any) -> None:
    """Add ``dashboard`` to ``commands`` (``parser.add_subparsers()``)."""
    parser = commands.add_parser(
        "dashboard",
        help="serve the operators' web dashboard (needs the [dashboard] extra)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        help=f"defaults to ${DATABASE_URL_ENV}",
    )
    parser.add_argument("--schema", default="public")
    parser.add_argument("--table-prefix", default="resilient_task_")
    parser.add_argument("--host", default="127.0.0.1", help="default %(default)s")
    parser.add_argument("--port", type=int, default=8080, help="default %(default)s")
    parser.add_argument("--read-only", action="store_true", help="no actions")
    parser.add_argument("--no-payload", action="store_true", help="never show payloads")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"access token (default ${TOKEN_ENV}); required off loopback",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str, code: int) -> int:
    print(f"error: {loggable(message, 500)}", file=sys.stderr)
    return code


def run_dashboard(args: argparse.Namespace) -> int:
    """Run a parsed ``dashboard`` command until SIGINT/SIGTERM; returns the exit code."""
    if not args.database_url:
        return _fail(f"--database-url (or ${DATABASE_URL_ENV}) is required", EXIT_USAGE)
    token = args.token or None
    if not is_loopback(args.host) and token is None:
        return _fail(
            f"--host {args.host} is reachable from other machines: give --token (or "
            f"${TOKEN_ENV}) so that only people with it see and change tasks",
            EXIT_USAGE,
        )
    if token is not None and len(token) < _MIN_TOKEN_LENGTH:
        return _fail(f"the token must be at least {_MIN_TOKEN_LENGTH} characters", EXIT_USAGE)
    if not 0 < args.port < 65536:
        return _fail(f"--port must be from 1 to 65535, got {args.port}", EXIT_USAGE)
    try:
        import uvicorn
    except ImportError:
        return _fail(
            "the dashboard needs its extra: pip install 'resilient-task[dashboard]'", EXIT_USAGE
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        return anyio.run(_serve, args, token, uvicorn)
    except (SchemaVersionError, BackendError) as exc:
        return _fail(str(exc), EXIT_STORE)
    except ConfigurationError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(args: argparse.Namespace, token: str | None, uvicorn: Any) -> int:
    from resilient_task.dashboard.app import create_app
    from resilient_task.dashboard.postgres_stats import PostgresDashboardStats

    # open_store checks the schema: a missing or outdated one stops it here, not on a page.
    async with open_store(args, "resilient-task-dashboard") as dao:
        app = create_app(
            operator=postgres_operator(dao),
            stats=PostgresDashboardStats(dao=dao),
            read_only=args.read_only,
            show_payload=not args.no_payload,
            token=token,
        )
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            access_log=False,  # the app logs requests itself, without query strings
            log_config=None,
            server_header=False,
        )
        logging.getLogger("resilient_task.dashboard").info(
            "dashboard on http://%s:%d/ (%s%s)",
            args.host,
            args.port,
            "read-only" if args.read_only else "actions enabled",
            ", token required" if token else "",
        )
        await uvicorn.Server(config).serve()
    return EXIT_OK

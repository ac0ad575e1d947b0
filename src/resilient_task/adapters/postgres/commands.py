"""Synchronous entry points for the command line (``resilient-task db ...``)."""

from __future__ import annotations

import functools
import sys

import anyio

from resilient_task.adapters.postgres.engine import safe_url
from resilient_task.adapters.postgres.migrations import (
    SCHEMA_VERSION,
    current_version,
    upgrade_steps,
)
from resilient_task.adapters.postgres.schema import DEFAULT_PREFIX, DEFAULT_SCHEMA
from resilient_task.errors import ResilientTaskError

__all__ = ["db_current_main", "db_upgrade_main"]


def db_upgrade_main(
    database_url: str, schema: str = DEFAULT_SCHEMA, prefix: str = DEFAULT_PREFIX
) -> int:
    """Create or upgrade the tables; print what was done. Returns the process exit code.

    0 when the schema is at the current version afterwards, 1 on any failure (the reason is
    printed to stderr; nothing is half-applied).
    """
    run = functools.partial(upgrade_steps, database_url, schema=schema, prefix=prefix)
    where = f"{safe_url(database_url)} schema {schema!r} prefix {prefix!r}"
    try:
        version, applied = anyio.run(run)
    except ResilientTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied migration {migration.version}: {migration.description}")
    state = "upgraded to" if applied else "already at"
    print(f"resilient-task tables ({where}) {state} version {version}")
    return 0


def db_current_main(
    database_url: str, schema: str = DEFAULT_SCHEMA, prefix: str = DEFAULT_PREFIX
) -> int:
    """Print the schema version found; exit code 0 when current, 1 when not (or on failure)."""
    run = functools.partial(current_version, database_url, schema=schema, prefix=prefix)
    try:
        found = anyio.run(run)
    except ResilientTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"schema version {found} (this code needs {SCHEMA_VERSION})")
    return 0 if found == SCHEMA_VERSION else 1

"""The migration SQL as one script, for teams whose DBAs apply schema changes themselves.

``resilient-task db sql`` prints it. The script does what ``db upgrade`` does, in one
transaction, from a given version (0: an empty database) up to :data:`SCHEMA_VERSION`: it
creates the schema and the version table when missing, runs each missing migration and
records it. Its output is what ``db upgrade`` would run, statement for statement.
"""

from __future__ import annotations

from resilient_task.adapters.postgres.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    _Names,
)
from resilient_task.adapters.postgres.schema import DEFAULT_PREFIX, DEFAULT_SCHEMA, PostgresSettings
from resilient_task.errors import ValidationError

__all__ = ["migration_sql"]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def migration_sql(
    *, schema: str = DEFAULT_SCHEMA, prefix: str = DEFAULT_PREFIX, from_version: int = 0
) -> str:
    """The SQL script upgrading ``schema``/``prefix`` from ``from_version`` to the latest.

    Raises:
        ConfigurationError: ``schema`` or ``prefix`` is not a valid identifier.
        ValidationError: ``from_version`` is negative or newer than this code.
    """
    PostgresSettings(schema=schema, prefix=prefix)  # validates the identifiers
    if not 0 <= from_version <= SCHEMA_VERSION:
        raise ValidationError(
            f"--from-version must be from 0 to {SCHEMA_VERSION}, got {from_version}"
        )
    n = _Names(schema, prefix)
    version_table = n.table("schema_version")
    lines = [
        f"-- resilient-task schema {schema!r}, prefix {prefix!r}: version {from_version} -> "
        f"{SCHEMA_VERSION}",
        "BEGIN;",
        f'CREATE SCHEMA IF NOT EXISTS "{schema}";',
        f"CREATE TABLE IF NOT EXISTS {version_table} ("
        f"version integer CONSTRAINT {n('schema_version_pkey')} PRIMARY KEY, "
        "description text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now());",
    ]
    for migration in MIGRATIONS:
        if migration.version <= from_version:
            continue
        lines.append(f"-- migration {migration.version}: {migration.description}")
        lines.extend(f"{statement};" for statement in migration.statements(n))
        lines.append(
            f"INSERT INTO {version_table} (version, description) VALUES "
            f"({migration.version}, {_literal(migration.description)});"
        )
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"

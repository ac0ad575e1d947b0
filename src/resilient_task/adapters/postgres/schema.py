"""Settings and the SQLAlchemy Core tables of the PostgreSQL store.

Three tables, named ``<prefix><name>`` in a configurable schema (defaults ``public`` and
``resilient_task_``)::

    tasks           one row per task; status stored by name, readable with plain SQL;
                    last_error and last_traceback (migration 2) say why the last attempt failed
                    index (status, next_event_time): serves every poll, claim and clean-up
                    unique partial index (type, unique_key) WHERE unique_key IS NOT NULL
    task_data       the payload, only for non-empty payloads; zlib-compressed above a size
                    threshold (data_format 1) or raw (0); deleted with its task (cascade)
    schema_version  one row per applied migration

Deduplication lives in the two unique indexes of ``tasks`` (primary key and the partial
index), so a single ``INSERT ... ON CONFLICT DO NOTHING`` is race-free: a concurrent insert of
the same key waits for the first one's transaction and then inserts nothing.

The DDL itself is in :mod:`~resilient_task.adapters.postgres.migrations`; these tables mirror
it for queries, and a test compares the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from resilient_task.errors import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "DEFAULT_SCHEMA", "PostgresSettings", "Tables"]

DEFAULT_SCHEMA = "public"
DEFAULT_PREFIX = "resilient_task_"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_SCHEMA_LENGTH = 63
_MAX_PREFIX_LENGTH = 40  # the longest derived name, "<prefix>task_data_task_id_fkey", fits in 63


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresSettings:
    """Where the tables live and how payloads are stored.

    Args:
        schema: PostgreSQL schema of the tables (created by the migrations if missing).
        prefix: prefix of every table and index name; lower-case letters, digits and ``_``.
        compression_threshold: payloads longer than this many bytes are zlib-compressed
            (kept raw when compression does not make them smaller); ``None`` disables it.
        compression_level: zlib level 1 (fastest) to 9 (smallest).
        prepared_statements: prepare the hot statements (add, grab, complete) once per
            connection. Turn it off behind a pooler that cannot keep prepared statements
            (PgBouncer in transaction mode before 1.21).
        lock_timeout: the longest a statement waits for a row lock another session holds
            (PostgreSQL's ``lock_timeout``) before it fails as a transient
            :class:`~resilient_task.errors.BackendError` (retried, or left to the next
            poll): a node frozen between its completion UPDATE and its COMMIT cannot stall
            the others. ``None`` waits for ever.
        idle_in_transaction_timeout: a session idle inside a transaction for this long is
            ended by the server (``idle_in_transaction_session_timeout``): its transaction
            rolls back and its row locks are released, so a frozen node holds them no
            longer than this. Keep it above the longest pause a transactional processor
            makes between two statements (its processing timeout bounds that: past its
            deadline the run is fenced anyway). ``None`` never ends such a session.

    Both timeouts are set on every connection the DAO's engine opens after the DAO is built
    (one ``set_config`` per new connection): a DAO built on your engine sets them on your
    engine's new connections too.
    """

    schema: str = DEFAULT_SCHEMA
    prefix: str = DEFAULT_PREFIX
    compression_threshold: int | None = 1024
    compression_level: int = 6
    prepared_statements: bool = True
    lock_timeout: timedelta | None = timedelta(seconds=10)
    idle_in_transaction_timeout: timedelta | None = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.schema) or len(self.schema) > _MAX_SCHEMA_LENGTH:
            raise ConfigurationError(
                f"schema must be a lower-case identifier ([a-z_][a-z0-9_]*, at most "
                f"{_MAX_SCHEMA_LENGTH} characters), got {self.schema!r}"
            )
        if self.prefix and (
            not _IDENTIFIER.fullmatch(self.prefix) or len(self.prefix) > _MAX_PREFIX_LENGTH
        ):
            raise ConfigurationError(
                f"prefix must be empty or a lower-case identifier ([a-z_][a-z0-9_]*, at most "
                f"{_MAX_PREFIX_LENGTH} characters), got {self.prefix!r}"
            )
        if self.compression_threshold is not None and self.compression_threshold < 0:
            raise ConfigurationError(
                f"compression_threshold must be >= 0 or None, got {self.compression_threshold}"
            )
        if not 1 <= self.compression_level <= 9:
            raise ConfigurationError(
                f"compression_level must be from 1 to 9, got {self.compression_level}"
            )
        for name in ("lock_timeout", "idle_in_transaction_timeout"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, timedelta) or not _MIN_TIMEOUT <= value <= _MAX_TIMEOUT
            ):
                raise ConfigurationError(
                    f"{name} must be a timedelta from 1 ms to 24 days, or None; got {value!r}"
                )

    def session_options(self) -> dict[str, str]:
        """The PostgreSQL settings every session of this store gets (name -> value in ms)."""
        options = {}
        if self.lock_timeout is not None:
            options["lock_timeout"] = _milliseconds(self.lock_timeout)
        if self.idle_in_transaction_timeout is not None:
            options["idle_in_transaction_session_timeout"] = _milliseconds(
                self.idle_in_transaction_timeout
            )
        return options


_MIN_TIMEOUT = timedelta(milliseconds=1)
_MAX_TIMEOUT = timedelta(milliseconds=2**31 - 1)  # PostgreSQL's largest timeout, ~24.8 days


def _milliseconds(value: timedelta) -> str:
    return str(value // _MIN_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Tables:
    """The Core tables for one schema and prefix."""

    tasks: sa.Table
    task_data: sa.Table
    schema_version: sa.Table

    @classmethod
    def build(cls, settings: PostgresSettings) -> Tables:
        """Define the tables of ``settings.schema`` with ``settings.prefix``."""
        metadata = sa.MetaData(schema=settings.schema)
        p = settings.prefix
        tasks = sa.Table(
            f"{p}tasks",
            metadata,
            sa.Column("id", sa.Uuid(), primary_key=True),
            sa.Column("type", sa.Text(), nullable=False),
            sa.Column("sub_type", sa.Text()),
            sa.Column("status", sa.Text(), nullable=False),
            sa.Column("version", sa.BigInteger(), nullable=False),
            sa.Column("priority", sa.SmallInteger(), nullable=False),
            sa.Column("next_event_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("processing_tries_count", sa.Integer(), nullable=False),
            sa.Column("recovery_count", sa.Integer(), nullable=False),
            sa.Column("processing_node", sa.Text()),
            sa.Column("last_error", sa.Text()),
            sa.Column("unique_key", sa.Text()),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_traceback", sa.Text()),  # migration 2
        )
        task_data = sa.Table(
            f"{p}task_data",
            metadata,
            sa.Column(
                "task_id",
                sa.Uuid(),
                sa.ForeignKey(tasks.c.id, ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("data_format", sa.SmallInteger(), nullable=False),
            sa.Column("data", sa.LargeBinary(), nullable=False),
        )
        schema_version = sa.Table(
            f"{p}schema_version",
            metadata,
            sa.Column("version", sa.Integer(), primary_key=True),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        )
        return cls(tasks, task_data, schema_version)

"""Shipped migrations are pinned by the sha256 of their SQL: editing one fails here.

A database that already ran migration N never runs it again, so an edited migration N would
leave old and new databases with different schemas under the same version number. Change the
schema with a new migration instead; pin it here once it is final (the failure message gives
the line to add).
"""

from __future__ import annotations

import hashlib

import pytest

from resilient_task.adapters.postgres.migrations import MIGRATIONS, Migration, _Names
from resilient_task.adapters.postgres.schema import DEFAULT_PREFIX, DEFAULT_SCHEMA

PINS: dict[int, str] = {
    1: "052526c61bd417f4584cc6e6e623eb4a0e222495e6c25027a16f60de64a4ccf5",
    2: "2983ab10950909101caed561c7ecdeae254f43b633a5446393e6301adb293b73",
}
"""Migration version -> sha256 of its SQL for the default schema and prefix."""

HERE = "tests/unit/test_migration_pins.py"


def sql_digest(migration: Migration) -> str:
    """The sha256 of a migration's statements, rendered for the default schema and prefix."""
    sql = ";\n".join(migration.statements(_Names(DEFAULT_SCHEMA, DEFAULT_PREFIX)))
    return hashlib.sha256(sql.encode()).hexdigest()


def pin_problems(migrations: tuple[Migration, ...], pins: dict[int, str]) -> list[str]:
    """Why ``migrations`` do not match ``pins``: one sentence each."""
    problems = []
    for migration in migrations:
        digest, pinned = sql_digest(migration), pins.get(migration.version)
        if pinned is None:
            problems.append(
                f"migration {migration.version} has no pin: once it is final, add "
                f'`{migration.version}: "{digest}",` to PINS in {HERE}'
            )
        elif digest != pinned:
            problems.append(
                f"migration {migration.version} was edited after it shipped (its SQL hash is "
                f"{digest}, pinned {pinned}): databases that ran it keep the old schema. Revert "
                f"the edit and add a new migration instead"
            )
    shipped = {m.version for m in migrations}
    problems += [
        f"migration {version} is pinned but gone: a shipped migration is never removed"
        for version in sorted(set(pins) - shipped)
    ]
    return problems


def test_every_migration_matches_its_pin() -> None:
    assert pin_problems(MIGRATIONS, PINS) == []


def test_migrations_are_numbered_1_2_3_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def _edited(statement: str) -> Migration:
    first = MIGRATIONS[0]
    return Migration(
        first.version, first.description, lambda n: [*first.statements(n)[:-1], statement]
    )


@pytest.mark.parametrize(
    "statement",
    [
        'ALTER TABLE "public"."resilient_task_task_data" ALTER COLUMN data SET STORAGE MAIN',
        "SELECT 1",
    ],
)
def test_an_edited_migration_is_refused_with_add_a_new_migration_instead(statement: str) -> None:
    [problem] = pin_problems((_edited(statement), *MIGRATIONS[1:]), PINS)
    assert problem.startswith("migration 1 was edited after it shipped")
    assert problem.endswith("add a new migration instead")


def test_a_new_migration_without_a_pin_is_refused_with_the_line_to_add() -> None:
    new = Migration(len(MIGRATIONS) + 1, "new", lambda n: [f"SELECT 1 FROM {n.table('tasks')}"])
    [problem] = pin_problems((*MIGRATIONS, new), PINS)
    assert f'add `{new.version}: "{sql_digest(new)}",` to PINS' in problem


def test_a_removed_migration_is_refused() -> None:
    [problem] = pin_problems(MIGRATIONS[:-1], PINS)
    assert (
        problem
        == f"migration {len(MIGRATIONS)} is pinned but gone: a shipped migration is never removed"
    )

"""Writing a batch of compare-and-set changes: one UPDATE and one DELETE per round.

Each statement joins the batch (``unnest`` arrays) on ``id`` and the expected ``version`` and
returns the ids it wrote, so every change learns whether it won. A second change of the same
task in one batch must see the first one's result, so it goes into a later round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from resilient_task.adapters.postgres.codec import task_columns
from resilient_task.adapters.postgres.driver import Connection, fetch_scalars
from resilient_task.adapters.postgres.statements import CHANGE_COLUMNS, Statements
from resilient_task.ports.task_dao import TaskChange

__all__ = ["apply_batch"]


def _rounds(changes: Sequence[TaskChange]) -> list[list[int]]:
    """Indexes of ``changes`` in rounds where each task id occurs at most once, in order."""
    rounds: list[list[int]] = []
    latest: dict[UUID, int] = {}
    for i, change in enumerate(changes):
        r = latest[change.task.id] = latest.get(change.task.id, -1) + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(i)
    return rounds


def _params(changes: Sequence[TaskChange], indexes: list[int], *, delete: bool) -> dict[str, Any]:
    params: dict[str, list[Any]] = {
        "c_id": [changes[i].task.id for i in indexes],
        "c_expected": [changes[i].expected_version for i in indexes],
    }
    if not delete:
        columns = task_columns([changes[i].task for i in indexes], CHANGE_COLUMNS)
        params |= {f"c_{c}": v for c, v in columns.items()}
    return params


async def apply_batch(
    conn: Connection, sql: Statements, changes: Sequence[TaskChange]
) -> list[bool]:
    """Apply ``changes`` on ``conn`` (not committed); ``True`` where written, in order."""
    written = [False] * len(changes)
    for round_ in _rounds(changes):
        done: set[UUID] = set()
        for delete, statement in ((False, sql.update), (True, sql.delete)):
            indexes = [i for i in round_ if changes[i].delete is delete]
            if indexes:
                params = _params(changes, indexes, delete=delete)
                done.update(await fetch_scalars(conn, statement, params))
        for i in round_:
            written[i] = changes[i].task.id in done
    return written

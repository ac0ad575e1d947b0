"""Inserting a batch of tasks: one statement for rows and payloads, then the duplicates' owners.

A batch is first deduplicated in order (a later task with an id or ``(type, unique_key)``
already taken by an earlier one reports that one's outcome). The rest goes out in ONE
statement: ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` into ``tasks`` with the payloads
inserted in a data-modifying CTE for the rows that were actually created. Tasks not created
collided with a stored task; a second query finds its id. If that task vanished in between
(deleted by the cleaner), the insert is simply tried again.

Rows go in sorted by ``(type, unique_key, id)``, not in the caller's order. An insert that
meets a key another uncommitted insert has just written waits for that transaction; two
batches taking overlapping keys in opposite orders would wait for each other, and PostgreSQL
would abort one as a deadlock (about one concurrent ``add_tasks`` in five did). In one order
the later batch just waits. (A caller's own ``transaction=`` may already hold other rows; the
order of its statements is the caller's to keep.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from resilient_task.adapters.postgres.codec import PayloadCodec, task_columns, task_params
from resilient_task.adapters.postgres.driver import Connection, fetch_scalars
from resilient_task.adapters.postgres.statements import BATCH_INSERT_COLUMNS, Inserts, Statements
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import BackendError
from resilient_task.ports.task_dao import InsertOutcome

__all__ = ["insert_batch"]

_ATTEMPTS = 3
_Key = tuple[str, str]


def _key(task: Task) -> _Key | None:
    return None if task.unique_key is None else (task.type, task.unique_key)


def _lock_order(task: Task) -> tuple[str, str, int]:
    """The order rows are inserted in: the same in every batch, so batches never deadlock."""
    return task.type, task.unique_key or "", task.id.int


def _leaders(tasks: Sequence[Task]) -> list[int]:
    """For each task, the index of the first earlier task it duplicates (or its own)."""
    by_id: dict[UUID, int] = {}
    by_key: dict[_Key, int] = {}
    leaders = []
    for i, task in enumerate(tasks):
        key = _key(task)
        leader = by_id.get(task.id)
        if leader is None and key is not None:
            leader = by_key.get(key)
        if leader is None:
            leader = by_id[task.id] = i
            if key is not None:
                by_key[key] = i
        leaders.append(leader)
    return leaders


async def _insert(
    conn: Connection, sql: Inserts, codec: PayloadCodec, tasks: list[Task]
) -> set[UUID]:
    if len(tasks) == 1:
        return await _insert_one(conn, sql, codec, tasks[0])
    columns = task_columns(tasks, BATCH_INSERT_COLUMNS)
    params: dict[str, list[Any]] = {f"t_{c}": v for c, v in columns.items()}
    with_data = [t for t in tasks if t.data]
    params["d_task_id"] = [t.id for t in with_data]
    params["d_data_format"], params["d_data"] = await codec.encode_all([t.data for t in with_data])
    return set(await fetch_scalars(conn, sql.batch, params))


async def _insert_one(conn: Connection, sql: Inserts, codec: PayloadCodec, task: Task) -> set[UUID]:
    params = task_params(task)
    params["d_data_format"], params["d_data"] = (
        await codec.encode(task.data) if task.data else (None, None)
    )
    return set(await fetch_scalars(conn, sql.one, params))


async def _owners(
    conn: Connection, sql: Statements, tasks: list[Task]
) -> tuple[set[UUID], dict[_Key, UUID]]:
    keys = [k for k in map(_key, tasks) if k is not None]
    params = {
        "ids": [t.id for t in tasks],
        "k_type": [k[0] for k in keys],
        "k_key": [k[1] for k in keys],
    }
    ids: set[UUID] = set()
    owners: dict[_Key, UUID] = {}
    for task_id, type_, unique_key in (await conn.execute(sql.existing, params)).all():
        ids.add(task_id)
        if unique_key is not None:
            owners[(type_, unique_key)] = task_id
    return ids, owners


async def insert_batch(
    conn: Connection,
    sql: Statements,
    codec: PayloadCodec,
    tasks: Sequence[Task],
    inserts: Inserts | None = None,
) -> list[InsertOutcome]:
    """Insert validated ``tasks`` on ``conn`` (not committed); outcomes in the same order.

    ``inserts``: the insert statements, by default ``sql.inserts``; when they NOTIFY
    (``Statements.notifying_inserts``) the created due tasks' outcomes say ``triggered``.
    """
    inserts = inserts or sql.inserts
    if len(tasks) == 1:  # a single add: nothing to deduplicate or order
        leaders = pending = [0]
    else:
        leaders = _leaders(tasks)
        pending = sorted(set(leaders), key=lambda i: _lock_order(tasks[i]))
    outcomes: dict[int, InsertOutcome] = {}
    for _ in range(_ATTEMPTS):
        created = await _insert(conn, inserts, codec, [tasks[i] for i in pending])
        for i in pending:
            if tasks[i].id in created:
                due = inserts.notify and tasks[i].status is TaskStatus.SUBMITTED
                outcomes[i] = InsertOutcome(tasks[i].id, created=True, triggered=due)
        missing = [i for i in pending if i not in outcomes]
        if not missing:
            break
        ids, owners = await _owners(conn, sql, [tasks[i] for i in missing])
        for i in missing:
            task, key = tasks[i], _key(tasks[i])
            owner = task.id if task.id in ids else owners.get(key) if key else None
            if owner is not None:
                outcomes[i] = InsertOutcome(owner, created=False)
        pending = [i for i in missing if i not in outcomes]
        if not pending:
            break
    else:
        raise BackendError(
            f"{len(pending)} task(s) kept colliding with tasks deleted meanwhile; try again",
            transient=True,
        )
    return [
        outcomes[leader] if leader == i else InsertOutcome(outcomes[leader].task_id, False)
        for i, leader in enumerate(leaders)
    ]

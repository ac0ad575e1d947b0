"""The SQL of the task store, as SQLAlchemy Core statements built once per table set.

Batches travel as arrays: ``unnest(:ids, :versions, ...) AS v(id, version, ...)`` joins a
whole batch in one statement whose text does not depend on the batch size, so the server
plans (and psycopg prepares) it once. Every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from resilient_task.adapters.postgres.driver import DriverStatement
from resilient_task.adapters.postgres.notify_payloads import MAX_PAYLOAD_BYTES, PAYLOAD_VERSION
from resilient_task.adapters.postgres.schema import Tables
from resilient_task.domain.task import FINAL_STATUSES, TaskStatus

__all__ = [
    "BATCH_INSERT_COLUMNS",
    "CHANGE_COLUMNS",
    "INSERT_COLUMNS",
    "NEW_TASK_CONSTANTS",
    "Inserts",
    "Statements",
]

INSERT_COLUMNS = (
    "id", "type", "sub_type", "status", "version", "priority", "next_event_time",
    "processing_tries_count", "recovery_count", "processing_node", "last_error", "unique_key",
    "created_at", "updated_at",
)  # fmt: skip
"""``tasks`` columns written by an insert (a single one binds each as ``t_<column>``).
``last_traceback`` is not one: a new task has none (``check_new``), and the column is NULL."""

NEW_TASK_CONSTANTS: dict[str, int | None] = {
    "version": 0, "processing_tries_count": 0, "recovery_count": 0, "processing_node": None,
    "last_error": None,
}  # fmt: skip
"""Columns every new task has at these values (``check_new``): a batch insert writes them as
constants instead of arrays, which psycopg would dump element by element."""

BATCH_INSERT_COLUMNS = tuple(c for c in INSERT_COLUMNS if c not in NEW_TASK_CONSTANTS)
"""``tasks`` columns a batch insert binds as the arrays ``t_<column>``."""

CHANGE_COLUMNS = (
    "status", "version", "priority", "next_event_time", "processing_tries_count",
    "recovery_count", "processing_node", "last_error", "last_traceback", "updated_at",
)  # fmt: skip
"""``tasks`` columns a :class:`TaskChange` writes, each bound as the array ``c_<column>``."""


def _unnest(name: str, columns: Mapping[str, Any]) -> Any:
    """``unnest(:p_a, :p_b, ...) AS name(a, b, ...)``, one typed array parameter per column."""
    params = [sa.bindparam(f"{name}_{c}", type_=pg.ARRAY(t)) for c, t in columns.items()]
    return sa.func.unnest(*params).table_valued(*columns).render_derived(name=name)


def _constant(value: int | None, type_: Any) -> Any:
    return sa.cast(sa.null(), type_) if value is None else sa.literal(value, type_)


def _returned(t: sa.Table, channel: str | None) -> list[sa.Column[Any]]:
    """What an insert returns: the id, and for a NOTIFY the trigger's fields."""
    if channel is None:
        return [t.c.id]
    return [t.c.id, t.c.status, t.c.version, t.c.type, t.c.sub_type, t.c.priority]


def _status(status: TaskStatus) -> sa.BindParameter[str]:
    return sa.literal(status.value, sa.Text())


_HEADER = f"[{PAYLOAD_VERSION},"
_LIMIT = MAX_PAYLOAD_BYTES - len(_HEADER) - len("]")
"""Bytes of a payload left for its references and the commas between them."""
_LONGEST = 3100
"""Bytes of the longest reference the insert's NOTIFY can write, and more: a type and a
sub-type of 250 characters each escaped by ``to_json`` as ``\u001f`` (6 bytes; a character
takes at most 4 in UTF-8), 32 hex digits, a bigint version, a priority, quotes and commas
(3,069)."""


def _concat(*parts: str | Any) -> Any:
    """``a || b || ...``; a ``str`` part is SQL (a literal written out)."""
    items = [sa.literal_column(p) if isinstance(p, str) else p for p in parts]
    result = items[0]
    for item in items[1:]:
        result = result.op("||")(item)
    return result


@dataclass(frozen=True, slots=True)
class Inserts:
    """The insert statements (a batch, and one task), and whether they NOTIFY the new tasks."""

    batch: DriverStatement
    one: DriverStatement
    notify: bool


class Statements:
    """The statements over one :class:`Tables`: Core, or compiled for psycopg (hot path)."""

    def __init__(self, tables: Tables, *, prepare: bool = True) -> None:
        self.tables = tables
        t, d = tables.tasks, tables.task_data
        self.task_columns = tuple(t.c)
        self.with_data = sa.select(t, d.c.data_format, d.c.data).outerjoin(d, d.c.task_id == t.c.id)
        self.get_task = self.with_data.where(t.c.id == sa.bindparam("id"))
        self._prepare = prepare
        # The hot path, run on psycopg directly and prepared (see ``driver``).
        self.inserts = self._inserts(None)
        self.grab = DriverStatement.compile(self._grab(), prepare=prepare)
        self.grab_one = DriverStatement.compile(self._grab(one=True), prepare=prepare)
        self.update = DriverStatement.compile(self._update(), prepare=prepare)
        self.delete = DriverStatement.compile(self._delete(), prepare=prepare)
        # The rest, through SQLAlchemy.
        self.existing = self._existing()
        self.claim_due = self._claim_due()
        self.resubmit_overdue = self._resubmit_overdue()
        self.find_overdue = (
            sa.select(t)
            .where(t.c.status == sa.bindparam("status"), t.c.next_event_time < sa.bindparam("now"))
            .order_by(t.c.next_event_time, t.c.priority, t.c.id)
            .limit(sa.bindparam("limit"))
            # A row another session is changing (a node frozen before its COMMIT) is left
            # out: the resumer's update of it would wait for that node. FOR NO KEY UPDATE is
            # what the update would take, so rows locked only by key-share readers stay in.
            .with_for_update(skip_locked=True, key_share=True)
        )
        self.count_by_status = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        self.global_lock, self.grab_eligible = self._global_lock(), self._grab_eligible()
        self.hold_submitted = self._hold_submitted()
        self.delete_finished = self._delete_finished()

    def _inserts(self, channel: str | None) -> Inserts:
        prepare = self._prepare
        return Inserts(
            DriverStatement.compile(self._insert(channel), prepare=prepare),
            DriverStatement.compile(self._insert_one(channel), prepare=prepare),
            notify=channel is not None,
        )

    def notifying_inserts(self, channel: str) -> Inserts:
        """The inserts, each also NOTIFYing ``channel`` of the due tasks it created.

        ``pg_notify`` runs in the insert's own statement, so the trigger costs no round trip
        of its own and PostgreSQL delivers it when the insert commits (the caller's COMMIT,
        inside a caller's transaction; never after a rollback). The payloads are those
        ``notify_payloads`` reads: ``[1,[<id hex>, version, type, sub_type, priority],...]``,
        texts escaped by ``to_json`` (non-ASCII characters as they are, where Python's encoder
        escapes them: the same JSON values), grouped into payloads under PostgreSQL's limit of
        8000 bytes by the running sum of the references' lengths: a reference starting beyond
        ``k`` times (limit - the longest possible reference) goes into payload ``k``, so no
        payload can be longer.
        Only SUBMITTED tasks are referenced: a WAITING one is due later (``claim_due``).
        """
        return self._inserts(channel)

    def _with_notify(self, inserted: Any, channel: str | None) -> sa.Select[Any]:
        """``SELECT id FROM inserted``, and the NOTIFY of its due rows on ``channel``."""
        if channel is None:
            return sa.select(inserted.c.id)
        i = inserted
        ref = _concat(
            "'[\"'", sa.func.encode(sa.func.uuid_send(i.c.id), sa.literal_column("'hex'")),
            "'\",'", sa.cast(i.c.version, sa.Text()),
            "','", sa.cast(sa.func.to_json(i.c.type), sa.Text()),
            "','", sa.func.coalesce(sa.cast(sa.func.to_json(i.c.sub_type), sa.Text()),
                                    sa.literal_column("'null'")),
            "','", sa.cast(i.c.priority, sa.Text()), "']'",
        )  # fmt: skip
        r = (
            sa.select(ref.label("ref"))
            .where(i.c.status == _status(TaskStatus.SUBMITTED))
            .subquery("r")
        )
        size = sa.func.octet_length(r.c.ref) + sa.literal_column("1")  # with its comma
        # Where each reference starts in the concatenation, in any order (no sort).
        start = sa.func.sum(size).over(rows=(None, 0)) - size
        refs = sa.select(r.c.ref, start.label("start")).cte("refs")
        # A payload takes the references starting in a span of (_LIMIT + 1 - _LONGEST), and
        # the last one may reach _LONGEST beyond: at most _LIMIT - 1 bytes with the commas.
        chunk = sa.func.div(refs.c.start, sa.literal_column(str(_LIMIT + 1 - _LONGEST)))
        payload = sa.func.concat(
            sa.literal_column(f"'{_HEADER}'"),
            sa.func.string_agg(refs.c.ref, sa.literal_column("','")),
            sa.literal_column("']'"),
        )
        notified = (
            sa.select(
                sa.func.pg_notify(sa.bindparam("notify_channel", channel, sa.Text()), payload)
            )
            .group_by(chunk)
            .cte("notified")
        )
        # A plain SELECT in WITH runs only if read: the count reads every NOTIFY.
        sent = sa.select(sa.func.count()).select_from(notified).scalar_subquery()
        return sa.select(i.c.id, sent.label("notified"))

    def _insert(self, channel: str | None = None) -> sa.Select[Any]:
        t, d = self.tables.tasks, self.tables.task_data
        v = _unnest("t", {c: t.c[c].type for c in BATCH_INSERT_COLUMNS})
        values = [
            v.c[c] if c in BATCH_INSERT_COLUMNS else _constant(NEW_TASK_CONSTANTS[c], t.c[c].type)
            for c in INSERT_COLUMNS
        ]
        inserted = (
            pg.insert(t)
            .from_select(list(INSERT_COLUMNS), sa.select(*values))
            .on_conflict_do_nothing()  # any unique index: the id or (type, unique_key)
            .returning(*_returned(t, channel))
            .cte("inserted")
        )
        p = _unnest("d", {c.name: c.type for c in d.c})
        payloads = (
            sa.insert(d)
            .from_select(
                ["task_id", "data_format", "data"],
                sa.select(p.c.task_id, p.c.data_format, p.c.data).join(
                    inserted, inserted.c.id == p.c.task_id
                ),
            )
            .cte("inserted_data")
        )
        return self._with_notify(inserted, channel).add_cte(payloads)

    def _insert_one(self, channel: str | None = None) -> sa.Select[Any]:
        """:meth:`_insert` for one task, with scalar parameters.

        The parameters are ``t_<column>``, ``d_data_format`` and ``d_data`` (``NULL`` for an
        empty payload: no ``task_data`` row). A single add is a round trip of its own, and
        dumping 17 one-element arrays cost more client CPU than the rest of the call.
        """
        t, d = self.tables.tasks, self.tables.task_data
        inserted = (
            pg.insert(t)
            .values({c: sa.bindparam(f"t_{c}", type_=t.c[c].type) for c in INSERT_COLUMNS})
            .on_conflict_do_nothing()
            .returning(*_returned(t, channel))
            .cte("inserted")
        )
        data = sa.cast(sa.bindparam("d_data"), sa.LargeBinary())
        payload = (
            sa.insert(d)
            .from_select(
                ["task_id", "data_format", "data"],
                sa.select(
                    inserted.c.id, sa.bindparam("d_data_format", type_=d.c.data_format.type), data
                ).where(data.is_not(None)),
            )
            .cte("inserted_data")
        )
        return self._with_notify(inserted, channel).add_cte(payload)

    def _existing(self) -> sa.CompoundSelect[Any]:
        """Stored tasks holding any of the ids ``:ids`` or keys ``(:k_type, :k_key)``."""
        t = self.tables.tasks
        k = _unnest("k", {"type": sa.Text(), "key": sa.Text()})
        by_id = sa.select(t.c.id, t.c.type, t.c.unique_key).where(
            t.c.id == sa.any_(sa.bindparam("ids", type_=pg.ARRAY(sa.Uuid())))
        )
        by_key = sa.select(t.c.id, t.c.type, t.c.unique_key).join(
            k, sa.and_(t.c.type == k.c.type, t.c.unique_key == k.c.key)
        )
        return sa.union_all(by_id, by_key)

    def _grab(self, *, one: bool = False) -> sa.Select[Any]:
        """The grab of a batch (array parameters, ``unnest``) or, ``one``, of a single task.

        A single task's parameters are scalars: dumping four one-element arrays cost more
        client CPU than the rest of the grab's parameters and rows.
        """
        t, d = self.tables.tasks, self.tables.task_data
        columns: dict[str, Any] = {
            "id": sa.Uuid(),
            "version": sa.BigInteger(),
            "node": sa.Text(),
            "deadline": sa.DateTime(timezone=True),
        }
        g: dict[str, Any]
        if one:
            g = {c: sa.bindparam(f"g_{c}", type_=k) for c, k in columns.items()}
        else:
            v = _unnest("g", columns)
            g = {c: v.c[c] for c in columns}
        # The row as it was before this UPDATE (the snapshot's): its updated_at is when the
        # task became SUBMITTED. Where the version check passes, no write came in between.
        before = t.alias("before")
        grabbed = (
            sa.update(t)
            .where(
                t.c.id == g["id"],
                before.c.id == g["id"],
                t.c.version == g["version"],
                # ``|| ''`` keeps the planner off the poll index (status, next_event_time): on a
                # busy queue most of its SUBMITTED entries are dead, and a plan that scans them
                # took 11 ms where the primary-key lookups of the batch take 0.05 ms.
                t.c.status.concat(sa.literal_column("''")) == _status(TaskStatus.SUBMITTED),
            )
            .values(
                status=_status(TaskStatus.PROCESSING),
                version=t.c.version + 1,
                next_event_time=g["deadline"],
                processing_node=g["node"],
                processing_tries_count=t.c.processing_tries_count + 1,
                updated_at=sa.bindparam("now", type_=sa.DateTime(timezone=True)),
            )
            .returning(*t.c, before.c.updated_at.label("queued_at"))
            .cte("grabbed")
        )
        return sa.select(grabbed, d.c.data_format, d.c.data).outerjoin(
            d, d.c.task_id == grabbed.c.id
        )

    def _global_lock(self) -> sa.Select[Any]:
        """Serialize limited grabs of one key until COMMIT (``:lock`` names it)."""
        key = sa.func.hashtextextended(sa.bindparam("lock", type_=sa.Text()), 0)
        return sa.select(sa.func.pg_advisory_xact_lock(key))

    def _grab_eligible(self) -> sa.Select[Any]:
        """SUBMITTED tasks of ``:ids`` of ``:types``, with the PROCESSING count of the types."""
        t = self.tables.tasks
        types = sa.bindparam("types", type_=pg.ARRAY(sa.Text()))
        running = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.status == _status(TaskStatus.PROCESSING), t.c.type == sa.any_(types))
            .scalar_subquery()
        )
        return (
            sa.select(t.c.id, t.c.version, running.label("running"))
            .where(
                t.c.id == sa.any_(sa.bindparam("ids", type_=pg.ARRAY(sa.Uuid()))),
                t.c.status.concat(sa.literal_column("''")) == _status(TaskStatus.SUBMITTED),
                t.c.type == sa.any_(types),
            )
            .order_by(t.c.priority, t.c.id)
        )

    def _hold_submitted(self) -> sa.Update:
        """Move the pick-up deadline of SUBMITTED tasks ``:ids`` to ``:until`` if later."""
        t = self.tables.tasks
        until = sa.bindparam("until", type_=sa.DateTime(timezone=True))
        return (
            sa.update(t)
            .where(
                t.c.id == sa.any_(sa.bindparam("ids", type_=pg.ARRAY(sa.Uuid()))),
                t.c.status == _status(TaskStatus.SUBMITTED),
            )
            .values(next_event_time=sa.func.greatest(t.c.next_event_time, until))
        )

    def _update(self) -> sa.ClauseElement:
        t = self.tables.tasks
        v = _unnest(
            "c", {"id": sa.Uuid(), "expected": sa.BigInteger()}
            | {c: t.c[c].type for c in CHANGE_COLUMNS}
        )  # fmt: skip
        return (
            sa.update(t)
            .where(t.c.id == v.c.id, t.c.version == v.c.expected)
            .values({c: v.c[c] for c in CHANGE_COLUMNS})
            .returning(t.c.id)
        )

    def _delete(self) -> sa.ClauseElement:
        t = self.tables.tasks
        v = _unnest("c", {"id": sa.Uuid(), "expected": sa.BigInteger()})
        return sa.delete(t).where(t.c.id == v.c.id, t.c.version == v.c.expected).returning(t.c.id)

    def _claim_due(self) -> sa.Select[Any]:
        t = self.tables.tasks
        due = (
            sa.select(t.c.id, t.c.next_event_time.label("due_at"))
            .where(
                t.c.status == _status(TaskStatus.WAITING),
                t.c.next_event_time <= sa.bindparam("now"),
            )
            .order_by(t.c.next_event_time, t.c.priority, t.c.id)
            .limit(sa.bindparam("limit"))
            .with_for_update(skip_locked=True)  # concurrent claimers take disjoint rows
            .cte("due")
        )
        claimed = (
            sa.update(t)
            .where(t.c.id == due.c.id, t.c.status == _status(TaskStatus.WAITING))
            .values(
                status=_status(TaskStatus.SUBMITTED),
                version=t.c.version + 1,
                next_event_time=sa.bindparam("deadline", type_=sa.DateTime(timezone=True)),
                updated_at=sa.bindparam("now", type_=sa.DateTime(timezone=True)),
            )
            .returning(*t.c, due.c.due_at)
            .cte("claimed")
        )
        return sa.select(claimed).order_by(claimed.c.due_at, claimed.c.priority, claimed.c.id)

    def _resubmit_overdue(self) -> sa.Select[Any]:
        """SUBMITTED tasks overdue at ``:now`` -> SUBMITTED, version + 1, a new deadline.

        The deadline of a task is ``:deadlines[i]`` where ``:types[i]`` is its type, else
        ``:deadline``. Like ``claim_due``: one index range of ``(status, next_event_time)``,
        rows another session holds skipped, the status checked again by the UPDATE.
        """
        t = self.tables.tasks
        now = sa.bindparam("now", type_=sa.DateTime(timezone=True))
        due = (
            sa.select(t.c.id, t.c.next_event_time.label("due_at"))
            .where(t.c.status == _status(TaskStatus.SUBMITTED), t.c.next_event_time < now)
            .order_by(t.c.next_event_time, t.c.priority, t.c.id)
            .limit(sa.bindparam("limit"))
            # FOR NO KEY UPDATE, what the UPDATE takes: rows locked only by key-share readers
            # stay in; a row another session is changing is left out rather than waited for.
            .with_for_update(skip_locked=True, key_share=True)
            .cte("due")
        )
        types = sa.bindparam("types", type_=pg.ARRAY(sa.Text()))
        deadlines = sa.bindparam("deadlines", type_=pg.ARRAY(sa.DateTime(timezone=True)))
        # (:deadlines)[array_position(:types, type)]: NULL where the type is not listed.
        per_type = sa.type_coerce(sa.Grouping(deadlines), deadlines.type)[
            sa.func.array_position(types, t.c.type)
        ]
        resubmitted = (
            sa.update(t)
            .where(t.c.id == due.c.id, t.c.status == _status(TaskStatus.SUBMITTED))
            .values(
                version=t.c.version + 1,
                next_event_time=sa.func.coalesce(
                    per_type, sa.bindparam("deadline", type_=sa.DateTime(timezone=True))
                ),
                updated_at=now,
            )
            .returning(*t.c, due.c.due_at)
            .cte("resubmitted")
        )
        return sa.select(resubmitted).order_by(
            resubmitted.c.due_at, resubmitted.c.priority, resubmitted.c.id
        )

    def _delete_finished(self) -> sa.Delete:
        t = self.tables.tasks
        per_status = [
            sa.select(t.c.id, t.c.next_event_time)
            .where(t.c.status == _status(s), t.c.next_event_time < sa.bindparam("before"))
            .order_by(t.c.next_event_time)
            .limit(sa.bindparam("limit"))
            for s in sorted(FINAL_STATUSES)
        ]  # one index range per status instead of an IN list the index cannot order
        candidates = sa.union_all(*per_status).subquery("finished")
        oldest = (
            sa.select(candidates.c.id)
            .order_by(candidates.c.next_event_time)
            .limit(sa.bindparam("limit"))
        )
        return sa.delete(t).where(t.c.id.in_(oldest))

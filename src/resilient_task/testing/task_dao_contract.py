# ruff: noqa: D102 -- each test is named as the sentence it checks
"""The TaskDAO contract: one suite every store adapter's tests subclass.

Usage (any test module; pytest collects the subclass and runs every test of the suite)::

    from resilient_task.testing import InMemoryTaskDAO, TaskDAOContract

    class TestInMemoryTaskDAOContract(TaskDAOContract):
        @pytest.fixture
        async def dao(self) -> InMemoryTaskDAO:  # or yield one, to clean up afterwards
            return InMemoryTaskDAO()  # fresh and empty for every test

Only behaviour the port promises belongs here; adapter-specific checks live in the
adapter's own test module. Times are fixed, UTC-aware and at microsecond precision.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest

from resilient_task.domain.requests import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_TYPE_LENGTH,
    MAX_UNIQUE_KEY_LENGTH,
)
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import ValidationError
from resilient_task.ports.task_dao import GrabRequest, InsertOutcome, TaskChange
from resilient_task.service.stores import AnyTaskDAO

__all__ = [
    "NOW",
    "TaskDAOContract",
    "finished",
    "insert",
    "make_submitted",
    "make_task",
    "processing",
]

NOW = datetime(2030, 1, 1, tzinfo=UTC)
"""The fixed "current time" of the contract tests."""

SECOND = timedelta(seconds=1)
BINARY = bytes(range(256)) + b"\xff\xfe\x00\xc3\x28"  # not valid UTF-8, has NUL bytes
UNSTORABLE_TIMES = [
    datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))),  # year 10000 in UTC
    datetime.max.replace(tzinfo=UTC),  # unreadable in any session zone east of UTC
    LATEST_TIME + timedelta.resolution,
    datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # year 0 in UTC
    EARLIEST_TIME - timedelta.resolution,
]
"""Times PostgreSQL would store but a Python datetime could not read back in every zone."""
UNSTORABLE_IDS = ["year-10000-utc", "datetime-max", "after-latest", "year-0-utc", "before-earliest"]


def make_task(
    *,
    id: UUID | None = None,
    type: str = "email",
    data: bytes = b"payload",
    status: TaskStatus = TaskStatus.WAITING,
    next_event_time: datetime = NOW,
    created_at: datetime = NOW,
    updated_at: datetime | None = None,
    version: int = 0,
    sub_type: str | None = None,
    priority: int = 5,
    unique_key: str | None = None,
) -> Task:
    """A new task (WAITING at version 0 unless told otherwise) with a fresh random id."""
    return Task(
        id=id or uuid4(),
        type=type,
        data=data,
        status=status,
        next_event_time=next_event_time,
        created_at=created_at,
        updated_at=updated_at or created_at,
        version=version,
        sub_type=sub_type,
        priority=priority,
        unique_key=unique_key,
    )


def make_submitted(**fields: object) -> Task:
    """A new SUBMITTED task whose pick-up deadline is a minute from :data:`NOW`."""
    fields.setdefault("next_event_time", NOW + 60 * SECOND)
    return make_task(status=TaskStatus.SUBMITTED, **fields)  # type: ignore[arg-type]


async def insert(dao: AnyTaskDAO, *tasks: Task) -> None:
    """Insert ``tasks``, asserting each one is new."""
    outcomes = await dao.insert_tasks(tasks)
    assert outcomes == [InsertOutcome(task.id, created=True) for task in tasks]


async def processing(dao: AnyTaskDAO, task: Task | None = None, *, node: str = "node-1") -> Task:
    """Insert ``task`` (or a new one) as SUBMITTED and grab it; the PROCESSING task."""
    task = task or make_submitted()
    await insert(dao, task)
    [grabbed] = await dao.grab(
        [GrabRequest(task.id, task.version, node, NOW + 300 * SECOND)], now=NOW
    )
    return grabbed


async def finished(dao: AnyTaskDAO, status: TaskStatus, *, at: datetime) -> Task:
    """A task that reached ``status`` (DONE, ERROR, FAILED, CANCELLED) at ``at``."""
    if status is TaskStatus.CANCELLED:
        task = make_task()
        await insert(dao, task)
        new = task.cancel(now=at)
    else:
        task = await processing(dao)
        if status is TaskStatus.DONE:
            new = task.complete(now=at)
        elif status is TaskStatus.ERROR:
            new = task.mark_error(now=at, reason="gave up")
        else:
            new = task.mark_failed(now=at, reason="failed")
    assert await dao.apply([TaskChange(new, task.version)]) == [True]
    return new


class TaskDAOContract:
    """Tests every TaskDAO adapter passes.

    Subclasses (named ``Test...``) override the ``dao`` fixture: a fresh, empty DAO per test.
    """

    @pytest.fixture
    def dao(self) -> AnyTaskDAO:
        """A fresh, empty TaskDAO for one test (the subclass's factory hook)."""
        raise NotImplementedError("subclasses override the dao fixture: a fresh, empty TaskDAO")

    # -- insert and read ------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_inserted_task_reads_back_with_every_field(self, dao: AnyTaskDAO) -> None:
        at = NOW + timedelta(microseconds=123_457)
        task = make_task(
            type="invoice",
            sub_type="monthly",
            data=BINARY,
            status=TaskStatus.SUBMITTED,
            next_event_time=at + 30 * SECOND,
            created_at=at,
            updated_at=at + timedelta(microseconds=1),
            priority=2,
            unique_key="invoice-42",
        )
        await insert(dao, task)
        assert await dao.get_task(task.id) == task

    @pytest.mark.anyio
    async def test_changed_task_reads_back_with_every_field(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao, make_submitted(unique_key="k"), node="node-ü")
        retry = task.schedule(
            now=NOW + timedelta(microseconds=1), run_at=NOW + 10 * SECOND, error="boom\n ü ✓"
        )
        assert await dao.apply([TaskChange(retry, task.version)]) == [True]
        assert await dao.get_task(task.id) == retry

    @pytest.mark.anyio
    async def test_binary_payload_that_is_not_utf8_round_trips(self, dao: AnyTaskDAO) -> None:
        task = make_task(data=BINARY)
        await insert(dao, task)
        stored = await dao.get_task(task.id)
        assert stored is not None
        assert stored.data == BINARY
        assert isinstance(stored.data, bytes)

    @pytest.mark.anyio
    async def test_several_megabyte_payload_round_trips(self, dao: AnyTaskDAO) -> None:
        data = bytes(range(256)) * (5 * 4096)  # 5 MiB
        task = make_task(data=data)
        await insert(dao, task)
        stored = await dao.get_task(task.id)
        assert stored is not None
        assert stored.data == data

    @pytest.mark.anyio
    async def test_times_come_back_utc_aware(self, dao: AnyTaskDAO) -> None:
        task = make_task()
        await insert(dao, task)
        stored = await dao.get_task(task.id)
        assert stored is not None
        for value in (stored.next_event_time, stored.created_at, stored.updated_at):
            assert value.utcoffset() == timedelta(0)

    @pytest.mark.anyio
    async def test_unknown_task_reads_as_none(self, dao: AnyTaskDAO) -> None:
        assert await dao.get_task(uuid4()) is None

    @pytest.mark.anyio
    async def test_insert_reports_outcomes_in_order(self, dao: AnyTaskDAO) -> None:
        tasks = [make_task(), make_submitted(), make_task(unique_key="a")]
        await insert(dao, *tasks)
        for task in tasks:
            assert await dao.get_task(task.id) == task

    # -- deduplication --------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_duplicate_id_is_not_inserted_again(self, dao: AnyTaskDAO) -> None:
        task = make_task(data=b"first")
        await insert(dao, task)
        again = make_task(id=task.id, data=b"second", unique_key="other")
        assert await dao.insert_tasks([again]) == [InsertOutcome(task.id, created=False)]
        assert await dao.get_task(task.id) == task

    @pytest.mark.anyio
    async def test_duplicate_unique_key_reports_the_existing_task(self, dao: AnyTaskDAO) -> None:
        first = make_task(unique_key="order-1")
        await insert(dao, first)
        second = make_task(unique_key="order-1", data=b"other")
        assert await dao.insert_tasks([second]) == [InsertOutcome(first.id, created=False)]
        assert await dao.get_task(second.id) is None

    @pytest.mark.anyio
    async def test_same_unique_key_with_another_type_is_a_new_task(self, dao: AnyTaskDAO) -> None:
        await insert(
            dao, make_task(type="email", unique_key="k"), make_task(type="sms", unique_key="k")
        )

    @pytest.mark.anyio
    async def test_tasks_without_unique_key_never_collide(self, dao: AnyTaskDAO) -> None:
        await insert(dao, make_task(), make_task())

    @pytest.mark.anyio
    async def test_duplicates_within_one_batch_create_one_task(self, dao: AnyTaskDAO) -> None:
        first = make_task(unique_key="k")
        same_key, same_id = make_task(unique_key="k"), make_task(id=first.id)
        outcomes = await dao.insert_tasks([first, same_key, same_id])
        assert outcomes == [
            InsertOutcome(first.id, created=True),
            InsertOutcome(first.id, created=False),
            InsertOutcome(first.id, created=False),
        ]
        assert (await dao.count_by_status())[TaskStatus.WAITING] == 1

    @pytest.mark.anyio
    async def test_concurrent_inserts_of_the_same_key_create_one_task(
        self, dao: AnyTaskDAO
    ) -> None:
        outcomes: list[InsertOutcome] = []

        async def add() -> None:
            outcomes.extend(await dao.insert_tasks([make_task(unique_key="race")]))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(add)
        created = [o for o in outcomes if o.created]
        assert len(outcomes) == 20
        assert len(created) == 1
        assert {o.task_id for o in outcomes} == {created[0].task_id}
        assert (await dao.count_by_status())[TaskStatus.WAITING] == 1

    @pytest.mark.anyio
    async def test_unique_key_is_free_again_once_the_task_is_deleted(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao, make_submitted(unique_key="k"))
        done = task.complete(now=NOW)
        assert await dao.apply([TaskChange(done, task.version, delete=True)]) == [True]
        await insert(dao, make_task(unique_key="k"))

    @pytest.mark.anyio
    async def test_unique_key_is_free_again_after_cleanup(self, dao: AnyTaskDAO) -> None:
        old = await finished(dao, TaskStatus.CANCELLED, at=NOW)
        assert await dao.delete_finished(before=NOW + SECOND, limit=10) == 1
        await insert(dao, make_task(type=old.type, unique_key="k"))
        await insert(dao, make_task(type=old.type, unique_key="k2"))

    # -- grab -----------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_grab_moves_a_submitted_task_to_processing(self, dao: AnyTaskDAO) -> None:
        task = make_submitted(data=BINARY)
        await insert(dao, task)
        deadline = NOW + timedelta(minutes=5, microseconds=7)
        grabbed = await dao.grab([GrabRequest(task.id, 0, "node-1", deadline)], now=NOW)
        expected = task.grab(node_id="node-1", now=NOW, deadline=deadline)
        assert grabbed == [expected]
        assert grabbed[0].status is TaskStatus.PROCESSING
        assert grabbed[0].version == 1
        assert grabbed[0].processing_tries_count == 1
        assert await dao.get_task(task.id) == expected

    @pytest.mark.anyio
    async def test_stale_version_cannot_grab_task(self, dao: AnyTaskDAO) -> None:
        task = make_submitted()
        await insert(dao, task)
        assert await dao.grab([GrabRequest(task.id, 1, "n", NOW)], now=NOW) == []
        assert await dao.get_task(task.id) == task

    @pytest.mark.anyio
    async def test_waiting_task_cannot_be_grabbed(self, dao: AnyTaskDAO) -> None:
        task = make_task()
        await insert(dao, task)
        assert await dao.grab([GrabRequest(task.id, 0, "n", NOW)], now=NOW) == []
        assert await dao.get_task(task.id) == task

    @pytest.mark.anyio
    async def test_duplicate_grab_is_a_no_op(self, dao: AnyTaskDAO) -> None:
        task = make_submitted()
        await insert(dao, task)
        request = GrabRequest(task.id, 0, "node-1", NOW + SECOND)
        first = await dao.grab([request, request], now=NOW)
        assert len(first) == 1
        assert await dao.grab([request], now=NOW) == []
        assert await dao.get_task(task.id) == first[0]

    @pytest.mark.anyio
    async def test_grab_returns_only_the_requests_that_won(self, dao: AnyTaskDAO) -> None:
        a, b = make_submitted(), make_submitted()
        await insert(dao, a, b)
        requests = [
            GrabRequest(a.id, 0, "n", NOW + SECOND),
            GrabRequest(b.id, 3, "n", NOW + SECOND),
            GrabRequest(uuid4(), 0, "n", NOW + SECOND),
        ]
        assert [t.id for t in await dao.grab(requests, now=NOW)] == [a.id]

    @pytest.mark.anyio
    async def test_concurrent_grabs_let_exactly_one_node_win(self, dao: AnyTaskDAO) -> None:
        task = make_submitted()
        await insert(dao, task)
        winners: list[Task] = []

        async def grab(node: str) -> None:
            winners.extend(await dao.grab([GrabRequest(task.id, 0, node, NOW)], now=NOW))

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(grab, f"node-{n}")
        assert len(winners) == 1
        assert await dao.get_task(task.id) == winners[0]

    # -- apply ----------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_apply_writes_a_change_at_the_expected_version(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao)
        done = task.complete(now=NOW + SECOND)
        assert await dao.apply([TaskChange(done, task.version)]) == [True]
        assert await dao.get_task(task.id) == done

    @pytest.mark.anyio
    async def test_stale_version_cannot_complete_task(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao)
        recovered = task.recover(now=NOW, deadline=NOW + SECOND)
        assert await dao.apply([TaskChange(recovered, task.version)]) == [True]
        late = task.complete(now=NOW + SECOND)
        assert await dao.apply([TaskChange(late, task.version)]) == [False]
        assert await dao.get_task(task.id) == recovered

    @pytest.mark.anyio
    async def test_over_long_type_or_unique_key_is_refused_and_nothing_is_stored(
        self, dao: AnyTaskDAO
    ) -> None:
        with pytest.raises(ValidationError, match=r"unique_key is 151 characters long"):
            await dao.insert_tasks([make_task(unique_key="k" * (MAX_UNIQUE_KEY_LENGTH + 1))])
        with pytest.raises(ValidationError, match=r"type is 251 characters long"):
            await dao.insert_tasks([make_task(type="t" * (MAX_TYPE_LENGTH + 1))])
        assert sum((await dao.count_by_status()).values()) == 0

    @pytest.mark.anyio
    @pytest.mark.parametrize("field", ["type", "sub_type", "unique_key"])
    @pytest.mark.parametrize(
        "text",
        [f"a{chr(0xD800)}b", chr(0xDFFF), "a\x00b", " "],
        ids=["surrogate", "lone-low-surrogate", "nul", "blank"],
    )
    async def test_text_no_store_can_hold_is_refused_and_nothing_is_stored(
        self, dao: AnyTaskDAO, field: str, text: str
    ) -> None:
        # PostgreSQL's driver raised a raw UnicodeEncodeError; the memory store accepted it.
        bad = replace(make_task(), **{field: text})  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=f"{field} (is required and )?must"):
            await dao.insert_tasks([make_task(), bad])
        assert sum((await dao.count_by_status()).values()) == 0

    @pytest.mark.anyio
    @pytest.mark.parametrize("at", UNSTORABLE_TIMES, ids=UNSTORABLE_IDS)
    async def test_a_time_that_cannot_round_trip_is_refused_on_insert(
        self, dao: AnyTaskDAO, at: datetime
    ) -> None:
        # PostgreSQL stored year 10000 (UTC); every later read of the row failed.
        with pytest.raises(ValidationError, match="outside the storable range"):
            await dao.insert_tasks([make_task(), make_task(next_event_time=at)])
        assert sum((await dao.count_by_status()).values()) == 0

    @pytest.mark.anyio
    @pytest.mark.parametrize("at", UNSTORABLE_TIMES, ids=UNSTORABLE_IDS)
    async def test_a_time_that_cannot_round_trip_is_refused_on_apply(
        self, dao: AnyTaskDAO, at: datetime
    ) -> None:
        task = make_task()
        await insert(dao, task)
        with pytest.raises(ValidationError, match="outside the storable range"):
            await dao.apply([TaskChange(task.reschedule(now=NOW, run_at=at), task.version)])
        assert await dao.get_task(task.id) == task
        assert [t.id for t in await dao.find_tasks(status=TaskStatus.WAITING)] == [task.id]

    @pytest.mark.anyio
    async def test_times_at_the_ends_of_the_storable_range_round_trip(
        self, dao: AnyTaskDAO
    ) -> None:
        first = make_task(next_event_time=EARLIEST_TIME)
        last = make_task(next_event_time=LATEST_TIME)
        await insert(dao, first, last)
        assert await dao.get_task(first.id) == first
        assert await dao.get_task(last.id) == last
        found = await dao.find_tasks(status=TaskStatus.WAITING)
        assert [t.next_event_time for t in found] == [EARLIEST_TIME, LATEST_TIME]

    @pytest.mark.anyio
    @pytest.mark.parametrize("status", ["BOGUS", "waiting", 3, "", []])
    async def test_find_tasks_refuses_an_unknown_status(
        self, dao: AnyTaskDAO, status: object
    ) -> None:
        await insert(dao, make_task())
        with pytest.raises(ValidationError, match="status must be one of WAITING"):
            await dao.find_tasks(status=status, limit=10)  # type: ignore[arg-type]

    @pytest.mark.anyio
    @pytest.mark.parametrize("type_", ["a\x00b", "\ud800", 5])
    async def test_find_tasks_refuses_a_type_no_stored_task_can_have(
        self, dao: AnyTaskDAO, type_: object
    ) -> None:
        # Refused the same way by every store, rather than matching nothing in one and failing
        # in the other's driver.
        with pytest.raises(ValidationError):
            await dao.find_tasks(type=type_, limit=10)  # type: ignore[arg-type]

    @pytest.mark.anyio
    async def test_find_tasks_takes_a_status_by_name(self, dao: AnyTaskDAO) -> None:
        task = make_task()
        await insert(dao, task, make_submitted())
        found = await dao.find_tasks(status="WAITING")  # type: ignore[arg-type]
        assert [t.id for t in found] == [task.id]

    @pytest.mark.anyio
    @pytest.mark.parametrize("limit", ["10", 1.5, None, -1, True])
    async def test_find_tasks_refuses_a_limit_that_is_not_a_non_negative_int(
        self, dao: AnyTaskDAO, limit: object
    ) -> None:
        with pytest.raises(ValidationError, match="limit must be"):
            await dao.find_tasks(limit=limit)  # type: ignore[arg-type]

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "ran",
        [
            {"status": TaskStatus.PROCESSING},
            {"version": 1},
            {"processing_tries_count": 1},
            {"recovery_count": 1},
            {"processing_node": "node-1"},
            {"last_error": "boom"},
        ],
        ids=lambda ran: next(iter(ran)),
    )
    async def test_only_tasks_that_never_ran_can_be_inserted(
        self, dao: AnyTaskDAO, ran: dict[str, object]
    ) -> None:
        # A batch insert writes these columns as constants (PostgreSQL adapter).
        fresh = make_task()
        with pytest.raises(ValidationError, match="new tasks must"):
            await dao.insert_tasks([make_task(), replace(fresh, **ran)])  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="new tasks must"):
            await dao.insert_tasks([replace(fresh, **ran)])  # type: ignore[arg-type]
        assert sum((await dao.count_by_status()).values()) == 0

    @pytest.mark.anyio
    async def test_applying_a_polled_task_without_payload_keeps_the_stored_payload(
        self, dao: AnyTaskDAO
    ) -> None:
        task = make_submitted(data=b"\x00\xffpayload", next_event_time=NOW - SECOND)
        await insert(dao, task)
        (polled,) = await dao.find_overdue(TaskStatus.SUBMITTED, now=NOW, limit=10)
        emptied = replace(polled, data=b"").resubmit(now=NOW, deadline=NOW + SECOND)
        assert await dao.apply([TaskChange(emptied, polled.version)]) == [True]
        stored = await dao.get_task(task.id)
        assert stored is not None
        assert stored.data == b"\x00\xffpayload"
        assert stored.version == task.version + 1

    @pytest.mark.anyio
    async def test_apply_reports_each_change_in_order(self, dao: AnyTaskDAO) -> None:
        a, b = make_task(), make_task()
        await insert(dao, a, b)
        changes = [
            TaskChange(a.submit(now=NOW, deadline=NOW + SECOND), 0),
            TaskChange(b.submit(now=NOW, deadline=NOW + SECOND), 5),
            TaskChange(make_task().submit(now=NOW, deadline=NOW), 0),
        ]
        assert await dao.apply(changes) == [True, False, False]
        assert await dao.get_task(a.id) == changes[0].task
        assert await dao.get_task(b.id) == b

    @pytest.mark.anyio
    async def test_apply_with_delete_removes_the_task(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao)
        done = task.complete(now=NOW)
        assert await dao.apply([TaskChange(done, task.version, delete=True)]) == [True]
        assert await dao.get_task(task.id) is None

    @pytest.mark.anyio
    async def test_delete_with_stale_version_keeps_the_task(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao)
        done = task.complete(now=NOW)
        assert await dao.apply([TaskChange(done, task.version - 1, delete=True)]) == [False]
        assert await dao.get_task(task.id) == task

    # -- claim_due ------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_claim_due_submits_due_waiting_tasks(self, dao: AnyTaskDAO) -> None:
        due, on_time, later = (
            make_task(next_event_time=NOW - SECOND),
            make_task(next_event_time=NOW),
            make_task(next_event_time=NOW + timedelta(microseconds=1)),
        )
        await insert(dao, due, on_time, later)
        deadline = NOW + timedelta(seconds=30, microseconds=5)
        claimed = await dao.claim_due(now=NOW, limit=10, deadline=deadline)
        assert [t.id for t in claimed] == [due.id, on_time.id]
        for task in claimed:
            assert task.status is TaskStatus.SUBMITTED
            assert task.version == 1
            assert task.next_event_time == deadline
            stored = await dao.get_task(task.id)
            assert stored is not None
            assert stored.status is TaskStatus.SUBMITTED
            assert stored.version == 1
            assert stored.next_event_time == deadline
            assert stored.data == b"payload"
        assert await dao.get_task(later.id) == later

    @pytest.mark.anyio
    async def test_claim_due_takes_oldest_first_then_most_urgent(self, dao: AnyTaskDAO) -> None:
        oldest = make_task(next_event_time=NOW - 3 * SECOND, priority=9)
        urgent = make_task(next_event_time=NOW - SECOND, priority=0)
        normal = make_task(next_event_time=NOW - SECOND, priority=5)
        newest = make_task(next_event_time=NOW, priority=0)
        await insert(dao, newest, normal, urgent, oldest)
        claimed = await dao.claim_due(now=NOW, limit=3, deadline=NOW + SECOND)
        assert [t.id for t in claimed] == [oldest.id, urgent.id, normal.id]
        assert await dao.get_task(newest.id) == newest

    @pytest.mark.anyio
    async def test_claim_due_ignores_other_statuses(self, dao: AnyTaskDAO) -> None:
        await insert(dao, make_submitted(next_event_time=NOW - SECOND))
        await processing(dao)
        await finished(dao, TaskStatus.CANCELLED, at=NOW - SECOND)
        assert await dao.claim_due(now=NOW + SECOND, limit=10, deadline=NOW) == []

    @pytest.mark.anyio
    async def test_concurrent_claimers_never_receive_the_same_task(self, dao: AnyTaskDAO) -> None:
        await insert(dao, *(make_task(next_event_time=NOW - i * SECOND) for i in range(30)))
        claims: list[list[Task]] = []

        async def claim() -> None:
            claims.append(await dao.claim_due(now=NOW, limit=10, deadline=NOW + SECOND))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(claim)
        ids = [task.id for claim in claims for task in claim]
        assert len(ids) == len(set(ids)) == 30
        assert (await dao.count_by_status())[TaskStatus.SUBMITTED] == 30

    # -- resubmit_overdue -----------------------------------------------------------------

    @pytest.mark.anyio
    async def test_resubmit_overdue_resubmits_overdue_submitted_tasks(
        self, dao: AnyTaskDAO
    ) -> None:
        sms = make_submitted(type="sms", next_event_time=NOW - 2 * SECOND)
        email = make_submitted(type="email", next_event_time=NOW - timedelta(microseconds=1))
        exactly = make_submitted(next_event_time=NOW)
        waiting = make_task(next_event_time=NOW - SECOND)
        await insert(dao, sms, email, exactly, waiting)
        stuck = await processing(dao)  # PROCESSING until NOW + 300 s
        failed = await finished(dao, TaskStatus.FAILED, at=NOW - SECOND)
        now = NOW + timedelta(microseconds=7)
        deadline, sms_deadline = now + 30 * SECOND, now + 5 * SECOND
        resubmitted = await dao.resubmit_overdue(
            now=now, limit=10, deadline=deadline, deadlines={"sms": sms_deadline, "x": now}
        )
        assert resubmitted == [
            replace(sms.resubmit(now=now, deadline=sms_deadline), data=b""),
            replace(email.resubmit(now=now, deadline=deadline), data=b""),
            replace(exactly.resubmit(now=now, deadline=deadline), data=b""),
        ]
        for task, new in zip((sms, email, exactly), resubmitted, strict=True):
            assert new.version == task.version + 1
            assert await dao.get_task(task.id) == replace(new, data=task.data)
        for untouched in (waiting, stuck, failed):
            assert await dao.get_task(untouched.id) == untouched

    @pytest.mark.anyio
    async def test_resubmit_overdue_takes_oldest_first_then_most_urgent_up_to_limit(
        self, dao: AnyTaskDAO
    ) -> None:
        oldest = make_submitted(next_event_time=NOW - 3 * SECOND, priority=9)
        urgent = make_submitted(next_event_time=NOW - SECOND, priority=0)
        normal = make_submitted(next_event_time=NOW - SECOND, priority=5)
        newest = make_submitted(next_event_time=NOW - timedelta(microseconds=1), priority=0)
        await insert(dao, newest, normal, urgent, oldest)
        resubmitted = await dao.resubmit_overdue(now=NOW, limit=3, deadline=NOW + SECOND)
        assert [t.id for t in resubmitted] == [oldest.id, urgent.id, normal.id]
        assert await dao.get_task(newest.id) == newest
        assert await dao.resubmit_overdue(now=NOW, limit=0, deadline=NOW + SECOND) == []
        assert await dao.get_task(newest.id) == newest
        # The re-submitted ones are due again only at their new deadline.
        again = await dao.resubmit_overdue(now=NOW, limit=10, deadline=NOW + SECOND)
        assert [t.id for t in again] == [newest.id]
        assert await dao.resubmit_overdue(now=NOW + SECOND, limit=10, deadline=NOW) == []

    @pytest.mark.anyio
    async def test_resubmit_overdue_validates_its_arguments(self, dao: AnyTaskDAO) -> None:
        task = make_submitted(next_event_time=NOW - SECOND)
        await insert(dao, task)
        naive = datetime(2030, 1, 1)
        calls: list[dict[str, Any]] = [
            {"now": naive, "limit": 1, "deadline": NOW},
            {"now": NOW, "limit": 1, "deadline": naive},
            {"now": NOW, "limit": 1, "deadline": NOW, "deadlines": {"email": naive}},
            {"now": NOW, "limit": -1, "deadline": NOW},
            {"now": NOW, "limit": "1", "deadline": NOW},
        ]
        for call in calls:
            with pytest.raises(ValidationError):
                await dao.resubmit_overdue(**call)
        assert await dao.get_task(task.id) == task

    @pytest.mark.anyio
    async def test_concurrent_resubmitters_never_receive_the_same_task(
        self, dao: AnyTaskDAO
    ) -> None:
        tasks = [make_submitted(next_event_time=NOW - i * SECOND) for i in range(30)]
        await insert(dao, *tasks)
        calls: list[list[Task]] = []

        async def resubmit() -> None:
            calls.append(await dao.resubmit_overdue(now=NOW, limit=10, deadline=NOW + SECOND))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(resubmit)
        ids = [task.id for call in calls for task in call]
        assert len(ids) == len(set(ids)) <= 30
        for task in tasks:
            stored = await dao.get_task(task.id)
            assert stored is not None
            assert stored.version == task.version + ids.count(task.id)

    # -- find_overdue, find_tasks, count_by_status ----------------------------------------

    @pytest.mark.anyio
    async def test_find_overdue_returns_tasks_past_their_deadline(self, dao: AnyTaskDAO) -> None:
        late = make_submitted(next_event_time=NOW - timedelta(microseconds=1))
        exactly = make_submitted(next_event_time=NOW)
        waiting = make_task(next_event_time=NOW - SECOND)
        await insert(dao, late, exactly, waiting)
        stuck = await processing(dao)  # PROCESSING until NOW + 300 s
        overdue = await dao.find_overdue(TaskStatus.SUBMITTED, now=NOW, limit=10)
        assert [(t.id, t.version, t.status) for t in overdue] == [(late.id, 0, late.status)]
        assert await dao.find_overdue(TaskStatus.PROCESSING, now=NOW, limit=10) == []
        later = NOW + 301 * SECOND
        assert [
            t.id for t in await dao.find_overdue(TaskStatus.PROCESSING, now=later, limit=10)
        ] == [stuck.id]

    @pytest.mark.anyio
    async def test_find_overdue_respects_limit(self, dao: AnyTaskDAO) -> None:
        await insert(dao, *(make_submitted(next_event_time=NOW - SECOND) for _ in range(5)))
        assert len(await dao.find_overdue(TaskStatus.SUBMITTED, now=NOW, limit=3)) == 3

    @pytest.mark.anyio
    async def test_find_tasks_filters_by_status_and_type(self, dao: AnyTaskDAO) -> None:
        email, sms = make_task(type="email"), make_task(type="sms")
        email_submitted = make_submitted(type="email")
        await insert(dao, email, sms, email_submitted)

        async def ids(status: TaskStatus | None = None, type: str | None = None) -> set[UUID]:
            return {t.id for t in await dao.find_tasks(status=status, type=type)}

        assert await ids() == {email.id, sms.id, email_submitted.id}
        assert await ids(status=TaskStatus.WAITING) == {email.id, sms.id}
        assert await ids(type="email") == {email.id, email_submitted.id}
        assert await ids(status=TaskStatus.WAITING, type="email") == {email.id}
        assert await ids(status=TaskStatus.DONE) == set()

    @pytest.mark.anyio
    async def test_find_tasks_lists_earliest_first_up_to_limit(self, dao: AnyTaskDAO) -> None:
        tasks = [make_task(next_event_time=NOW + i * SECOND) for i in range(5)]
        await insert(dao, *reversed(tasks))
        found = await dao.find_tasks(limit=3)
        assert [t.id for t in found] == [t.id for t in tasks[:3]]

    @pytest.mark.anyio
    async def test_count_by_status_counts_every_status(self, dao: AnyTaskDAO) -> None:
        assert await dao.count_by_status() == dict.fromkeys(TaskStatus, 0)
        await insert(dao, make_task(), make_task(), make_submitted())
        await processing(dao)
        await finished(dao, TaskStatus.DONE, at=NOW)
        assert await dao.count_by_status() == {
            **dict.fromkeys(TaskStatus, 0),
            TaskStatus.WAITING: 2,
            TaskStatus.SUBMITTED: 1,
            TaskStatus.PROCESSING: 1,
            TaskStatus.DONE: 1,
        }

    # -- delete_finished ------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_delete_finished_removes_only_final_tasks_before_the_cutoff(
        self, dao: AnyTaskDAO
    ) -> None:
        old = NOW - timedelta(days=1)
        gone = [
            await finished(dao, s, at=old)
            for s in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)
        ]
        kept = [
            await finished(dao, TaskStatus.ERROR, at=old),
            await finished(dao, TaskStatus.DONE, at=NOW),
            make_task(next_event_time=old),
        ]
        await insert(dao, kept[-1])
        assert await dao.delete_finished(before=NOW, limit=100) == 3
        for task in gone:
            assert await dao.get_task(task.id) is None
        for task in kept:
            assert await dao.get_task(task.id) == task

    @pytest.mark.anyio
    async def test_delete_finished_respects_limit(self, dao: AnyTaskDAO) -> None:
        for i in range(5):
            await finished(dao, TaskStatus.DONE, at=NOW - i * SECOND)
        assert await dao.delete_finished(before=NOW + SECOND, limit=2) == 2
        assert await dao.delete_finished(before=NOW + SECOND, limit=10) == 3
        assert (await dao.count_by_status())[TaskStatus.DONE] == 0

    # -- transactions ---------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_transaction_commits_inserts_and_changes_together(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao)
        new = make_task(unique_key="follow-up")
        done = task.complete(now=NOW)
        async with dao.transaction() as tx:
            assert await dao.insert_tasks([new], transaction=tx) == [InsertOutcome(new.id, True)]
            assert await dao.apply([TaskChange(done, task.version)], transaction=tx) == [True]
        assert await dao.get_task(new.id) == new
        assert await dao.get_task(task.id) == done

    @pytest.mark.anyio
    async def test_transaction_sees_its_own_staged_writes(self, dao: AnyTaskDAO) -> None:
        new = make_task()
        submitted = new.submit(now=NOW, deadline=NOW + SECOND)
        async with dao.transaction() as tx:
            await dao.insert_tasks([new], transaction=tx)
            assert await dao.insert_tasks([new], transaction=tx) == [InsertOutcome(new.id, False)]
            assert await dao.apply([TaskChange(submitted, 0)], transaction=tx) == [True]
        assert await dao.get_task(new.id) == submitted

    @pytest.mark.anyio
    async def test_rollback_leaves_nothing_behind(self, dao: AnyTaskDAO) -> None:
        task = await processing(dao)
        new = make_task(unique_key="k")

        async def failing_unit_of_work() -> None:
            async with dao.transaction() as tx:
                await dao.insert_tasks([new], transaction=tx)
                await dao.apply([TaskChange(task.complete(now=NOW), task.version)], transaction=tx)
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError, match="handler failed"):
            await failing_unit_of_work()
        assert await dao.get_task(new.id) is None
        assert await dao.get_task(task.id) == task
        await insert(dao, make_task(unique_key="k"))

    @pytest.mark.anyio
    async def test_after_commit_callback_runs_only_after_commit(self, dao: AnyTaskDAO) -> None:
        new = make_task()
        seen: list[Task | None] = []

        async def callback() -> None:
            seen.append(await dao.get_task(new.id))

        async with dao.transaction() as tx:
            await dao.insert_tasks([new], transaction=tx)
            dao.after_commit(tx, callback)
            assert seen == []
        assert seen == [new]

    @pytest.mark.anyio
    async def test_after_commit_callback_never_runs_on_rollback(self, dao: AnyTaskDAO) -> None:
        calls: list[str] = []

        async def callback() -> None:
            calls.append("called")

        async def failing_unit_of_work() -> None:
            async with dao.transaction() as tx:
                await dao.insert_tasks([make_task()], transaction=tx)
                dao.after_commit(tx, callback)
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError, match="handler failed"):
            await failing_unit_of_work()
        assert calls == []

    @pytest.mark.anyio
    async def test_stale_version_in_a_transaction_is_reported_and_not_written(
        self, dao: AnyTaskDAO
    ) -> None:
        task = await processing(dao)
        recovered = task.recover(now=NOW, deadline=NOW + SECOND)
        assert await dao.apply([TaskChange(recovered, task.version)]) == [True]
        other = make_task()
        async with dao.transaction() as tx:
            await dao.insert_tasks([other], transaction=tx)
            late = task.complete(now=NOW)
            assert await dao.apply([TaskChange(late, task.version)], transaction=tx) == [False]
        assert await dao.get_task(task.id) == recovered
        assert await dao.get_task(other.id) == other

    @pytest.mark.anyio
    async def test_insert_in_a_transaction_deduplicates_against_stored_tasks(
        self, dao: AnyTaskDAO
    ) -> None:
        first = make_task(unique_key="k")
        await insert(dao, first)
        async with dao.transaction() as tx:
            outcomes = await dao.insert_tasks([make_task(unique_key="k")], transaction=tx)
        assert outcomes == [InsertOutcome(first.id, created=False)]
        assert (await dao.count_by_status())[TaskStatus.WAITING] == 1

"""TaskService: adding tasks (dedup, scheduling, transactions, outages) and operator actions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest

from resilient_task import (
    AddTaskRequest,
    AddTaskResultCode,
    ExponentialRetryPolicy,
    InvalidTransitionError,
    NoRetryPolicy,
    ProcessResult,
    SimpleProcessingPolicy,
    TaskNotFoundError,
    TaskService,
    TaskStatus,
    ValidationError,
    VersionConflictError,
)
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer
from resilient_task.domain.requests import LATEST_TIME, MAX_DURATION
from tests.unit.helpers import START, Calls, FakeNode, handler, make_service, properties

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)
QUEUE_TIME = properties().expected_queue_time

OperatorAction = Callable[[TaskService, UUID, "int | None"], Awaitable[object]]


async def _resume(service: TaskService, task_id: UUID, version: int | None) -> object:
    return await service.resume_task(task_id, version=version)


async def _mark_failed(service: TaskService, task_id: UUID, version: int | None) -> object:
    return await service.mark_as_failed(task_id, version=version)


async def _cancel(service: TaskService, task_id: UUID, version: int | None) -> object:
    return await service.cancel_task(task_id, version=version)


async def _reschedule(service: TaskService, task_id: UUID, version: int | None) -> object:
    return await service.reschedule_task(task_id, START + 90 * SECOND, version=version)


OPERATOR_ACTIONS = pytest.mark.parametrize(
    "action",
    [_resume, _mark_failed, _cancel, _reschedule],
    ids=["resume", "mark_as_failed", "cancel", "reschedule"],
)


# --- adding ------------------------------------------------------------------------------


async def test_task_due_now_is_submitted_and_triggered() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)

    result = await service.add_task(AddTaskRequest(type="work", data=b"{}"))

    assert result.result is AddTaskResultCode.OK
    task = dao.tasks[result.task_id]
    assert task.status is TaskStatus.SUBMITTED
    assert task.next_event_time == START + QUEUE_TIME
    assert triggerer.sent == [task.base]


async def test_task_with_a_past_run_time_is_due_now() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)

    result = await service.add_task(AddTaskRequest(type="work", run_after_time=START - SECOND))

    assert dao.tasks[result.task_id].status is TaskStatus.SUBMITTED


async def test_task_due_later_waits_without_a_trigger() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)
    run_at = START + 30 * SECOND

    result = await service.add_task(AddTaskRequest(type="work", run_after_time=run_at))

    task = dao.tasks[result.task_id]
    assert (task.status, task.next_event_time) == (TaskStatus.WAITING, run_at)
    assert triggerer.sent == []


async def test_task_due_later_is_started_by_the_resumer_once_due_and_not_before() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add(run_after_time=START + 30 * SECOND)

        await node.advance(30 * SECOND - timedelta(microseconds=1))
        assert node.status(task_id) is TaskStatus.WAITING

        await node.advance(timedelta(microseconds=1))
        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1


def test_naive_run_after_time_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        AddTaskRequest(type="work", run_after_time=datetime(2030, 1, 1))


async def test_naive_reschedule_time_is_rejected_and_the_task_is_unchanged() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    before = dao.tasks[added.task_id]

    with pytest.raises(ValidationError, match="timezone-aware"):
        await service.reschedule_task(added.task_id, datetime(2030, 1, 2))

    assert dao.tasks[added.task_id] == before


async def test_second_add_with_the_same_task_id_returns_the_original_and_creates_nothing() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)
    task_id = uuid4()

    first = await service.add_task(AddTaskRequest(type="work", task_id=task_id, data=b"1"))
    second = await service.add_task(AddTaskRequest(type="work", task_id=task_id, data=b"2"))

    assert (first.task_id, first.result) == (task_id, AddTaskResultCode.OK)
    assert (second.task_id, second.result) == (task_id, AddTaskResultCode.ALREADY_EXISTS)
    assert not second.created
    assert len(dao.tasks) == 1
    assert dao.tasks[task_id].data == b"1"
    assert len(triggerer.sent) == 1


async def test_second_add_with_the_same_unique_key_returns_the_original_creating_nothing() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)

    first = await service.add_task(AddTaskRequest(type="work", unique_key="order-1"))
    second = await service.add_task(AddTaskRequest(type="work", unique_key="order-1"))

    assert second.result is AddTaskResultCode.ALREADY_EXISTS
    assert second.task_id == first.task_id
    assert list(dao.tasks) == [first.task_id]
    assert len(triggerer.sent) == 1


async def test_the_same_unique_key_under_another_type_is_another_task() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)

    first = await service.add_task(AddTaskRequest(type="work", unique_key="order-1"))
    second = await service.add_task(AddTaskRequest(type="mail", unique_key="order-1"))

    assert first.created
    assert second.created
    assert len(dao.tasks) == 2


async def test_fifty_concurrent_adds_of_one_unique_key_create_exactly_one_task() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)
    results = []

    async def add() -> None:
        results.append(await service.add_task(AddTaskRequest(type="work", unique_key="k")))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(add)

    assert len(dao.tasks) == 1
    assert [r.result for r in results].count(AddTaskResultCode.OK) == 1
    assert {r.task_id for r in results} == set(dao.tasks)
    assert len(triggerer.sent) == 1


async def test_one_batch_with_the_same_unique_key_twice_creates_one_task() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)

    results = await service.add_tasks(
        [AddTaskRequest(type="work", unique_key="k", data=n.encode()) for n in "12"]
    )

    assert [r.result for r in results] == [AddTaskResultCode.OK, AddTaskResultCode.ALREADY_EXISTS]
    assert results[0].task_id == results[1].task_id
    assert dao.tasks[results[0].task_id].data == b"1"
    assert len(triggerer.sent) == 1


async def test_request_expected_queue_time_sets_the_pick_up_deadline() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)

    result = await service.add_task(AddTaskRequest(type="work", expected_queue_time=5 * SECOND))

    assert dao.tasks[result.task_id].next_event_time == START + 5 * SECOND


async def test_task_added_in_a_transaction_is_triggered_only_after_commit() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)

    async with dao.transaction() as tx:
        result = await service.add_task(AddTaskRequest(type="work"), transaction=tx)
        assert dict(dao.tasks) == {}
        assert triggerer.sent == []

    assert dao.tasks[result.task_id].status is TaskStatus.SUBMITTED
    assert [t.id for t in triggerer.sent] == [result.task_id]


async def test_task_added_in_a_rolled_back_transaction_leaves_no_task_and_no_trigger() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    service = make_service(dao=dao, triggerer=triggerer)

    async def add_then_violate_a_business_rule() -> None:
        async with dao.transaction() as tx:
            await service.add_task(AddTaskRequest(type="work"), transaction=tx)
            raise RuntimeError("business rule violated")

    with pytest.raises(RuntimeError, match="business rule"):
        await add_then_violate_a_business_rule()

    assert dict(dao.tasks) == {}
    assert triggerer.sent == []


async def test_add_with_the_broker_down_succeeds_and_makes_the_task_due_for_polling_now() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    triggerer.fail_with(ConnectionError("broker down"))
    service = make_service(dao=dao, triggerer=triggerer)

    result = await service.add_task(AddTaskRequest(type="work"))

    assert result.created
    task = dao.tasks[result.task_id]
    assert task.status is TaskStatus.SUBMITTED
    assert task.next_event_time == START  # not START + expected queue time


async def test_add_with_broker_and_store_both_down_still_succeeds() -> None:
    dao, triggerer = InMemoryTaskDAO(), InMemoryTriggerer()
    triggerer.fail_with(ConnectionError("broker down"))
    service = make_service(dao=dao, triggerer=triggerer)

    dao.fail_next(1, operation="apply")  # pulling the deadline forward fails too

    result = await service.add_task(AddTaskRequest(type="work"))

    assert result.created
    assert dao.tasks[result.task_id].next_event_time == START + QUEUE_TIME


async def test_adding_a_task_logs_its_id_and_status(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilient_task")
    service = make_service()

    result = await service.add_task(AddTaskRequest(type="work"))

    assert any(
        str(result.task_id) in r.getMessage() and "added as SUBMITTED" in r.getMessage()
        for r in caplog.records
    )


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_task_type_is_rejected(blank: str) -> None:
    with pytest.raises(ValidationError, match="type"):
        AddTaskRequest(type=blank)


def test_text_data_is_rejected_with_a_hint_to_encode() -> None:
    with pytest.raises(ValidationError, match="encode"):
        AddTaskRequest(type="work", data="hello")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: ExponentialRetryPolicy(delay=-SECOND),
        lambda: ExponentialRetryPolicy(max_delay=-SECOND),
        lambda: ExponentialRetryPolicy(max_count=-1),
        lambda: SimpleProcessingPolicy(timeout=-SECOND),
        lambda: SimpleProcessingPolicy(timeout=timedelta(0)),
        lambda: SimpleProcessingPolicy(expected_queue_time=-SECOND),
        lambda: SimpleProcessingPolicy(max_recoveries=-1),
        lambda: AddTaskRequest(type="work", expected_queue_time=-SECOND),
    ],
    ids=[
        "retry-delay",
        "retry-max-delay",
        "retry-max-count",
        "timeout",
        "zero-timeout",
        "policy-queue-time",
        "max-recoveries",
        "request-queue-time",
    ],
)
def test_negative_durations_and_counts_are_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        build()


async def test_adding_something_that_is_not_a_request_is_rejected() -> None:
    service = make_service()
    with pytest.raises(ValidationError, match="AddTaskRequest"):
        await service.add_tasks([{"type": "work"}])  # type: ignore[list-item]


async def test_get_task_of_an_unknown_id_is_none() -> None:
    assert await make_service().get_task(uuid4()) is None


async def test_a_task_id_that_is_not_a_uuid_is_rejected() -> None:
    with pytest.raises(ValidationError, match="UUID"):
        await make_service().get_task("not-a-uuid")  # type: ignore[arg-type]


@OPERATOR_ACTIONS
async def test_operator_action_on_an_unknown_task_raises_task_not_found(
    action: OperatorAction,
) -> None:
    unknown = uuid4()
    with pytest.raises(TaskNotFoundError) as caught:
        await action(make_service(), unknown, None)
    assert caught.value.task_id == unknown


# --- operator actions --------------------------------------------------------------------


async def test_resuming_an_error_task_runs_it_again() -> None:
    calls = Calls(results=[ValueError("card expired"), ProcessResult.DONE])
    async with FakeNode(handler(calls, retry_policy=NoRetryPolicy())) as node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.ERROR)

        resumed = await node.service.resume_task(task_id)

        assert resumed.status is TaskStatus.SUBMITTED
        done = await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 2
    assert done is not None
    assert done.last_error is None


async def test_resuming_a_waiting_task_runs_it_now_instead_of_at_its_run_time() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add(run_after_time=START + 3600 * SECOND)

        await node.service.resume_task(task_id)

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1
    assert node.clock.now() == START


async def test_an_error_task_can_be_marked_as_failed() -> None:
    async with FakeNode(
        handler(Calls(results=[ValueError("card expired")]), retry_policy=NoRetryPolicy())
    ) as node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.ERROR)

        failed = await node.service.mark_as_failed(task_id, reason="refunded by hand")

    assert failed.status is TaskStatus.FAILED
    assert node.task(task_id).status is TaskStatus.FAILED
    assert node.task(task_id).last_error == "refunded by hand"


async def test_a_cancelled_waiting_task_never_runs() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add(run_after_time=START + 30 * SECOND)

        await node.service.cancel_task(task_id)
        await node.advance(60 * SECOND)

        assert node.status(task_id) is TaskStatus.CANCELLED
    assert calls.count == 0


async def test_a_rescheduled_task_runs_at_its_new_time_and_not_the_old_one() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add(run_after_time=START + 30 * SECOND)

        await node.service.reschedule_task(task_id, START + 90 * SECOND)
        await node.advance_to(START + 30 * SECOND)
        assert node.status(task_id) is TaskStatus.WAITING

        await node.advance_to(START + 90 * SECOND)
        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1


@pytest.mark.parametrize(
    ("action", "status"),
    [
        (_cancel, TaskStatus.DONE),
        (_cancel, TaskStatus.SUBMITTED),
        (_resume, TaskStatus.DONE),
        (_mark_failed, TaskStatus.WAITING),
        (_reschedule, TaskStatus.ERROR),
    ],
    ids=["cancel-done", "cancel-submitted", "resume-done", "fail-waiting", "reschedule-error"],
)
async def test_operator_action_the_lifecycle_forbids_raises_invalid_transition(
    action: OperatorAction, status: TaskStatus
) -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    added = await service.add_task(AddTaskRequest(type="work"))
    dao.put(replace(dao.tasks[added.task_id], status=status))

    with pytest.raises(InvalidTransitionError):
        await action(service, added.task_id, None)

    assert dao.tasks[added.task_id].status is status


@OPERATOR_ACTIONS
async def test_operator_action_with_a_stale_version_raises_version_conflict(
    action: OperatorAction,
) -> None:
    dao, clock = InMemoryTaskDAO(), FakeClock()
    service = make_service(dao=dao, clock=clock)
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    old = dao.tasks[added.task_id]
    await service.reschedule_task(added.task_id, START + 2 * SECOND)  # someone else acted
    if action is _mark_failed:  # mark_as_failed needs ERROR: move the task there first
        dao.put(replace(dao.tasks[added.task_id], status=TaskStatus.ERROR))
    current = dao.tasks[added.task_id]

    with pytest.raises(VersionConflictError) as caught:
        await action(service, added.task_id, old.version)

    assert caught.value.expected_version == old.version
    assert dao.tasks[added.task_id] == current


async def test_operator_action_with_the_current_version_succeeds() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))

    cancelled = await service.cancel_task(added.task_id, version=dao.tasks[added.task_id].version)

    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.version == 1


async def test_operator_action_logs_the_task_id_and_the_status_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resilient_task")
    service = make_service()
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))

    await service.cancel_task(added.task_id)

    assert any(
        str(added.task_id) in r.getMessage() and "WAITING -> CANCELLED" in r.getMessage()
        for r in caplog.records
    )


# --- hostile input: one typed error each, nothing stored -------------------------------------


async def test_add_tasks_accepts_a_generator_and_stores_every_task() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)

    results = await service.add_tasks(AddTaskRequest(type="work", data=b"%d" % i) for i in range(3))

    assert len(results) == 3
    assert {dao.tasks[r.task_id].data for r in results} == {b"0", b"1", b"2"}


@pytest.mark.parametrize(
    "requests",
    [AddTaskRequest(type="work"), 5, None, ["work"], [AddTaskRequest(type="work"), object()]],
    ids=["single-request", "int", "none", "list-of-str", "list-with-object"],
)
async def test_add_tasks_refuses_what_is_not_an_iterable_of_requests(requests: Any) -> None:
    dao = InMemoryTaskDAO()
    with pytest.raises(ValidationError, match="AddTaskRequest"):
        await make_service(dao=dao).add_tasks(requests)
    assert not dao.tasks


async def test_a_payload_over_the_configured_maximum_is_refused_and_nothing_is_stored() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao, props=properties(max_payload_bytes=10))
    fits, too_big = b"x" * 10, b"x" * 11

    with pytest.raises(ValidationError, match="data is 11 bytes; the maximum is 10"):
        await service.add_tasks(
            [AddTaskRequest(type="work", data=fits), AddTaskRequest(type="work", data=too_big)]
        )
    assert not dao.tasks
    added = await service.add_task(AddTaskRequest(type="work", data=fits))
    assert dao.tasks[added.task_id].data == fits


def test_the_default_payload_maximum_is_one_mebibyte() -> None:
    assert properties().max_payload_bytes == 1024 * 1024


def _NEAR_THE_END_OF_TIME() -> FakeClock:  # noqa: N802 - reads as a constant
    return FakeClock(start=datetime.max.replace(tzinfo=UTC) - timedelta(days=30))


async def test_a_queue_time_that_overflows_the_clock_is_a_validation_error() -> None:
    # The node default is a property (at most ten years); near the end of time the sum must
    # still not raise OverflowError.
    dao = InMemoryTaskDAO()
    service = make_service(
        dao=dao, clock=_NEAR_THE_END_OF_TIME(), props=properties(expected_queue_time=MAX_DURATION)
    )

    with pytest.raises(ValidationError, match="pick-up deadline"):
        await service.add_task(AddTaskRequest(type="work"))
    assert not dao.tasks


async def test_a_queue_time_ending_past_the_storable_range_is_a_validation_error() -> None:
    clock = FakeClock(start=LATEST_TIME - SECOND)
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao, clock=clock)

    with pytest.raises(ValidationError, match="outside the storable range"):
        await service.add_task(AddTaskRequest(type="work", expected_queue_time=60 * SECOND))
    assert not dao.tasks


async def test_reschedule_to_a_time_that_cannot_round_trip_is_refused() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    before = dao.tasks[added.task_id]
    year_10000 = datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))

    with pytest.raises(ValidationError, match=r"run_at .* outside the storable range"):
        await service.reschedule_task(added.task_id, year_10000)
    assert dao.tasks[added.task_id] == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "BOGUS"}, "status must be one of"),
        ({"limit": "10"}, "limit must be a positive int, got str"),
        ({"limit": True}, "limit must be a positive int"),
        ({"limit": 0}, "limit must be a positive int, got 0"),
        ({"type": 5}, "type must be a str or None, got int"),
    ],
)
async def test_find_tasks_refuses_bad_filters_with_a_validation_error(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await make_service().find_tasks(**kwargs)


async def test_find_tasks_takes_a_status_by_name() -> None:
    service = make_service()
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    assert [t.id for t in await service.find_tasks(status="WAITING")] == [  # type: ignore[arg-type]
        added.task_id
    ]


@OPERATOR_ACTIONS
@pytest.mark.parametrize("version", ["1", True, -1, 2**63, 1.0])
async def test_operator_action_with_a_version_that_is_not_one_is_a_validation_error(
    action: OperatorAction, version: Any
) -> None:
    # resume_task(version="1") used to report a version conflict.
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    before = dao.tasks[added.task_id]

    with pytest.raises(ValidationError, match="version must be"):
        await action(service, added.task_id, version)
    assert dao.tasks[added.task_id] == before


async def test_mark_as_failed_refuses_a_reason_that_is_not_text() -> None:
    service = make_service()
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    with pytest.raises(ValidationError, match="reason must be a str"):
        await service.mark_as_failed(added.task_id, reason=5)  # type: ignore[arg-type]


async def test_resume_with_a_queue_time_that_overflows_the_clock_is_a_validation_error() -> None:
    dao = InMemoryTaskDAO()
    service = make_service(dao=dao)
    added = await service.add_task(AddTaskRequest(type="work", run_after_time=START + SECOND))
    before = dao.tasks[added.task_id]
    overflowing = make_service(
        dao=dao, clock=_NEAR_THE_END_OF_TIME(), props=properties(expected_queue_time=MAX_DURATION)
    )

    with pytest.raises(ValidationError, match="pick-up deadline"):
        await overflowing.resume_task(added.task_id)
    assert dao.tasks[added.task_id] == before

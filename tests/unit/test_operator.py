"""TaskOperator over the in-memory store: reads, per-task outcomes, dry runs and bulk actions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from uuid import uuid4

import pytest

from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.domain.task import Task, TaskStatus
from resilient_task.errors import BackendUnavailableError, TaskNotFoundError, ValidationError
from resilient_task.ports.task_queries import TaskQuery
from resilient_task.service.operator import Action, Outcome, TaskOperator
from tests.unit.helpers import START, make_service, stored_task

SECOND = timedelta(seconds=1)
_S = TaskStatus


@dataclass
class Setup:
    dao: InMemoryTaskDAO
    clock: FakeClock
    triggerer: InMemoryTriggerer
    operator: TaskOperator


def setup(*tasks: Task, queries: InMemoryTaskQueries | None = None) -> Setup:
    dao = InMemoryTaskDAO(tasks=tasks)
    clock = FakeClock()
    triggerer = InMemoryTriggerer()
    service = make_service(dao=dao, clock=clock, triggerer=triggerer)
    operator = TaskOperator(
        service=service, queries=queries or InMemoryTaskQueries(dao=dao), clock=clock
    )
    return Setup(dao, clock, triggerer, operator)


def error_task(**fields: object) -> Task:
    fields.setdefault("next_event_time", START - 60 * SECOND)
    return stored_task(status=_S.ERROR, **fields)  # type: ignore[arg-type]


# -- single actions ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_resume_runs_an_error_task_and_reports_it_ok() -> None:
    task = error_task(version=3)
    s = setup(task)

    [result] = await s.operator.act(Action.RESUME, [task.id], version=3)

    assert result.outcome is Outcome.OK
    assert result.task is not None
    assert result.task.status is _S.SUBMITTED
    assert s.dao.tasks[task.id].status is _S.SUBMITTED
    assert s.dao.tasks[task.id].version == 4
    assert [t.id for t in s.triggerer.sent] == [task.id]


@pytest.mark.anyio
async def test_each_refusal_gets_its_own_outcome_and_writes_nothing() -> None:
    error = error_task(version=2)
    waiting = stored_task(status=_S.WAITING, next_event_time=START, version=5)
    missing = uuid4()
    s = setup(error, waiting)

    changed = await s.operator.act(Action.RESUME, [error.id], version=1)
    results = await s.operator.act(Action.CANCEL, [error.id, missing, waiting.id])

    assert [r.outcome for r in changed] == [Outcome.CHANGED]
    assert [r.outcome for r in results] == [Outcome.NOT_ALLOWED, Outcome.NOT_FOUND, Outcome.OK]
    assert "ERROR" in results[0].detail
    assert s.dao.tasks[error.id] == error
    assert s.dao.tasks[waiting.id].status is _S.CANCELLED


@pytest.mark.anyio
async def test_fail_records_the_reason_and_reschedule_moves_a_waiting_task() -> None:
    error = error_task()
    waiting = stored_task(status=_S.WAITING, next_event_time=START)
    s = setup(error, waiting)
    later = START + timedelta(hours=1)

    [failed] = await s.operator.act(Action.FAIL, [error.id], reason="refunded by hand")
    [moved] = await s.operator.act(Action.RESCHEDULE, [waiting.id], run_at=later)

    assert failed.outcome is moved.outcome is Outcome.OK
    assert s.dao.tasks[error.id].status is _S.FAILED
    assert s.dao.tasks[error.id].last_error == "refunded by hand"
    assert s.dao.tasks[waiting.id].next_event_time == later


@pytest.mark.anyio
async def test_a_dry_run_reports_every_outcome_and_writes_nothing() -> None:
    error = error_task(version=2)
    done = stored_task(status=_S.DONE, next_event_time=START)
    s = setup(error, done)
    before = dict(s.dao.tasks)

    results = await s.operator.act(Action.RESUME, [error.id, done.id, uuid4()], dry_run=True)
    stale = await s.operator.act(Action.RESUME, [error.id], version=1, dry_run=True)

    assert [r.outcome for r in results] == [Outcome.OK, Outcome.NOT_ALLOWED, Outcome.NOT_FOUND]
    assert [r.outcome for r in stale] == [Outcome.CHANGED]
    assert "version 2" in stale[0].detail
    assert all(r.dry_run for r in [*results, *stale])
    assert dict(s.dao.tasks) == before
    assert s.triggerer.sent == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "arguments"),
    [
        (Action.RESUME, {"version": -1}),
        (Action.RESUME, {"version": "1"}),
        (Action.RESUME, {"run_at": START}),
        (Action.RESCHEDULE, {}),
        (Action.RESCHEDULE, {"run_at": START.replace(tzinfo=None)}),
        (Action.CANCEL, {"reason": "no"}),
        ("resume", {}),
    ],
)
async def test_wrong_arguments_are_validation_errors_before_anything_is_read(
    action: Action, arguments: dict[str, object]
) -> None:
    task = error_task()
    s = setup(task)
    s.dao.fail_next(1)  # a read would raise BackendUnavailableError instead

    with pytest.raises(ValidationError):
        await s.operator.act(action, [task.id], **arguments)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_repeated_id_is_acted_on_and_reported_once() -> None:
    task = error_task()
    s = setup(task)

    results = await s.operator.act(Action.RESUME, [task.id, task.id, task.id])

    assert [(r.task_id, r.outcome) for r in results] == [(task.id, Outcome.OK)]
    assert s.dao.tasks[task.id].version == task.version + 1


@pytest.mark.anyio
async def test_a_task_id_that_is_not_a_uuid_is_a_validation_error() -> None:
    s = setup()

    with pytest.raises(ValidationError):
        await s.operator.act(Action.RESUME, ["not-a-uuid"])  # type: ignore[list-item]


# -- bulk actions -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_bulk_resume_acts_on_the_selected_tasks_only() -> None:
    errors = [error_task(type="charge", next_event_time=START - i * SECOND) for i in range(5)]
    other_type = error_task(type="refund")
    waiting = stored_task(status=_S.WAITING, next_event_time=START, type="charge")
    s = setup(*errors, other_type, waiting)

    query = s.operator.query(statuses=[_S.ERROR], types=["charge"], limit=3)
    results = await s.operator.act_on_selection(Action.RESUME, query)

    oldest_three = [t.id for t in sorted(errors, key=lambda t: t.next_event_time)[:3]]
    assert [r.task_id for r in results] == oldest_three
    assert all(r.outcome is Outcome.OK for r in results)
    assert sorted(t.id for t in s.dao.tasks.values() if t.status is _S.SUBMITTED) == sorted(
        oldest_three
    )
    assert s.dao.tasks[other_type.id].status is _S.ERROR


class _ChangingQueries(InMemoryTaskQueries):
    """Lists, then lets another operator resume the first listed task (a race)."""

    def __init__(self, dao: InMemoryTaskDAO, clock: FakeClock) -> None:
        super().__init__(dao=dao)
        self._dao_ = dao
        self._clock = clock

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        listed = await super().list_tasks(query)
        first = self._dao_.tasks[listed[0].id]
        self._dao_.put(first.resume(now=self._clock.now(), deadline=self._clock.now()))
        return listed


@pytest.mark.anyio
async def test_a_bulk_action_reports_a_task_changed_after_selection_and_leaves_it_alone() -> None:
    first, second = error_task(next_event_time=START - 120 * SECOND), error_task()
    dao = InMemoryTaskDAO(tasks=[first, second])
    clock = FakeClock()
    service = make_service(dao=dao, clock=clock)
    operator = TaskOperator(service=service, queries=_ChangingQueries(dao, clock), clock=clock)

    results = await operator.act_on_selection(
        Action.FAIL, operator.query(statuses=[_S.ERROR], limit=10)
    )

    assert [(r.task_id, r.outcome) for r in results] == [
        (first.id, Outcome.CHANGED),
        (second.id, Outcome.OK),
    ]
    assert dao.tasks[first.id].status is _S.SUBMITTED  # the other operator's change stands
    assert dao.tasks[second.id].status is _S.FAILED


@pytest.mark.anyio
async def test_a_bulk_dry_run_lists_what_it_would_do_and_writes_nothing() -> None:
    tasks = [error_task() for _ in range(4)]
    s = setup(*tasks)

    results = await s.operator.act_on_selection(
        Action.RESUME, s.operator.query(statuses=[_S.ERROR]), dry_run=True
    )

    assert len(results) == 4
    assert all(r.outcome is Outcome.OK and r.dry_run for r in results)
    assert all(t.status is _S.ERROR for t in s.dao.tasks.values())


@pytest.mark.anyio
async def test_a_store_failure_ends_a_bulk_action_with_the_store_error_itself() -> None:
    tasks = [error_task() for _ in range(30)]
    s = setup(*tasks)
    query = s.operator.query(statuses=[_S.ERROR], limit=100)
    selected = await s.operator.list_tasks(query)
    s.dao.fail_next(1, operation="apply")

    with pytest.raises(BackendUnavailableError):
        await s.operator.act_on_selection(Action.RESUME, query)

    resumed = sum(t.status is _S.SUBMITTED for t in s.dao.tasks.values())
    assert len(selected) == 30
    assert resumed <= 7  # none started after the failure; of the 8 running at once, 7 finish


# -- reads ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_older_than_counts_back_from_the_operators_clock() -> None:
    old = error_task(next_event_time=START - 11 * 60 * SECOND)
    recent = error_task(next_event_time=START - 9 * 60 * SECOND)
    s = setup(old, recent)

    listed = await s.operator.list_tasks(s.operator.query(older_than=timedelta(minutes=10)))
    everything = await s.operator.list_tasks(s.operator.query(older_than=timedelta(0)))

    assert [t.id for t in listed] == [old.id]
    assert [t.id for t in everything] == [old.id, recent.id]
    with pytest.raises(ValidationError):
        s.operator.query(older_than=-SECOND)


@pytest.mark.anyio
async def test_show_returns_the_payload_and_refuses_an_unknown_id() -> None:
    task = error_task(data=b"card 4242")
    s = setup(task)

    assert (await s.operator.show(task.id)).data == b"card 4242"
    with pytest.raises(TaskNotFoundError):
        await s.operator.show(uuid4())


@pytest.mark.anyio
async def test_count_reports_statuses_types_and_the_age_of_the_oldest_overdue_tasks() -> None:
    submitted = stored_task(status=_S.SUBMITTED, next_event_time=START - 90 * SECOND)
    on_time = stored_task(status=_S.SUBMITTED, next_event_time=START + SECOND)
    s = setup(submitted, on_time, error_task(type="charge"))

    plain = await s.operator.count()
    detailed = await s.operator.count(by_type=True)

    assert plain.by_type is None
    assert plain.by_status[_S.SUBMITTED] == 2
    assert plain.by_status[_S.ERROR] == 1
    assert plain.oldest_overdue == {_S.SUBMITTED: 90 * SECOND, _S.PROCESSING: None}
    assert detailed.by_type == {(_S.SUBMITTED, "work"): 2, (_S.ERROR, "charge"): 1}
    assert plain.at == START


@pytest.mark.anyio
async def test_listed_tasks_carry_no_payload() -> None:
    s = setup(replace(error_task(), data=b"personal data"))

    [listed] = await s.operator.list_tasks(s.operator.query())

    assert listed.data == b""

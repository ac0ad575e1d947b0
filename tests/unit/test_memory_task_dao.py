"""InMemoryTaskDAO: the TaskDAO contract plus its own test helpers and optimistic commits."""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio
import pytest

from resilient_task.adapters.memory import InMemoryTaskDAO, InMemoryTransaction
from resilient_task.domain.task import TaskStatus
from resilient_task.errors import BackendUnavailableError, ValidationError, VersionConflictError
from resilient_task.ports.task_dao import InsertOutcome, TaskChange
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.testing.task_dao_contract import NOW, TaskDAOContract, make_task, processing

SECOND = timedelta(seconds=1)


class TestInMemoryTaskDAOContract(TaskDAOContract):
    @pytest.fixture
    async def dao(self) -> AnyTaskDAO:
        return InMemoryTaskDAO()


@pytest.fixture
def dao() -> InMemoryTaskDAO:
    return InMemoryTaskDAO()


@pytest.mark.anyio
async def test_staged_change_that_lost_a_race_fails_the_commit_and_writes_nothing(
    dao: InMemoryTaskDAO,
) -> None:
    task = await processing(dao)
    new = make_task()
    calls: list[str] = []

    async def callback() -> None:
        calls.append("called")

    recovered = task.recover(now=NOW, deadline=NOW)

    async def unit_of_work_losing_a_race() -> None:
        async with dao.transaction() as tx:
            await dao.insert_tasks([new], transaction=tx)
            done = task.complete(now=NOW)
            assert await dao.apply([TaskChange(done, 1)], transaction=tx) == [True]
            dao.after_commit(tx, callback)
            assert await dao.apply([TaskChange(recovered, 1)]) == [True]

    with pytest.raises(VersionConflictError) as caught:
        await unit_of_work_losing_a_race()
    assert caught.value.task_id == task.id
    assert dao.tasks[task.id] == recovered
    assert new.id not in dao.tasks
    assert calls == []


@pytest.mark.anyio
async def test_staged_insert_that_lost_a_race_fails_the_commit(dao: InMemoryTaskDAO) -> None:
    async def unit_of_work_losing_a_race() -> None:
        async with dao.transaction() as tx:
            await dao.insert_tasks([make_task(unique_key="k")], transaction=tx)
            await dao.insert_tasks([make_task(unique_key="k")])

    with pytest.raises(VersionConflictError):
        await unit_of_work_losing_a_race()
    assert len(dao.tasks) == 1


@pytest.mark.anyio
async def test_cancelled_transaction_rolls_back(dao: InMemoryTaskDAO) -> None:
    with anyio.CancelScope() as scope:
        async with dao.transaction() as tx:
            await dao.insert_tasks([make_task()], transaction=tx)
            scope.cancel()
            await anyio.sleep(1)
    assert dao.tasks == {}


@pytest.mark.anyio
async def test_foreign_or_finished_transaction_is_rejected(dao: InMemoryTaskDAO) -> None:
    async def noop() -> None:
        pass

    with pytest.raises(ValidationError):
        await dao.insert_tasks([make_task()], transaction=object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        dao.after_commit(None, noop)  # type: ignore[arg-type]
    async with InMemoryTaskDAO().transaction() as foreign:
        with pytest.raises(ValidationError):
            await dao.apply([], transaction=foreign)
    async with dao.transaction() as tx:
        assert isinstance(tx, InMemoryTransaction)
        assert tx.active
    assert not tx.active
    with pytest.raises(ValidationError):
        await dao.insert_tasks([make_task()], transaction=tx)


@pytest.mark.anyio
async def test_fail_next_simulates_an_outage_then_recovers(dao: InMemoryTaskDAO) -> None:
    dao.fail_next(2)
    for _ in range(2):
        with pytest.raises(BackendUnavailableError) as caught:
            await dao.count_by_status()
        assert caught.value.transient
    assert (await dao.count_by_status())[TaskStatus.WAITING] == 0


@pytest.mark.anyio
async def test_fail_next_can_target_one_operation_and_custom_error(dao: InMemoryTaskDAO) -> None:
    dao.fail_next(operation="claim_due", error=RuntimeError("boom"))
    await dao.insert_tasks([make_task()])
    with pytest.raises(RuntimeError, match="boom"):
        await dao.claim_due(now=NOW, limit=1, deadline=NOW)
    assert len(await dao.claim_due(now=NOW, limit=1, deadline=NOW)) == 1


@pytest.mark.anyio
async def test_failed_commit_rolls_back(dao: InMemoryTaskDAO) -> None:
    dao.fail_next(operation="commit")

    async def unit_of_work() -> None:
        async with dao.transaction() as tx:
            await dao.insert_tasks([make_task()], transaction=tx)

    with pytest.raises(BackendUnavailableError):
        await unit_of_work()
    assert dao.tasks == {}


@pytest.mark.anyio
async def test_claim_due_and_find_overdue_leave_payloads_out(dao: InMemoryTaskDAO) -> None:
    await dao.insert_tasks([make_task(next_event_time=NOW - SECOND)])
    [claimed] = await dao.claim_due(now=NOW, limit=1, deadline=NOW - SECOND)
    assert claimed.data == b""
    [overdue] = await dao.find_overdue(TaskStatus.SUBMITTED, now=NOW, limit=1)
    assert overdue.data == b""
    assert dao.tasks[claimed.id].data == b"payload"


@pytest.mark.anyio
async def test_naive_times_and_non_new_tasks_are_rejected(dao: InMemoryTaskDAO) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        await dao.insert_tasks([make_task(next_event_time=datetime(2030, 1, 1))])
    with pytest.raises(ValidationError, match="timezone-aware"):
        await dao.claim_due(now=datetime(2030, 1, 1), limit=1, deadline=NOW)
    with pytest.raises(ValidationError, match="version 0"):
        await dao.insert_tasks([make_task(status=TaskStatus.PROCESSING)])
    with pytest.raises(ValidationError, match="limit"):
        await dao.find_tasks(limit=-1)
    assert dao.tasks == {}


def test_seeded_tasks_are_visible_read_only_and_reset_forgets_them() -> None:
    task = make_task(status=TaskStatus.ERROR, version=7, unique_key="k")
    dao = InMemoryTaskDAO(tasks=[task])
    assert dict(dao.tasks) == {task.id: task}
    with pytest.raises(TypeError):
        dao.tasks[task.id] = task  # type: ignore[index]
    dao.fail_next()
    dao.reset()
    assert dao.tasks == {}


@pytest.mark.anyio
async def test_seeded_unique_key_deduplicates_inserts() -> None:
    task = make_task(status=TaskStatus.DONE, version=3, unique_key="k")
    dao = InMemoryTaskDAO(tasks=[task])
    outcomes = await dao.insert_tasks([make_task(unique_key="k")])
    assert outcomes == [InsertOutcome(task.id, created=False)]

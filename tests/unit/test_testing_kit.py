"""resilient_task.testing: settle, run_until_idle, FakeClock.next_wake, and what it imports."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import anyio
import pytest

import resilient_task.testing as kit
from resilient_task import (
    AddTaskRequest,
    ConfigurationError,
    ExponentialRetryPolicy,
    NoRetryPolicy,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    TaskStatus,
)
from resilient_task.testing import (
    FakeClock,
    InMemoryTaskDAO,
    SettleError,
    run_until_idle,
    settle,
)

pytestmark = pytest.mark.anyio


async def done(task: Task) -> ProcessResult:
    return ProcessResult.DONE


async def test_settle_runs_the_work_due_now_without_moving_the_clock() -> None:
    dao, clock = InMemoryTaskDAO(), FakeClock()
    handler = TaskHandler(types={"work"}, processor=done)
    async with ResilientTask(handlers=[handler], dao=dao, clock=clock) as app:
        start = clock.now()
        ids = [(await app.service.add_task(AddTaskRequest(type="work"))).task_id for _ in range(20)]
        await settle(app)
        assert {dao.tasks[i].status for i in ids} == {TaskStatus.DONE}
        assert clock.now() == start


async def test_settle_claims_a_task_whose_run_time_is_exactly_now() -> None:
    dao, clock = InMemoryTaskDAO(), FakeClock()
    handler = TaskHandler(types={"work"}, processor=done)
    async with ResilientTask(handlers=[handler], dao=dao, clock=clock) as app:
        later = clock.now() + timedelta(seconds=1)
        added = await app.service.add_task(AddTaskRequest(type="work", run_after_time=later))
        await settle(app)
        assert dao.tasks[added.task_id].status is TaskStatus.WAITING
        clock.set(later)  # no sleeper woken: only settle's own poll can claim it
        await settle(app)
        assert dao.tasks[added.task_id].status is TaskStatus.DONE


async def test_settle_names_what_is_pending_when_a_handler_waits_for_the_fake_time() -> None:
    clock = FakeClock()

    async def slow(task: Task) -> ProcessResult:
        await clock.sleep(60)
        return ProcessResult.DONE

    handler = TaskHandler(types={"slow"}, processor=slow)
    async with ResilientTask(handlers=[handler], in_memory=True, clock=clock) as app:
        start = clock.now()
        await app.service.add_task(AddTaskRequest(type="slow"))
        with pytest.raises(SettleError, match=r"1 task\(s\) running; pending: 1 PROCESSING"):
            await settle(app, max_rounds=3)
        reached = await run_until_idle(app)
        assert reached == clock.now() == start + timedelta(seconds=60)
        assert (await app.dao.count_by_status())[TaskStatus.DONE] == 1


async def test_run_until_idle_follows_retries_to_error_and_returns_the_time_reached() -> None:
    dao, clock = InMemoryTaskDAO(), FakeClock()
    start = clock.now()

    async def failing(task: Task) -> ProcessResult:
        raise RuntimeError("always")

    retry = ExponentialRetryPolicy(delay=timedelta(minutes=1), multiplier=60, max_count=2)
    handler = TaskHandler(types={"work"}, processor=failing, retry_policy=retry)
    async with ResilientTask(handlers=[handler], dao=dao, clock=clock) as app:
        added = await app.service.add_task(AddTaskRequest(type="work"))
        reached = await run_until_idle(app)
        task = dao.tasks[added.task_id]
        assert (task.status, task.processing_tries_count) == (TaskStatus.ERROR, 3)
        assert reached == start + timedelta(minutes=1) + timedelta(hours=1)


async def test_run_until_idle_stops_before_a_run_time_after_until() -> None:
    dao, clock = InMemoryTaskDAO(), FakeClock()
    handler = TaskHandler(types={"work"}, processor=done, retry_policy=NoRetryPolicy())
    async with ResilientTask(handlers=[handler], dao=dao, clock=clock) as app:
        soon, far = clock.now() + timedelta(hours=1), clock.now() + timedelta(days=7)
        first = await app.service.add_task(AddTaskRequest(type="work", run_after_time=soon))
        second = await app.service.add_task(AddTaskRequest(type="work", run_after_time=far))
        reached = await run_until_idle(app, until=soon + timedelta(days=1))
        assert reached == soon
        assert dao.tasks[first.task_id].status is TaskStatus.DONE
        assert dao.tasks[second.task_id].status is TaskStatus.WAITING


async def test_run_until_idle_gives_up_on_a_task_that_reschedules_itself_forever() -> None:
    clock = FakeClock()

    async def again(task: Task) -> ProcessResult:
        return ProcessResult.COMMIT_AND_RETRY

    forever = ExponentialRetryPolicy(delay=timedelta(seconds=30), multiplier=1, max_count=10**6)
    handler = TaskHandler(types={"tick"}, processor=again, retry_policy=forever)
    async with ResilientTask(handlers=[handler], in_memory=True, clock=clock) as app:
        await app.service.add_task(AddTaskRequest(type="tick"))
        with pytest.raises(SettleError, match="still not idle after 5 clock advances"):
            await run_until_idle(app, max_steps=5)


async def test_the_helpers_need_a_started_node_on_a_fake_clock() -> None:
    app = ResilientTask(in_memory=True)
    with pytest.raises(ConfigurationError, match="start the node first"):
        await settle(app)
    async with app:
        with pytest.raises(TypeError, match="must run on a FakeClock, not SystemClock"):
            await run_until_idle(app)


async def test_next_wake_is_the_earliest_sleeper_or_live_timeout() -> None:
    clock = FakeClock()
    assert clock.next_wake() is None
    with clock.timeout_scope(30):
        assert clock.next_wake() == clock.now() + timedelta(seconds=30)
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 10)
            await clock.settle()
            assert clock.next_wake() == clock.now() + timedelta(seconds=10)
            await clock.advance(10)
        assert clock.next_wake() == clock.now() + timedelta(seconds=20)
    await clock.advance(20)
    assert clock.next_wake() is None


def test_unknown_names_are_attribute_errors_and_known_ones_are_exported() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        kit.nothing_here  # noqa: B018
    assert all(getattr(kit, name) is not None for name in kit.__all__)


def test_importing_resilient_task_or_loading_the_plugin_imports_no_contract_suite() -> None:
    code = (
        "import sys, resilient_task, resilient_task.adapters.memory\n"
        "assert 'pytest' not in sys.modules, 'resilient_task imported pytest'\n"
        "assert 'resilient_task.testing' not in sys.modules\n"
        "import resilient_task.testing.pytest_plugin\n"
        "assert not [m for m in sys.modules if m.endswith('_contract')]\n"
        "assert 'hypothesis' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

"""WorkerPool and run_in_context: reused worker tasks that behave like a task per job."""

from __future__ import annotations

import contextvars
import gc
import weakref

import anyio
import anyio.lowlevel
import pytest

from resilient_task.service.workers import WorkerPool, run_in_context
from tests.unit.helpers import idle, settle

pytestmark = pytest.mark.anyio

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def test_sequential_jobs_reuse_one_worker() -> None:
    done: list[int] = []

    async def work(job: int) -> None:
        await anyio.lowlevel.checkpoint()
        done.append(job)

    pool: WorkerPool[int] = WorkerPool(work)
    submitted: list[int] = []
    async with anyio.create_task_group() as tg:
        for job in range(20):
            submitted.append(job)
            pool.submit(tg, job)
            await settle(lambda: len(done) == len(submitted))
        tg.cancel_scope.cancel()  # the idle worker
    assert done == list(range(20))
    assert pool.spawned == 1


async def test_concurrent_jobs_each_get_a_worker_of_their_own() -> None:
    running = 0
    peak = 0
    release = anyio.Event()

    async def work(job: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    pool: WorkerPool[int] = WorkerPool(work)
    async with anyio.create_task_group() as tg:
        for job in range(10):
            pool.submit(tg, job)
        await settle(lambda: running == 10)
        release.set()
        await settle(lambda: running == 0)
        for job in range(10):  # the ten idle workers take the next ten jobs
            pool.submit(tg, job)
        await settle(lambda: running == 0)
        tg.cancel_scope.cancel()
    assert peak == 10
    assert pool.spawned == 10


async def test_workers_beyond_the_idle_limit_end_after_their_job() -> None:
    release = anyio.Event()

    async def work(job: int) -> None:
        await release.wait()

    pool: WorkerPool[int] = WorkerPool(work, max_idle=2)
    async with anyio.create_task_group() as tg:
        for job in range(5):
            pool.submit(tg, job)
        await idle()
        release.set()
        await idle()
        for job in range(5):
            pool.submit(tg, job)
        await idle()
        tg.cancel_scope.cancel()
    assert pool.spawned == 5 + 3  # two were kept and reused


async def test_a_context_variable_set_by_a_job_does_not_leak_into_the_next_one() -> None:
    seen: list[str] = []

    async def work(job: str) -> None:
        seen.append(request_id.get())
        request_id.set(job)
        await anyio.lowlevel.checkpoint()
        seen.append(request_id.get())

    pool: WorkerPool[str] = WorkerPool(work)
    async with anyio.create_task_group() as tg:
        token = request_id.set("submitter")
        pool.submit(tg, "first")
        request_id.reset(token)
        await settle(lambda: len(seen) == 2)
        pool.submit(tg, "second")
        await settle(lambda: len(seen) == 4)
        tg.cancel_scope.cancel()
    # Each job starts from the submitter's context at submit time, as a spawned task would.
    assert seen == ["submitter", "first", "none", "second"]
    assert pool.spawned == 1
    assert request_id.get() == "none"


async def test_cancelling_the_task_group_cancels_running_and_idle_workers() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def work(job: int) -> None:
        started.append(job)
        if job == 0:
            return
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(job)

    pool: WorkerPool[int] = WorkerPool(work)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool.submit(tg, 0)
            pool.submit(tg, 1)
            await settle(lambda: len(started) == 2)
            await idle()
            tg.cancel_scope.cancel()
    assert cancelled == [1]


async def test_run_in_context_returns_raises_and_is_cancelled_like_a_plain_await() -> None:
    context = contextvars.copy_context()

    async def answer() -> int:
        request_id.set("inside")
        await anyio.lowlevel.checkpoint()
        return 42

    async def fails() -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError("boom")

    async def hangs() -> None:
        await anyio.sleep_forever()

    assert await run_in_context(context, answer()) == 42
    assert context[request_id] == "inside"
    assert request_id.get() == "none"
    with pytest.raises(ValueError, match="boom"):
        await run_in_context(context, fails())
    with anyio.move_on_after(0.01) as scope:
        await run_in_context(context, hangs())
    assert scope.cancelled_caught


async def test_run_in_context_lets_the_coroutine_handle_a_cancellation_itself() -> None:
    context = contextvars.copy_context()
    steps: list[str] = []

    async def cleans_up() -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            steps.append("cancelled")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()
                steps.append("cleaned up")
        return "unreachable"  # pragma: no cover

    with anyio.move_on_after(0.01):
        await run_in_context(context, cleans_up())
    assert steps == ["cancelled", "cleaned up"]


async def test_an_idle_worker_keeps_no_reference_to_its_finished_job() -> None:
    class Job:
        pass

    async def work(job: Job) -> None:
        await anyio.lowlevel.checkpoint()

    pool: WorkerPool[Job] = WorkerPool(work)
    job = Job()
    finished = weakref.ref(job)
    async with anyio.create_task_group() as tg:
        pool.submit(tg, job)
        del job
        await idle()
        gc.collect()
        assert finished() is None
        tg.cancel_scope.cancel()

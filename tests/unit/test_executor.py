"""TaskExecutor: version-checked grabs and completions, retries, timeouts, limits, transactions."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from uuid import UUID, uuid4

import anyio
import anyio.to_thread
import pytest

from resilient_task import (
    AddTaskRequest,
    BackendError,
    ConfigurationError,
    ExponentialRetryPolicy,
    NoRetryPolicy,
    ProcessResult,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    Task,
    TaskHandler,
    TaskStatus,
    VersionConflictError,
    blocking_processor,
    current_context,
    current_transaction,
)
from resilient_task.adapters.memory import FakeClock, InMemoryTransaction
from tests.unit.helpers import (
    START,
    Calls,
    FakeNode,
    Gauge,
    advance_until,
    handler,
    idle,
    make_resumer,
    properties,
    settle,
    stored_task,
)

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)
TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")
MICROSECOND = timedelta(microseconds=1)
FINISHED = (TaskStatus.WAITING, TaskStatus.ERROR, TaskStatus.DONE)


# --- version checks: grab --------------------------------------------------------------------


async def test_trigger_with_an_old_version_grabs_nothing_and_runs_nothing() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task = stored_task(
            status=TaskStatus.SUBMITTED, next_event_time=START + 60 * SECOND, version=3
        )
        node.dao.put(task)

        await node.executor.on_trigger(replace(task.base, version=2))
        await idle()

        assert node.task(task.id) == task
        assert calls.count == 0
        assert node.executor.stats["stale"] == 1

        await node.executor.on_trigger(task.base)
        await node.wait_for(task.id, TaskStatus.DONE)
    assert calls.count == 1


async def test_duplicate_triggers_run_the_handler_once() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add()
        base = node.task(task_id).base

        await node.triggerer.trigger([base, base, base])  # the broker delivered it 4 times

        await settle(lambda: node.executor.stats["stale"] == 3)
        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1
    assert node.executor.stats["grabbed"] == 1


async def test_a_trigger_naming_another_type_runs_the_stored_tasks_handler() -> None:
    work, other = Calls(), Calls()
    async with FakeNode(handler(work), handler(other, types=("other",))) as node:
        task = stored_task(status=TaskStatus.SUBMITTED, next_event_time=START + 60 * SECOND)
        node.dao.put(task)

        await node.executor.on_trigger(replace(task.base, type="other"))
        await node.wait_for(task.id, TaskStatus.DONE)
    assert (work.count, other.count) == (1, 0)


async def test_a_forged_trigger_with_an_unhandled_type_cannot_put_a_handled_task_in_error() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task = stored_task(status=TaskStatus.SUBMITTED, next_event_time=START + 60 * SECOND)
        node.dao.put(task)

        await node.executor.on_trigger(replace(task.base, type="nobody-handles-this"))
        await node.wait_for(task.id, TaskStatus.DONE)
    assert calls.count == 1
    assert node.executor.stats["no_handler"] == 0


async def test_a_stored_task_without_handler_goes_to_error_whatever_the_trigger_says() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        task = stored_task(
            status=TaskStatus.SUBMITTED, next_event_time=START + 60 * SECOND, type="orphan"
        )
        node.dao.put(task)

        await node.executor.on_trigger(replace(task.base, type="work"))
        stored = await node.wait_for(task.id, TaskStatus.ERROR)
    assert calls.count == 0
    assert stored is not None
    assert "'orphan'" in (stored.last_error or "")


# --- version checks: completion (fencing) --------------------------------------------------


class FirstRunWaits:
    """A processor whose first run waits for :attr:`release` and then ends with ``outcome``."""

    def __init__(self, outcome: ProcessResult | Exception) -> None:
        self.outcome = outcome
        self.release = anyio.Event()
        self.runs: list[Task] = []

    async def __call__(self, task: Task) -> ProcessResult:
        self.runs.append(task)
        if len(self.runs) > 1:
            return ProcessResult.DONE
        await self.release.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


LATE_OUTCOMES = pytest.mark.parametrize(
    "outcome",
    [ProcessResult.DONE, ProcessResult.DONE_AND_DELETE, ValueError("late failure")],
    ids=["finish", "finish-and-delete", "retry"],
)


@LATE_OUTCOMES
async def test_late_outcome_after_an_operator_resumed_the_task_is_fenced(
    outcome: ProcessResult | Exception,
) -> None:
    processor = FirstRunWaits(outcome)
    async with FakeNode(handler(processor)) as node:
        task_id = await node.add()
        await settle(lambda: len(processor.runs) == 1)

        await node.service.resume_task(task_id)  # the operator thinks it is stuck
        done = await node.wait_for(task_id, TaskStatus.DONE)
        processor.release.set()  # the first run finishes late

        await settle(lambda: node.executor.stats["fenced"] == 1)
        assert node.task(task_id) == done
    assert len(processor.runs) == 2


@LATE_OUTCOMES
async def test_late_outcome_after_another_node_recovered_the_task_is_fenced(
    outcome: ProcessResult | Exception,
) -> None:
    processor = FirstRunWaits(outcome)
    policy = SimpleProcessingPolicy(timeout=10 * SECOND)
    work = handler(processor, processing_policy=policy)
    async with FakeNode(work) as node:
        task_id = await node.add()
        await settle(lambda: len(processor.runs) == 1)
        # Another node whose clock is past this run's deadline (timeout + grace) recovers it.
        later = FakeClock(start=START + 10 * SECOND + properties().processing_grace + SECOND)
        await make_resumer(work, dao=node.dao, clock=later).run_once()
        recovered = node.task(task_id)
        assert (recovered.status, recovered.recovery_count) == (TaskStatus.SUBMITTED, 1)

        processor.release.set()

        await settle(lambda: node.executor.stats["fenced"] == 1)
        assert node.task(task_id) == recovered


async def running(handler_started: Callable[[], bool]) -> None:
    """Wait until a handler started, then let its timeout watchdog start sleeping too."""
    await settle(handler_started)
    await idle()


def run_finished(node: FakeNode, task_id: UUID, calls: Calls, runs: int) -> Callable[[], bool]:
    """Whether the processor ran ``runs`` times and the last outcome is recorded."""
    return lambda: calls.count == runs and node.status(task_id) in FINISHED


# --- retries -----------------------------------------------------------------------------


async def test_failing_task_runs_on_the_exact_retry_schedule_then_goes_to_error() -> None:
    clock = FakeClock()
    calls = Calls(clock, results=[ConnectionError("bank API answered 503")])
    policy = ExponentialRetryPolicy(delay=5 * SECOND, multiplier=4, max_count=3)
    async with FakeNode(handler(calls, retry_policy=policy), clock=clock) as node:
        task_id = await node.add()
        await settle(run_finished(node, task_id, calls, 1))

        for runs, due in enumerate([5, 25, 105], start=1):
            await node.advance_to(START + due * SECOND - MICROSECOND)
            await idle()
            assert calls.count == runs, f"ran before its retry at +{due}s"
            assert node.status(task_id) is TaskStatus.WAITING

            await node.advance_to(START + due * SECOND)
            await settle(run_finished(node, task_id, calls, runs + 1))

    assert calls.times == [START + s * SECOND for s in (0, 5, 25, 105)]
    task = node.task(task_id)
    assert task.status is TaskStatus.ERROR
    assert task.last_error is not None
    assert "gave up after 4 attempt(s)" in task.last_error
    assert "ConnectionError: bank API answered 503" in task.last_error


async def test_retried_task_records_the_error_of_its_last_attempt() -> None:
    calls = Calls(results=[ValueError("first"), ProcessResult.DONE])
    async with FakeNode(handler(calls)) as node:
        task_id = await node.add()
        waiting = await node.wait_for(task_id, TaskStatus.WAITING)

    assert waiting is not None
    assert waiting.last_error == "ValueError: first"
    assert waiting.next_event_time == START + 5 * SECOND  # the default policy's first delay


async def test_commit_and_retry_repeats_through_the_retry_policy_until_it_stops() -> None:
    clock = FakeClock()
    calls = Calls(clock, results=[ProcessResult.COMMIT_AND_RETRY])
    policy = ExponentialRetryPolicy(delay=10 * SECOND, multiplier=1, max_count=2)
    async with FakeNode(handler(calls, retry_policy=policy), clock=clock) as node:
        task_id = await node.add()
        repeat = await node.wait_for(task_id, TaskStatus.WAITING)
        assert repeat is not None
        assert repeat.last_error is None  # a repeat is not a failure

        await node.advance_to(START + 10 * SECOND)
        await settle(lambda: calls.count == 2 and node.status(task_id) is TaskStatus.WAITING)
        await node.advance_to(START + 20 * SECOND)
        await node.wait_for(task_id, TaskStatus.DONE)

    assert calls.times == [START, START + 10 * SECOND, START + 20 * SECOND]
    assert node.executor.stats["repeated"] == 2


async def test_commit_and_retry_with_reset_tries_repeats_indefinitely() -> None:
    clock = FakeClock()
    calls = Calls(clock, results=[ProcessResult.COMMIT_AND_RETRY])
    policy = ExponentialRetryPolicy(delay=10 * SECOND, max_count=1, reset_tries_on_repeat=True)
    async with FakeNode(handler(calls, retry_policy=policy), clock=clock) as node:
        task_id = await node.add()
        for run in range(1, 6):
            await settle(run_finished(node, task_id, calls, run))
            assert node.status(task_id) is TaskStatus.WAITING
            assert node.task(task_id).processing_tries_count == 0
            await node.advance(10 * SECOND)

    assert calls.times[:5] == [START + 10 * n * SECOND for n in range(5)]


async def test_done_and_delete_removes_the_task_row() -> None:
    async with FakeNode(handler(Calls(results=[ProcessResult.DONE_AND_DELETE]))) as node:
        task_id = await node.add()

        await node.wait_for(task_id, None)

        assert await node.service.get_task(task_id) is None
    assert node.executor.stats["deleted"] == 1


# --- timeouts ----------------------------------------------------------------------------


async def test_timeout_cancels_the_handler_and_leads_to_a_retry() -> None:
    started: list[UUID] = []
    cancelled: list[UUID] = []

    async def hangs(task: Task) -> ProcessResult:
        started.append(task.id)
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(task.id)
        return ProcessResult.DONE  # pragma: no cover

    work = handler(
        hangs,
        processing_policy=SimpleProcessingPolicy(timeout=10 * SECOND),
        retry_policy=ExponentialRetryPolicy(delay=SECOND, max_count=1),
    )
    async with FakeNode(work) as node:
        task_id = await node.add()
        await running(lambda: len(started) == 1)

        await node.advance(10 * SECOND - MICROSECOND)
        await idle()
        assert node.status(task_id) is TaskStatus.PROCESSING

        await node.advance(MICROSECOND)
        retry = await node.wait_for(task_id, TaskStatus.WAITING)
        assert retry is not None
        assert retry.last_error is not None
        assert "ProcessingTimeoutError" in retry.last_error
        assert cancelled == [task_id]

        await node.advance(SECOND)  # the retry starts and hangs as well
        await running(lambda: len(started) == 2)
        await node.advance(10 * SECOND)
        error = await node.wait_for(task_id, TaskStatus.ERROR)

    assert error is not None
    assert "gave up after 2 attempt(s): ProcessingTimeoutError" in (error.last_error or "")
    assert cancelled == [task_id, task_id]


@pytest.mark.parametrize("then", ["keeps-waiting", "returns-done"])
async def test_handler_that_ignores_the_first_cancellation_still_times_out(then: str) -> None:
    ignored: list[BaseException] = []
    started = anyio.Event()

    async def stubborn(task: Task) -> ProcessResult:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class() as exc:
            ignored.append(exc)  # swallowed on purpose: a badly behaved handler
        if then == "keeps-waiting":
            await anyio.sleep_forever()
        return ProcessResult.DONE

    work = handler(
        stubborn,
        processing_policy=SimpleProcessingPolicy(timeout=10 * SECOND),
        retry_policy=NoRetryPolicy(),
    )
    async with FakeNode(work, handler(Calls(), types={"other"})) as node:
        task_id = await node.add()
        await running(started.is_set)

        await node.advance(10 * SECOND)

        error = await node.wait_for(task_id, TaskStatus.ERROR)
        assert error is not None
        assert "ProcessingTimeoutError" in (error.last_error or "")
        assert len(ignored) == 1
        other = await node.add("other")
        await node.wait_for(other, TaskStatus.DONE)  # the node keeps working


async def until(condition: Callable[[], bool]) -> None:
    """Wait in real time (threads are involved) until ``condition()`` holds, at most 5 s."""
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.005)
    raise AssertionError("condition still false after 5 s")


async def test_blocking_processor_that_overruns_its_timeout_holds_its_task_until_it_returns() -> (
    None
):
    release = threading.Event()
    lock = threading.Lock()
    runs = {"started": 0, "running": 0, "peak": 0}

    def generate_report(task: Task) -> ProcessResult:
        with lock:
            runs["started"] += 1
            runs["running"] += 1
            runs["peak"] = max(runs["peak"], runs["running"])
        try:
            release.wait(10)
        finally:
            with lock:
                runs["running"] -= 1
        return ProcessResult.DONE

    report = TaskHandler(
        types={"report"},
        processor=blocking_processor(generate_report),
        processing_policy=SimpleProcessingPolicy(timeout=10 * SECOND),
        retry_policy=ExponentialRetryPolicy(delay=SECOND, max_count=3),
    )
    calls = Calls()
    async with FakeNode(report, handler(calls)) as node:
        try:
            hung = await node.add("report")
            await until(lambda: runs["started"] == 1)

            others = [await node.add() for _ in range(5)]
            for task_id in others:
                await node.wait_for(task_id, TaskStatus.DONE)  # the node is not blocked

            await node.advance(10 * SECOND)  # the timeout: the thread still runs
            await idle()
            await node.advance(5 * SECOND)  # the retry would be due, the deadline is not
            await idle()
            assert node.status(hung) is TaskStatus.PROCESSING
            assert runs["started"] == 1
        finally:
            release.set()  # let the thread end, also when an assertion failed
        retried = await node.wait_for(hung, TaskStatus.WAITING)
        assert retried is not None
        assert "ProcessingTimeoutError" in (retried.last_error or "")

        await node.advance(SECOND)  # the retry is due: it runs now, the thread it replaces ended
        await until(lambda: node.status(hung) is TaskStatus.DONE)
    assert calls.count == 5
    assert runs == {"started": 2, "running": 0, "peak": 1}  # the retry never ran beside it


async def test_a_stopping_node_stops_waiting_for_a_blocking_processor_that_never_returns() -> None:
    release, started = threading.Event(), threading.Event()

    def hang(task: Task) -> ProcessResult:
        started.set()
        release.wait(10)
        return ProcessResult.DONE

    node = FakeNode(
        handler(blocking_processor(hang)), props=properties(shutdown_grace=timedelta(0))
    )
    try:
        with anyio.fail_after(5):  # leaving the block does not wait for the thread
            async with node:
                task_id = await node.add()
                await until(started.is_set)
        assert node.status(task_id) is TaskStatus.PROCESSING  # recovered after its deadline
    finally:
        release.set()


async def test_blocking_processor_result_is_recorded() -> None:
    def quick(task: Task) -> ProcessResult:
        return ProcessResult.DONE

    async with FakeNode(handler(blocking_processor(quick))) as node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.DONE)


# --- concurrency limits ------------------------------------------------------------------


async def test_concurrency_limit_is_reached_but_never_exceeded_under_load() -> None:
    gauge = Gauge()

    async def process(task: Task) -> ProcessResult:
        gauge.enter()
        for _ in range(20):  # long enough for the next tasks to be grabbed meanwhile
            await anyio.lowlevel.checkpoint()
        gauge.exit()
        return ProcessResult.DONE

    async with FakeNode(handler(process, concurrency_policy=SimpleConcurrencyPolicy(5))) as node:
        await node.service.add_tasks([AddTaskRequest(type="work") for _ in range(200)])

        await settle(lambda: gauge.finished == 200, max_iterations=100_000)
        await settle(lambda: all(t.status is TaskStatus.DONE for t in node.dao.tasks.values()))

    assert gauge.peak == 5


async def test_handlers_sharing_one_policy_instance_share_its_limit() -> None:
    gauge, shared = Gauge(), SimpleConcurrencyPolicy(3)

    async def process(task: Task) -> ProcessResult:
        gauge.enter()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        gauge.exit()
        return ProcessResult.DONE

    async with FakeNode(
        handler(process, types={"a"}, concurrency_policy=shared),
        handler(process, types={"b"}, concurrency_policy=shared),
    ) as node:
        await node.service.add_tasks(
            [AddTaskRequest(type=kind) for kind in ("a", "b") for _ in range(20)]
        )
        await settle(lambda: gauge.finished == 40, max_iterations=100_000)

    assert gauge.peak == 3


async def test_handlers_with_separate_policy_instances_have_separate_limits() -> None:
    gauge, all_six_running = Gauge(), anyio.Event()

    async def process(task: Task) -> ProcessResult:
        gauge.enter()
        if gauge.running == 6:
            all_six_running.set()
        await all_six_running.wait()  # never set if the two handlers shared one limit of 3
        gauge.exit()
        return ProcessResult.DONE

    async with FakeNode(
        handler(process, types={"a"}, concurrency_policy=SimpleConcurrencyPolicy(3)),
        handler(process, types={"b"}, concurrency_policy=SimpleConcurrencyPolicy(3)),
    ) as node:
        await node.service.add_tasks(
            [AddTaskRequest(type=kind) for kind in ("a", "b") for _ in range(10)]
        )
        await settle(lambda: gauge.finished == 20, max_iterations=100_000)

    assert gauge.peak == 6


# --- bad handlers and unknown types ------------------------------------------------------


async def test_task_without_a_handler_goes_to_error_naming_its_type() -> None:
    async with FakeNode(handler(Calls())) as node:
        task_id = await node.add("invoice.unknown")

        error = await node.wait_for(task_id, TaskStatus.ERROR)

    assert error is not None
    assert "no handler" in (error.last_error or "")
    assert "'invoice.unknown'" in (error.last_error or "")


@pytest.mark.parametrize("wrong", [None, "DONE", 1], ids=["None", "str", "int"])
async def test_handler_returning_a_wrong_value_fails_its_task_and_the_node_keeps_working(
    wrong: object,
) -> None:
    calls = Calls(results=[wrong, ProcessResult.DONE])
    async with FakeNode(handler(calls, retry_policy=NoRetryPolicy())) as node:
        bad = await node.add()
        error = await node.wait_for(bad, TaskStatus.ERROR)
        assert error is not None
        assert "TypeError" in (error.last_error or "")
        assert repr(wrong) in (error.last_error or "")

        good = await node.add()
        await node.wait_for(good, TaskStatus.DONE)


async def test_predicate_that_raises_counts_as_no_match() -> None:
    def broken_predicate(task: object) -> bool:
        raise KeyError("missing routing table")

    fallback = Calls()
    broken = TaskHandler(predicate=broken_predicate, processor=Calls())
    async with FakeNode(broken, handler(fallback)) as node:
        handled = await node.add("work")
        unhandled = await node.add("other")

        await node.wait_for(handled, TaskStatus.DONE)
        error = await node.wait_for(unhandled, TaskStatus.ERROR)

    assert fallback.count == 1
    assert error is not None
    assert "no handler" in (error.last_error or "")


# --- transactional handlers --------------------------------------------------------------


async def _add_follow_up(node: FakeNode, task: Task) -> None:
    request = AddTaskRequest(type="follow-up", data=task.id.bytes)
    await node.service.add_task(request, transaction=current_transaction())


def _follow_ups(node: FakeNode) -> list[Task]:
    return [t for t in node.dao.tasks.values() if t.type == "follow-up"]


async def test_transactional_handler_commits_its_writes_with_the_completion() -> None:
    seen: list[object] = []

    async def process(task: Task) -> ProcessResult:
        seen.append(current_transaction())
        await _add_follow_up(node, task)
        assert _follow_ups(node) == []  # staged, not yet visible
        return ProcessResult.DONE

    node = FakeNode(handler(process, transactional=True), handler(Calls(), types={"follow-up"}))
    async with node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.DONE)
        [follow_up] = _follow_ups(node)
        await node.wait_for(follow_up.id, TaskStatus.DONE)  # triggered after the commit

    assert len(seen) == 1
    assert isinstance(seen[0], InMemoryTransaction)


async def test_current_transaction_given_its_type_returns_it_typed_or_fails_the_run() -> None:
    handles: list[InMemoryTransaction] = []

    async def process(task: Task) -> ProcessResult:
        handles.append(current_transaction(InMemoryTransaction))
        current_transaction(UUID)  # not this store's handle: the run fails
        return ProcessResult.DONE

    node = FakeNode(handler(process, transactional=True, retry_policy=NoRetryPolicy()))
    async with node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.ERROR)

    assert len(handles) == 1
    assert node.task(task_id).last_error == (
        "gave up after 1 attempt(s): ConfigurationError: "
        "the transaction handle is InMemoryTransaction, not UUID"
    )


async def test_transactional_handler_writes_roll_back_when_its_completion_is_fenced() -> None:
    runs: list[int] = []

    async def process(task: Task) -> ProcessResult:
        runs.append(task.version)
        await _add_follow_up(node, task)
        if len(runs) == 1:
            await node.service.resume_task(task.id)  # taken away meanwhile: version changes
        return ProcessResult.DONE

    node = FakeNode(handler(process, transactional=True))
    async with node:
        task_id = await node.add()
        await settle(lambda: node.executor.stats["fenced"] == 1)
        await node.wait_for(task_id, TaskStatus.DONE)

    assert len(runs) == 2
    assert len(_follow_ups(node)) == 1  # only the second run's write committed
    assert sum(t.type == "follow-up" for t in node.triggerer.sent) == 1


async def test_transactional_handler_that_fails_rolls_back_and_is_retried() -> None:
    async def process(task: Task) -> ProcessResult:
        await _add_follow_up(node, task)
        raise ValueError("validation failed")

    node = FakeNode(handler(process, transactional=True))
    async with node:
        task_id = await node.add()
        retry = await node.wait_for(task_id, TaskStatus.WAITING)

    assert retry is not None
    assert retry.last_error == "ValueError: validation failed"
    assert _follow_ups(node) == []


async def test_transactional_handler_raising_a_version_conflict_of_its_own_is_retried() -> None:
    async def process(task: Task) -> ProcessResult:
        raise VersionConflictError(uuid4(), 7)  # e.g. its own optimistic business update lost

    async with FakeNode(handler(process, transactional=True)) as node:
        task_id = await node.add()
        retry = await node.wait_for(task_id, TaskStatus.WAITING, TaskStatus.ERROR)

    assert retry is not None
    assert retry.status is TaskStatus.WAITING
    assert "VersionConflictError" in (retry.last_error or "")
    assert node.executor.stats["fenced"] == 0


async def test_current_transaction_in_a_non_transactional_handler_raises_configuration_error() -> (
    None
):
    async def process(task: Task) -> ProcessResult:
        current_transaction()
        return ProcessResult.DONE  # pragma: no cover

    async with FakeNode(handler(process, retry_policy=NoRetryPolicy())) as node:
        task_id = await node.add()
        error = await node.wait_for(task_id, TaskStatus.ERROR)

    assert error is not None
    assert "ConfigurationError: this handler is not transactional" in (error.last_error or "")


async def test_current_context_tells_the_processor_its_task_node_and_deadline() -> None:
    contexts = []

    async def process(task: Task) -> ProcessResult:
        contexts.append(current_context())
        return ProcessResult.DONE

    work = handler(process, processing_policy=SimpleProcessingPolicy(timeout=30 * SECOND))
    async with FakeNode(work) as node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.DONE)

    [context] = contexts
    assert context.task.id == task_id
    assert context.node_id == "test-node"
    assert context.timeout_at == START + 30 * SECOND
    assert context.transaction is None


async def test_context_variables_a_processor_sets_do_not_reach_later_tasks() -> None:
    seen: list[str] = []

    async def process(task: Task) -> ProcessResult:
        seen.append(TENANT.get())
        TENANT.set(f"tenant of {task.id}")
        return ProcessResult.DONE

    async with FakeNode(handler(process)) as node:
        for _ in range(3):
            await node.wait_for(await node.add(), TaskStatus.DONE)

    assert seen == ["none", "none", "none"]


def test_current_context_outside_a_processor_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="inside a task processor"):
        current_context()


# --- store outages -----------------------------------------------------------------------


async def test_task_whose_grab_failed_in_a_store_outage_runs_after_its_queue_time() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        node.dao.fail_next(1, operation="grab")
        task_id = await node.add()
        await settle(lambda: node.executor.stats["grab_failed"] == 1)
        assert node.status(task_id) is TaskStatus.SUBMITTED

        await node.advance(properties().expected_queue_time + SECOND)

        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1


async def test_completion_is_written_once_a_short_store_outage_ends() -> None:
    calls = Calls()
    async with FakeNode(handler(calls)) as node:
        node.dao.fail_next(3, operation="apply")
        task_id = await node.add()

        await advance_until(
            node.clock, lambda: node.status(task_id) is TaskStatus.DONE, step=SECOND
        )
    assert calls.count == 1


async def test_completion_lost_to_a_store_failure_is_recovered_and_run_again() -> None:
    calls = Calls()
    work = handler(calls, processing_policy=SimpleProcessingPolicy(timeout=10 * SECOND))
    async with FakeNode(work) as node:
        node.dao.fail_next(1, error=BackendError("disk full"), operation="apply")
        task_id = await node.add()
        await settle(lambda: calls.count == 1)
        await idle()
        assert node.status(task_id) is TaskStatus.PROCESSING  # outcome not recorded

        await node.advance(10 * SECOND + properties().processing_grace + SECOND)

        done = await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 2
    assert done is not None
    assert done.recovery_count == 1


# --- logs ----------------------------------------------------------------------------------


async def test_logs_say_which_task_changed_status_and_how(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resilient_task")
    async with FakeNode(handler(Calls(results=[ValueError("boom"), ProcessResult.DONE]))) as node:
        task_id = await node.add()
        await node.wait_for(task_id, TaskStatus.WAITING)
        await node.advance(5 * SECOND)
        await node.wait_for(task_id, TaskStatus.DONE)

    lines = [r.getMessage() for r in caplog.records if str(task_id) in r.getMessage()]
    assert any("SUBMITTED -> PROCESSING" in line for line in lines)
    assert any("PROCESSING -> WAITING" in line and "ValueError: boom" in line for line in lines)
    assert any("PROCESSING -> DONE" in line for line in lines)

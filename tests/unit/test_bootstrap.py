"""ResilientTask, the composition root: adapter choice, lifecycle and graceful shutdown."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import anyio
import pytest

from resilient_task import (
    AddTaskRequest,
    ConfigurationError,
    ProcessResult,
    ResilientTask,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    Task,
    TaskStatus,
)
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer
from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.adapters.system import SystemClock
from resilient_task.domain.task import BaseTask
from resilient_task.ports import Clock, NullObserver, Observer, TaskDAO, Triggerer
from resilient_task.ports.observer import ProcessOutcome
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.ports.triggerer import TriggerCallback
from resilient_task.service.operator import Action, Outcome
from resilient_task.settings import NotifyTriggers
from tests.unit.helpers import (
    START,
    Calls,
    FakeNode,
    ObservedTriggerer,
    handler,
    idle,
    properties,
    settle,
)

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)
URL = "postgresql+psycopg://x@y/z"


async def test_node_without_adapters_runs_tasks_in_memory_on_the_system_clock() -> None:
    calls = Calls()
    async with ResilientTask(handlers=[handler(calls)], properties=properties()) as app:
        assert isinstance(app.dao, InMemoryTaskDAO)
        assert isinstance(app.triggerer, InMemoryTriggerer)
        assert isinstance(app.clock, SystemClock)
        dao = app.dao

        added = await app.service.add_task(AddTaskRequest(type="work"))

        await settle(lambda: dao.tasks[added.task_id].status is TaskStatus.DONE)
    assert calls.count == 1


async def test_node_uses_the_adapters_it_is_given() -> None:
    dao, triggerer, clock = InMemoryTaskDAO(), InMemoryTriggerer(), FakeClock()
    app = ResilientTask(dao=dao, triggerer=triggerer, clock=clock, properties=properties())
    async with app:
        assert app.dao is dao
        assert app.triggerer is triggerer
        assert app.clock is clock
        assert app.registry.handlers == ()


async def test_node_without_workers_adds_and_triggers_tasks_but_runs_none() -> None:
    calls = Calls()
    async with FakeNode(handler(calls), run_workers=False) as node:
        task_id = await node.add()
        await node.advance(SECOND)
        await idle()

        assert node.status(task_id) is TaskStatus.SUBMITTED
        assert [t.id for t in node.triggerer.sent] == [task_id]
    assert calls.count == 0


async def test_entering_a_running_node_again_is_a_configuration_error() -> None:
    async with FakeNode() as node:
        with pytest.raises(ConfigurationError, match="already running"):
            await node.app.__aenter__()


async def test_node_can_start_again_after_it_stopped() -> None:
    calls = Calls()
    node = FakeNode(handler(calls))
    async with node:
        first = await node.add()
        await node.wait_for(first, TaskStatus.DONE)
    async with node:
        second = await node.add()
        await node.wait_for(second, TaskStatus.DONE)
    assert calls.count == 2


async def test_an_error_in_the_block_propagates_and_the_node_still_stops() -> None:
    node = FakeNode(handler(Calls()))

    async def fail_inside() -> None:
        async with node:
            raise LookupError("user code failed")

    with pytest.raises(LookupError, match="user code failed"):
        await fail_inside()
    async with node:  # stopped cleanly: it can start again
        pass


# --- graceful shutdown ---------------------------------------------------------------------


class Slow:
    """A processor whose first run waits for :attr:`release`; later runs finish at once."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.runs: list[Task] = []
        self.cancelled = 0

    async def __call__(self, task: Task) -> ProcessResult:
        self.runs.append(task)
        if len(self.runs) > 1:
            return ProcessResult.DONE
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        return ProcessResult.DONE


async def _release_once_shutdown_began(slow: Slow, triggerer: ObservedTriggerer) -> None:
    await triggerer.stopping.wait()
    await idle(50)  # well into the executor's stop
    slow.release.set()


async def test_leaving_the_block_lets_a_running_task_finish_within_the_shutdown_grace() -> None:
    slow, triggerer = Slow(), ObservedTriggerer()
    node = FakeNode(
        handler(slow),
        triggerer=triggerer,
        props=properties(shutdown_grace=timedelta(seconds=5)),  # an upper bound, not a wait
    )
    async with anyio.create_task_group() as tg, node:
        task_id = await node.add()
        await settle(slow.started.is_set)
        tg.start_soon(_release_once_shutdown_began, slow, triggerer)

    assert node.status(task_id) is TaskStatus.DONE
    assert slow.cancelled == 0


async def test_task_outlasting_the_shutdown_grace_is_cancelled_and_recovered_later() -> None:
    slow, triggerer, dao = Slow(), ObservedTriggerer(), InMemoryTaskDAO()
    policy = SimpleProcessingPolicy(timeout=10 * SECOND)
    props = properties(shutdown_grace=timedelta(0))
    node = FakeNode(
        handler(slow, processing_policy=policy), triggerer=triggerer, dao=dao, props=props
    )
    async with anyio.create_task_group() as tg, node:
        task_id = await node.add()
        await settle(slow.started.is_set)
        tg.start_soon(_release_once_shutdown_began, slow, triggerer)

    assert slow.cancelled == 1
    left = dao.tasks[task_id]
    assert left.status is TaskStatus.PROCESSING  # not lost: still in the store

    deadline = START + 10 * SECOND + props.processing_grace
    restarted = FakeNode(
        handler(slow, processing_policy=policy),
        dao=dao,
        clock=FakeClock(start=deadline + SECOND),
        props=props,
    )
    async with restarted:
        done = await restarted.wait_for(task_id, TaskStatus.DONE)

    assert done is not None
    assert done.recovery_count == 1
    assert len(slow.runs) == 2


async def test_triggers_waiting_for_capacity_start_nothing_once_shutdown_began() -> None:
    slow, triggerer = Slow(), ObservedTriggerer()
    node = FakeNode(
        handler(slow, concurrency_policy=SimpleConcurrencyPolicy(1)),
        triggerer=triggerer,
        props=properties(shutdown_grace=timedelta(seconds=5)),
    )
    async with anyio.create_task_group() as tg, node:
        first = await node.add()
        await settle(slow.started.is_set)
        queued = [await node.add() for _ in range(3)]
        await idle()
        tg.start_soon(_release_once_shutdown_began, slow, triggerer)

    assert node.status(first) is TaskStatus.DONE
    assert [node.status(task_id) for task_id in queued] == [TaskStatus.SUBMITTED] * 3


def test_a_producer_node_on_the_implicit_in_memory_store_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="RESILIENT_TASK_DATABASE_URL") as refused:
        ResilientTask(properties=properties(), run_workers=False)
    assert "in_memory=True" in str(refused.value)


def test_a_producer_node_from_an_environment_without_a_database_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="RESILIENT_TASK_DATABASE_URL"):
        ResilientTask.from_env(environ={}, run_workers=False)


async def test_a_producer_node_asked_for_in_memory_explicitly_starts() -> None:
    app = ResilientTask(properties=properties(), run_workers=False, in_memory=True)
    async with app:
        added = await app.service.add_task(AddTaskRequest(type="work"))
        assert isinstance(app.dao, InMemoryTaskDAO)
        assert (await app.service.get_task(added.task_id)) is not None
    assert app.in_memory


def test_in_memory_together_with_a_database_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="in_memory=True"):
        ResilientTask(database_url="postgresql+psycopg://x@y/z", in_memory=True)


def test_a_node_says_whether_it_keeps_its_tasks_in_memory() -> None:
    assert ResilientTask().in_memory
    assert ResilientTask(dao=InMemoryTaskDAO()).in_memory
    assert ResilientTask(dao=InMemoryTaskDAO(), run_workers=False).in_memory
    assert not ResilientTask(database_url="postgresql+psycopg://x@y/z").in_memory
    assert not ResilientTask(database_url="postgresql+psycopg://x@y/z", run_workers=False).in_memory


async def test_a_stopping_node_claims_no_due_task_it_could_no_longer_run() -> None:
    slow, triggerer = Slow(), ObservedTriggerer()
    node = FakeNode(
        handler(slow),
        triggerer=triggerer,
        props=properties(shutdown_grace=timedelta(seconds=5)),
    )
    polled: list[int] = []

    async def poll_once_shutdown_began() -> None:
        await triggerer.stopping.wait()
        await node.clock.advance(SECOND * 60)  # the scheduled task is due now
        polled.append(await node.resumer.run_once())
        slow.release.set()

    async with anyio.create_task_group() as tg, node:
        await node.add()
        later = await node.add(run_after_time=node.clock.now() + SECOND * 30)
        await settle(slow.started.is_set)
        tg.start_soon(poll_once_shutdown_began)

    # Claimed, it would have been SUBMITTED on a node that no longer runs anything, waiting a
    # whole expected queue time for another node.
    assert polled == [0]
    assert node.status(later) is TaskStatus.WAITING


class _RefusingTriggerer(InMemoryTriggerer):
    """A triggerer whose start fails, as a broker refusing the configuration would."""

    async def start(self, on_trigger: object) -> None:
        raise ConfigurationError("the broker refused the consumer's settings")


async def test_a_node_whose_triggerer_fails_to_start_raises_that_error_and_can_start_again() -> (
    None
):
    node = ResilientTask(
        handlers=[handler(Calls())], dao=InMemoryTaskDAO(), triggerer=_RefusingTriggerer()
    )
    with anyio.CancelScope(), pytest.raises(ConfigurationError, match="refused the consumer"):
        # Leaving this scope fails ("cancel scope stack corrupted") if the start left a task
        # group of its own open inside it.
        await node.__aenter__()
    # The task group of the failed start was left cleanly: a node starts in the same task.
    async with ResilientTask(handlers=[handler(Calls())], dao=InMemoryTaskDAO()) as other:
        assert (await other.service.add_task(AddTaskRequest(type="work"))).created


# --- your own adapters, registered by port -------------------------------------------------


class _HandDeliveringTriggerer:
    """A Triggerer written from scratch: hands every trigger straight to the node."""

    def __init__(self) -> None:
        self.received: list[object] = []
        self.on_trigger: TriggerCallback | None = None

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        for task in tasks:
            self.received.append(task.id)
            if self.on_trigger is not None:
                await self.on_trigger(task)

    async def start(self, on_trigger: TriggerCallback) -> None:
        self.on_trigger = on_trigger

    async def stop(self) -> None:
        self.on_trigger = None


class _CountingObserver(NullObserver):
    def __init__(self) -> None:
        self.added: list[str] = []
        self.processed: list[ProcessOutcome] = []

    def task_added(self, task_type: str, count: int = 1) -> None:
        self.added.extend([task_type] * count)

    def task_processed(self, task_type: str, outcome: ProcessOutcome, seconds: float) -> None:
        self.processed.append(outcome)


async def test_a_registered_triggerer_receives_the_trigger_and_the_task_runs() -> None:
    calls, mine, dao = Calls(), _HandDeliveringTriggerer(), InMemoryTaskDAO()
    app = ResilientTask(
        handlers=[handler(calls)], properties=properties(), adapters={Triggerer: mine, TaskDAO: dao}
    )
    async with app:
        assert app.triggerer is mine
        added = await app.service.add_task(AddTaskRequest(type="work"))
        await settle(lambda: dao.tasks[added.task_id].status is TaskStatus.DONE)
        assert mine.received == [added.task_id]
    assert calls.count == 1


async def test_a_registered_observer_is_told_what_happens_to_tasks() -> None:
    calls, observer = Calls(), _CountingObserver()
    app = ResilientTask(handlers=[handler(calls)], properties=properties())
    app.register(Observer, observer)
    async with app:
        assert app.observer is observer
        await app.service.add_task(AddTaskRequest(type="work"))
        await settle(lambda: observer.processed == [ProcessOutcome.DONE])
    assert observer.added == ["work"]


async def test_a_factory_made_adapter_is_opened_with_the_node_and_closed_with_it() -> None:
    events: list[str] = []

    class _OwnedTriggerer(InMemoryTriggerer):
        async def __aenter__(self) -> _OwnedTriggerer:
            events.append("opened")
            return self

        async def __aexit__(self, *exc_info: object) -> None:
            events.append("closed")

    calls = Calls()
    app = ResilientTask(handlers=[handler(calls)], properties=properties())
    app.register(Triggerer, factory=_OwnedTriggerer)
    async with app:
        assert isinstance(app.triggerer, _OwnedTriggerer)
        assert events == ["opened"]
        await app.service.add_task(AddTaskRequest(type="work"))
        await settle(lambda: calls.count == 1)
    assert events == ["opened", "closed"]


def test_registering_something_that_is_not_an_adapter_of_the_port_is_refused() -> None:
    app = ResilientTask(properties=properties())
    with pytest.raises(ConfigurationError, match="not a port"):
        app.register(InMemoryTriggerer, InMemoryTriggerer())
    with pytest.raises(ConfigurationError, match="lacks now, sleep, timeout_scope"):
        app.register(Clock, InMemoryTriggerer())
    with pytest.raises(ConfigurationError, match="an adapter or factory="):
        app.register(Clock)
    with pytest.raises(ConfigurationError, match="two adapters for Clock"):
        ResilientTask(clock=FakeClock(), adapters={Clock: FakeClock()})


def test_a_registered_triggerer_and_a_trigger_transport_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="replaces triggers="):
        ResilientTask(
            database_url=URL,
            triggers=NotifyTriggers(),
            triggerer=InMemoryTriggerer(),
        )


async def test_adapters_cannot_change_while_the_node_runs() -> None:
    async with ResilientTask(properties=properties()) as app:
        with pytest.raises(ConfigurationError, match="before the node starts"):
            app.register(Clock, FakeClock())


def test_the_service_before_the_node_started_is_a_configuration_error_saying_why() -> None:
    app = ResilientTask(properties=properties())
    with pytest.raises(ConfigurationError, match="inside `async with app:`"):
        _ = app.service
    with pytest.raises(ConfigurationError, match="inside `async with app:`"):
        _ = app.operator


def _later(app: ResilientTask) -> AddTaskRequest:
    return AddTaskRequest(type="work", run_after_time=app.clock.now() + timedelta(hours=1))


async def test_the_operator_acts_on_the_nodes_store() -> None:
    app = ResilientTask(
        handlers=[handler(Calls())], properties=properties(), run_workers=False, in_memory=True
    )
    async with app:
        added = await app.service.add_task(_later(app))
        counts = await app.operator.count()
        assert counts.by_status[TaskStatus.WAITING] == 1
        results = await app.operator.act(Action.CANCEL, [added.task_id])
        assert [r.outcome for r in results] == [Outcome.OK]
        assert (await app.service.get_task(added.task_id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


class _WrappedStore:
    """A store of another kind (here: delegating to an in-memory one)."""

    def __init__(self) -> None:
        self.inner = InMemoryTaskDAO()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_store_without_operator_reads_needs_a_registered_task_queries_adapter() -> None:
    store = _WrappedStore()
    app = ResilientTask(properties=properties(), adapters={TaskDAO: store})
    async with app:
        with pytest.raises(ConfigurationError, match=r"register\(TaskQueries"):
            _ = app.operator
    app.register(TaskQueries, InMemoryTaskQueries(dao=store.inner))
    async with app:
        await app.service.add_task(
            AddTaskRequest(type="work", run_after_time=app.clock.now() + timedelta(hours=1))
        )
        assert (await app.operator.count()).by_status[TaskStatus.WAITING] == 1


def test_triggers_are_checked_when_the_node_is_built() -> None:
    with pytest.raises(ConfigurationError, match="needs database_url"):
        ResilientTask(triggers=NotifyTriggers())
    with pytest.raises(ConfigurationError, match="takes KafkaTriggers"):
        ResilientTask(triggers="kafka")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="takes PostgresOptions"):
        ResilientTask(postgres={"schema": "x"})  # type: ignore[arg-type]
    for former in ({"kafka": True}, {"notify": True}, {"postgres_options": {"schema": "x"}}):
        with pytest.raises(TypeError, match=next(iter(former))):
            ResilientTask(**former)

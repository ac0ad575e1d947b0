"""InMemoryTriggerer: the triggerer contract, plus its test helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from resilient_task.adapters.memory import InMemoryTriggerer
from resilient_task.errors import BackendError, TriggerError
from resilient_task.testing.triggerer_contract import (
    DurableTriggererContract,
    Recorder,
    make_tasks,
    running,
)

pytestmark = pytest.mark.anyio


class TestInMemoryTriggererContract(DurableTriggererContract):
    delivery_timeout = 2.0
    quiet_period = 0.05
    stop_timeout = 0.2

    @pytest.fixture
    async def triggerer(self) -> AsyncIterator[InMemoryTriggerer]:
        triggerer = InMemoryTriggerer(
            max_in_flight=self.max_in_flight, stop_timeout=self.stop_timeout
        )
        yield triggerer
        await triggerer.stop()


async def test_sent_lists_every_accepted_trigger_and_reset_forgets_them() -> None:
    triggerer = InMemoryTriggerer()
    tasks = make_tasks(3)
    await triggerer.trigger(tasks[:2])
    await triggerer.trigger(tasks[2:])
    assert triggerer.sent == tasks
    assert triggerer.pending == 3
    triggerer.reset()
    assert triggerer.sent == []
    assert triggerer.pending == 0


async def test_fail_with_makes_trigger_raise_a_transient_trigger_error_until_cleared() -> None:
    triggerer = InMemoryTriggerer()
    outage = ConnectionError("broker down")
    triggerer.fail_with(outage)
    with pytest.raises(TriggerError) as caught:
        await triggerer.trigger(make_tasks(1))
    assert caught.value.__cause__ is outage
    assert caught.value.transient
    assert triggerer.sent == []
    triggerer.fail_with(None)
    await triggerer.trigger(tasks := make_tasks(1))
    assert triggerer.sent == tasks


async def test_fail_with_a_trigger_error_raises_that_error() -> None:
    triggerer = InMemoryTriggerer()
    error = TriggerError("custom", transient=False)
    triggerer.fail_with(error)
    with pytest.raises(TriggerError) as caught:
        await triggerer.trigger(make_tasks(1))
    assert caught.value is error


async def test_reset_clears_the_fault_switch() -> None:
    triggerer = InMemoryTriggerer()
    triggerer.fail_with(RuntimeError("x"))
    triggerer.reset()
    await triggerer.trigger(make_tasks(1))


async def test_a_full_queue_rejects_triggers_with_a_trigger_error() -> None:
    triggerer = InMemoryTriggerer(max_pending=2)
    await triggerer.trigger(make_tasks(2))
    with pytest.raises(BackendError, match="full"):
        await triggerer.trigger(make_tasks(1))
    assert triggerer.pending == 2


async def test_a_slow_callback_keeps_triggers_queued_not_pulled() -> None:
    release = anyio.Event()

    async def wait_for_release(_: object) -> None:
        await release.wait()

    triggerer = InMemoryTriggerer(max_in_flight=2, stop_timeout=0.1)
    async with running(triggerer, Recorder(wait_for_release)) as recorder:
        await triggerer.trigger(make_tasks(5))
        await recorder.wait_for(lambda: triggerer.in_flight == 2, 1.0)
        assert triggerer.pending == 3
        release.set()
        await recorder.wait_for(lambda: triggerer.pending == 0 and triggerer.in_flight == 0, 1.0)


async def test_starting_twice_is_an_error() -> None:
    triggerer = InMemoryTriggerer()
    async with running(triggerer, Recorder()):
        with pytest.raises(RuntimeError, match="already started"):
            await triggerer.start(Recorder())


@pytest.mark.parametrize("kwargs", [{"max_in_flight": 0}, {"max_pending": 0}])
def test_invalid_bounds_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        InMemoryTriggerer(**kwargs)


async def test_a_burst_of_triggers_reaches_its_callbacks_together() -> None:
    # Handed out before the delivery loop yields: every callback of the burst has started
    # when the first one resumes from its first checkpoint (so the executor's grabs of a
    # burst share one round trip instead of one each).
    started_when_first_resumed: list[int] = []
    recorder: Recorder

    async def checkpoint_once(_: object) -> None:
        first = len(recorder.received) == 1
        await anyio.lowlevel.checkpoint()
        if first:
            started_when_first_resumed.append(len(recorder.received))

    triggerer = InMemoryTriggerer(max_in_flight=40, stop_timeout=0.1)
    await triggerer.trigger(make_tasks(50))
    async with running(triggerer, Recorder(checkpoint_once)) as recorder:
        await recorder.wait_for(lambda: len(recorder.received) == 50, 1.0)
        await recorder.wait_for(lambda: triggerer.in_flight == 0, 1.0)
    assert started_when_first_resumed[0] >= 40  # (trio may run some deliverers' next ones too)
    assert recorder.max_running == 40


async def test_delivery_tasks_are_reused_for_later_triggers() -> None:
    # One trigger at a time: each is delivered by the same idle delivery task, none spawned.
    tasks: set[object] = set()

    async def note_task(_: object) -> None:
        tasks.add(anyio.get_current_task().id)

    triggerer = InMemoryTriggerer(max_in_flight=10, stop_timeout=0.1)
    async with running(triggerer, Recorder(note_task)) as recorder:
        for count, task in enumerate(make_tasks(5), start=1):
            await triggerer.trigger([task])
            await recorder.wait_for(lambda c=count: len(recorder.received) == c, 1.0)  # type: ignore[misc]
            await recorder.wait_for(lambda: triggerer.in_flight == 0, 1.0)
    assert len(tasks) == 1

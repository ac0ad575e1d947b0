# ruff: noqa: D102 -- each test is named as the sentence it checks
"""The contract every ``Triggerer`` adapter passes (memory, Kafka, PostgreSQL NOTIFY).

Subclass :class:`DurableTriggererContract` (only :class:`TriggererContract` for an adapter
whose triggers do not outlive a stopped listener) in a ``Test...`` class and override the
``triggerer`` fixture: it yields a fresh, *not started* triggerer built with
``max_in_flight=self.max_in_flight`` and ``stop_timeout=self.stop_timeout``, and stops it
afterwards. Tests start and stop it themselves, in the test's own task (the memory adapter's
task group requires that).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from resilient_task.domain.task import BaseTask
from resilient_task.ports.triggerer import Triggerer

__all__ = [
    "DurableTriggererContract",
    "Recorder",
    "TriggererContract",
    "make_tasks",
    "running",
]


def make_tasks(count: int, *, type_: str = "contract") -> list[BaseTask]:
    """``count`` distinct task references with varied versions, sub-types and priorities."""
    return [
        BaseTask(uuid.uuid4(), n % 7, type_, f"sub-{n}" if n % 2 else None, n % 10)
        for n in range(count)
    ]


class Recorder:
    """A trigger callback that records what it receives and can be made slow or failing."""

    def __init__(self, behaviour: Callable[[BaseTask], Awaitable[None]] | None = None) -> None:
        self.received: list[BaseTask] = []
        self.running = 0
        self.max_running = 0
        self._behaviour = behaviour

    async def __call__(self, task: BaseTask) -> None:
        self.received.append(task)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self._behaviour is not None:
                await self._behaviour(task)
        finally:
            self.running -= 1

    @property
    def ids(self) -> set[uuid.UUID]:
        return {task.id for task in self.received}

    async def wait_for(self, condition: Callable[[], bool], within: float) -> None:
        with anyio.fail_after(within):
            # Polling, not an Event: conditions also read the triggerer's own counters.
            while not condition():  # noqa: ASYNC110
                await anyio.sleep(0.01)

    async def wait_for_tasks(self, tasks: list[BaseTask], within: float) -> None:
        wanted = {task.id for task in tasks}
        await self.wait_for(lambda: wanted <= self.ids, within)


@asynccontextmanager
async def running(triggerer: Triggerer, recorder: Recorder) -> AsyncIterator[Recorder]:
    """Start ``triggerer`` with ``recorder`` and stop it on exit (in this task)."""
    await triggerer.start(recorder)
    try:
        yield recorder
    finally:
        await triggerer.stop()


@pytest.mark.anyio
class TriggererContract:
    """Behaviour the ``Triggerer`` port promises; see ``resilient_task.ports.triggerer``."""

    delivery_timeout: float = 5.0
    """Seconds a trigger may take to reach a started callback."""
    quiet_period: float = 0.3
    """Seconds to wait before concluding that nothing more will be delivered."""
    max_in_flight: int = 4
    """The fixture builds triggerers with this many callbacks allowed at once."""
    stop_timeout: float = 0.5
    """The fixture builds triggerers whose ``stop`` waits this long for running callbacks."""

    @pytest.fixture
    def triggerer(self) -> Triggerer:
        """A fresh, not started triggerer (the subclass's factory hook)."""
        raise NotImplementedError("subclasses provide a fresh, not started triggerer")

    async def test_every_triggered_task_reaches_the_callback(self, triggerer: Triggerer) -> None:
        tasks = make_tasks(12)
        async with running(triggerer, Recorder()) as recorder:
            await triggerer.trigger(tasks[:1])
            await triggerer.trigger(tasks[1:])
            await recorder.wait_for_tasks(tasks, self.delivery_timeout)
        by_id = {task.id: task for task in recorder.received}
        assert [by_id[task.id] for task in tasks] == tasks

    async def test_triggering_nothing_is_harmless(self, triggerer: Triggerer) -> None:
        async with running(triggerer, Recorder()) as recorder:
            await triggerer.trigger([])
            await anyio.sleep(self.quiet_period)
        assert recorder.received == []

    async def test_stop_is_idempotent_and_allowed_before_start(self, triggerer: Triggerer) -> None:
        await triggerer.stop()
        await triggerer.start(Recorder())
        await triggerer.stop()
        await triggerer.stop()

    async def test_a_callback_that_raises_does_not_stop_later_deliveries(
        self, triggerer: Triggerer, caplog: pytest.LogCaptureFixture
    ) -> None:
        poison, *healthy = make_tasks(4)

        async def fail_on_poison(task: BaseTask) -> None:
            if task.id == poison.id:
                raise RuntimeError("callback blew up")

        caplog.set_level(logging.ERROR)
        async with running(triggerer, Recorder(fail_on_poison)) as recorder:
            await triggerer.trigger([poison])
            await recorder.wait_for_tasks([poison], self.delivery_timeout)
            await triggerer.trigger(healthy)
            await recorder.wait_for_tasks(healthy, self.delivery_timeout)
        assert any(str(poison.id) in record.getMessage() for record in caplog.records)

    async def test_a_slow_callback_limits_deliveries_in_flight_without_blocking_trigger(
        self, triggerer: Triggerer
    ) -> None:
        release = anyio.Event()

        async def wait_for_release(_: BaseTask) -> None:
            await release.wait()

        tasks = make_tasks(self.max_in_flight * 3)
        async with running(triggerer, Recorder(wait_for_release)) as recorder:
            with anyio.fail_after(self.delivery_timeout):
                for task in tasks:
                    await triggerer.trigger([task])
            await recorder.wait_for(
                lambda: recorder.running == self.max_in_flight, self.delivery_timeout
            )
            await anyio.sleep(self.quiet_period)
            assert recorder.max_running == self.max_in_flight
            assert len(recorder.received) == self.max_in_flight
            release.set()
            await recorder.wait_for_tasks(tasks, self.delivery_timeout)
        assert recorder.max_running == self.max_in_flight

    async def test_stop_returns_even_when_a_callback_never_does(self, triggerer: Triggerer) -> None:
        async def never_return(_: BaseTask) -> None:
            await anyio.sleep_forever()

        tasks = make_tasks(1)
        await triggerer.start(recorder := Recorder(never_return))
        try:
            await triggerer.trigger(tasks)
            await recorder.wait_for_tasks(tasks, self.delivery_timeout)
        finally:
            with anyio.fail_after(self.stop_timeout + self.delivery_timeout):
                await triggerer.stop()

    async def test_a_callback_that_finishes_within_stop_timeout_is_not_cancelled(
        self, triggerer: Triggerer
    ) -> None:
        finished: list[BaseTask] = []

        async def take_a_moment(task: BaseTask) -> None:
            await anyio.sleep(self.stop_timeout / 5)
            finished.append(task)

        tasks = make_tasks(1)
        async with running(triggerer, Recorder(take_a_moment)) as recorder:
            await triggerer.trigger(tasks)
            await recorder.wait_for_tasks(tasks, self.delivery_timeout)
        assert finished == tasks

    async def test_start_and_stop_may_run_in_different_tasks(self, triggerer: Triggerer) -> None:
        tasks = make_tasks(1)
        recorder = Recorder()
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(triggerer.start, recorder)
        await triggerer.trigger(tasks)
        await recorder.wait_for_tasks(tasks, self.delivery_timeout)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(triggerer.stop)


class DurableTriggererContract(TriggererContract):
    """The contract plus durability: triggers outlive a stopped (or not yet started) node.

    Kafka keeps triggers in the log and the in-memory adapter in its queue. PostgreSQL
    ``NOTIFY`` reaches only connections listening at commit, so that adapter passes only
    :class:`TriggererContract`; the resumer's poll recovers what it loses.
    """

    async def test_triggers_sent_before_start_are_delivered_after_start(
        self, triggerer: Triggerer
    ) -> None:
        tasks = make_tasks(3)
        await triggerer.trigger(tasks)
        async with running(triggerer, Recorder()) as recorder:
            await recorder.wait_for_tasks(tasks, self.delivery_timeout)

    async def test_a_stopped_triggerer_delivers_nothing_until_started_again(
        self, triggerer: Triggerer
    ) -> None:
        first, later = make_tasks(2), make_tasks(2)
        async with running(triggerer, Recorder()) as before_stop:
            await triggerer.trigger(first)
            await before_stop.wait_for_tasks(first, self.delivery_timeout)
        await triggerer.trigger(later)
        await anyio.sleep(self.quiet_period)
        assert before_stop.ids == {task.id for task in first}
        async with running(triggerer, Recorder()) as after_restart:
            await after_restart.wait_for_tasks(later, self.delivery_timeout)

    async def test_handled_triggers_are_not_delivered_again_after_restart(
        self, triggerer: Triggerer
    ) -> None:
        tasks = make_tasks(5)
        async with running(triggerer, Recorder()) as first_run:
            await triggerer.trigger(tasks)
            await first_run.wait_for_tasks(tasks, self.delivery_timeout)
        marker = make_tasks(1)
        await triggerer.trigger(marker)
        async with running(triggerer, Recorder()) as second_run:
            await second_run.wait_for_tasks(marker, self.delivery_timeout)
            await anyio.sleep(self.quiet_period)
        assert second_run.ids == {marker[0].id}

    async def test_a_trigger_whose_callback_never_returned_is_delivered_again_after_restart(
        self, triggerer: Triggerer
    ) -> None:
        stuck, handled = make_tasks(2)

        async def hang_on_stuck(task: BaseTask) -> None:
            if task.id == stuck.id:
                await anyio.sleep_forever()

        async with running(triggerer, Recorder(hang_on_stuck)) as first_run:
            await triggerer.trigger([stuck])
            await first_run.wait_for_tasks([stuck], self.delivery_timeout)
            await triggerer.trigger([handled])
            await first_run.wait_for_tasks([handled], self.delivery_timeout)
        async with running(triggerer, Recorder()) as second_run:
            await second_run.wait_for_tasks([stuck], self.delivery_timeout)

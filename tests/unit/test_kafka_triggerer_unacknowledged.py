"""KafkaTriggerer with ``on_unacknowledged``: trigger returns without waiting for the broker.

The tasks are durable once committed, so the caller need not wait for the acknowledgement;
triggers the broker refuses, or does not acknowledge within ``send_timeout``, go to the
callback (which pulls the tasks' pick-up deadlines). Against a fake producer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.triggerer import KafkaTriggerer
from resilient_task.domain.task import BaseTask
from resilient_task.errors import TriggerError
from resilient_task.testing.triggerer_contract import make_tasks
from tests.unit.fake_kafka import FakeProducer, install_fake_producer

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

SEND_TIMEOUT = 0.3


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    return install_fake_producer(monkeypatch)


class Hurried:
    def __init__(self) -> None:
        self.calls: list[list[BaseTask]] = []
        self.called = asyncio.Event()

    async def __call__(self, tasks: Sequence[BaseTask]) -> None:
        self.calls.append(list(tasks))
        self.called.set()


def _triggerer(hurried: Hurried) -> KafkaTriggerer:
    return KafkaTriggerer(
        properties=KafkaProperties(),
        send_timeout=SEND_TIMEOUT,
        retry_after=60,
        on_unacknowledged=hurried,
    )


async def test_acknowledged_triggers_never_reach_the_callback(
    fake_kafka: type[FakeProducer],
) -> None:
    hurried = Hurried()
    async with _triggerer(hurried) as triggerer:
        for _ in range(5):
            await triggerer.trigger(make_tasks(2))
    assert len(fake_kafka.sent) == 10
    assert hurried.calls == []


async def test_a_silent_broker_does_not_hold_the_caller_and_its_tasks_go_to_the_callback(
    fake_kafka: type[FakeProducer],
) -> None:
    hurried = Hurried()
    async with _triggerer(hurried) as triggerer:
        await triggerer.trigger(make_tasks(1))
        fake_kafka.mode = "silent"
        tasks = make_tasks(3)
        started = time.monotonic()
        await triggerer.trigger(tasks)
        assert time.monotonic() - started < SEND_TIMEOUT / 2  # did not wait for the ack
        assert hurried.calls == []
        async with asyncio.timeout(5):
            await hurried.called.wait()
        assert time.monotonic() - started >= SEND_TIMEOUT * 0.9
        assert hurried.calls == [tasks]
        # As without the callback: the topic counts as down, the next call fails at once.
        with pytest.raises(TriggerError, match="has not answered a probe"):
            await triggerer.trigger(make_tasks(1))


async def test_a_refused_trigger_goes_to_the_callback_at_once(
    fake_kafka: type[FakeProducer],
) -> None:
    hurried = Hurried()
    async with _triggerer(hurried) as triggerer:
        fake_kafka.mode = "refuse"
        tasks = make_tasks(2)
        started = time.monotonic()
        await triggerer.trigger(tasks)
        async with asyncio.timeout(5):
            await hurried.called.wait()
        assert time.monotonic() - started < SEND_TIMEOUT
        assert hurried.calls == [tasks]


async def test_stop_waits_for_the_callback_of_a_pending_trigger(
    fake_kafka: type[FakeProducer],
) -> None:
    hurried = Hurried()
    triggerer = _triggerer(hurried)
    fake_kafka.mode = "silent"
    tasks = make_tasks(1)
    await triggerer.trigger(tasks)
    await triggerer.stop()  # waits send_timeout at most for the ack, then hurries the task
    assert hurried.calls == [tasks]

"""add_task over Kafka hands the trigger over without waiting for the broker's acknowledgement.

``KafkaTriggers(wait_for_ack=False)`` (the default): ``add_task`` returns once the task is
committed and its trigger is with the producer; a trigger the broker later refuses or does not
acknowledge within the send timeout pulls the task's pick-up deadline to now (so polling takes
it at once), and the task ids are logged. Against a fake producer; the in-memory store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import pytest

from resilient_task import AddTaskRequest, KafkaTriggers, ResilientTask, TaskStatus
from resilient_task.adapters.kafka.messages import decode_trigger
from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.triggerer import KafkaTriggerer
from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO
from resilient_task.domain.task import BaseTask
from resilient_task.errors import ConfigurationError
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.task_service import TaskService
from resilient_task.testing.triggerer_contract import make_tasks
from tests.unit.fake_kafka import FakeProducer, install_fake_producer
from tests.unit.helpers import START, properties

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

SEND_TIMEOUT = 0.3
QUEUE_TIME = properties().expected_queue_time  # minutes: a pulled deadline stands out


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    return install_fake_producer(monkeypatch)


def _service(dao: InMemoryTaskDAO, triggerer: KafkaTriggerer, *, hand_over: bool) -> TaskService:
    return TaskService(
        dao=dao,
        triggerer=triggerer,
        registry=HandlerRegistry([]),
        clock=FakeClock(),
        properties=properties(),
        hand_over=triggerer.hand_over if hand_over else None,
    )


def _triggerer() -> KafkaTriggerer:
    return KafkaTriggerer(properties=KafkaProperties(), send_timeout=SEND_TIMEOUT, retry_after=60)


async def _wait_for_deadline(dao: InMemoryTaskDAO, task_id: UUID, deadline: datetime) -> None:
    async with asyncio.timeout(5):
        while dao.tasks[task_id].next_event_time != deadline:  # noqa: ASYNC110 - a store field
            await asyncio.sleep(0.01)


async def test_a_late_failure_of_a_handed_over_trigger_pulls_the_deadline(
    fake_kafka: type[FakeProducer], caplog: pytest.LogCaptureFixture
) -> None:
    dao = InMemoryTaskDAO()
    async with _triggerer() as triggerer:
        service = _service(dao, triggerer, hand_over=True)
        fake_kafka.mode = "silent"
        started = time.monotonic()
        result = await service.add_task(AddTaskRequest(type="work"))
        assert time.monotonic() - started < SEND_TIMEOUT / 2  # did not wait for the ack
        task = dao.tasks[result.task_id]
        assert (task.status, task.next_event_time) == (TaskStatus.SUBMITTED, START + QUEUE_TIME)
        assert len(fake_kafka.silent) == 1

        with caplog.at_level(logging.WARNING):
            await _wait_for_deadline(dao, result.task_id, START)  # pulled to now
        assert time.monotonic() - started >= SEND_TIMEOUT * 0.9
        assert dao.tasks[result.task_id].status is TaskStatus.SUBMITTED
        assert dao.tasks[result.task_id].version == task.version + 1
        assert str(result.task_id) in caplog.text


async def test_a_refused_handed_over_trigger_pulls_the_deadline_at_once(
    fake_kafka: type[FakeProducer],
) -> None:
    dao = InMemoryTaskDAO()
    async with _triggerer() as triggerer:
        service = _service(dao, triggerer, hand_over=True)
        fake_kafka.mode = "refuse"
        started = time.monotonic()
        result = await service.add_task(AddTaskRequest(type="work"))
        await _wait_for_deadline(dao, result.task_id, START)
        assert time.monotonic() - started < SEND_TIMEOUT


async def test_an_acknowledged_trigger_leaves_the_deadline_alone(
    fake_kafka: type[FakeProducer],
) -> None:
    dao = InMemoryTaskDAO()
    async with _triggerer() as triggerer:
        service = _service(dao, triggerer, hand_over=True)
        fake_kafka.mode = "silent"
        result = await service.add_task(AddTaskRequest(type="work"))
        fake_kafka.silent[0].set_result(None)  # a late but timely acknowledgement
        await asyncio.sleep(SEND_TIMEOUT * 1.5)
        assert dao.tasks[result.task_id].next_event_time == START + QUEUE_TIME


async def test_without_hand_over_add_task_waits_for_the_acknowledgement(
    fake_kafka: type[FakeProducer],
) -> None:
    dao = InMemoryTaskDAO()
    async with _triggerer() as triggerer:
        service = _service(dao, triggerer, hand_over=False)
        fake_kafka.mode = "silent"
        adding = asyncio.ensure_future(service.add_task(AddTaskRequest(type="work")))
        await asyncio.sleep(SEND_TIMEOUT / 3)
        assert not adding.done()
        fake_kafka.silent[0].set_result(None)
        result = await adding
        assert dao.tasks[result.task_id].next_event_time == START + QUEUE_TIME


async def test_stop_hands_the_still_unacknowledged_triggers_to_polling(
    fake_kafka: type[FakeProducer], caplog: pytest.LogCaptureFixture
) -> None:
    dao = InMemoryTaskDAO()
    triggerer = _triggerer()
    service = _service(dao, triggerer, hand_over=True)
    fake_kafka.mode = "silent"
    result = await service.add_task(AddTaskRequest(type="work"))
    with caplog.at_level(logging.WARNING):
        await triggerer.stop()  # waits send_timeout at most for the ack, then hurries the task
    assert dao.tasks[result.task_id].next_event_time == START
    assert str(result.task_id) in caplog.text


# --- the node ----------------------------------------------------------------------------


def _node(triggers: KafkaTriggers) -> ResilientTask:
    return ResilientTask(
        properties=properties(kafka=KafkaProperties()),
        triggers=triggers,
        run_workers=False,
        in_memory=True,
    )


async def test_a_node_with_kafka_triggers_does_not_wait_for_the_ack_by_default(
    fake_kafka: type[FakeProducer],
) -> None:
    assert KafkaTriggers().wait_for_ack is False
    async with _node(KafkaTriggers()) as app:
        fake_kafka.mode = "silent"
        async with asyncio.timeout(1):  # the node's send timeout is 3 s
            await app.service.add_task(AddTaskRequest(type="work"))
        assert len(fake_kafka.silent) == 1
        fake_kafka.silent[0].set_result(None)


async def test_wait_for_ack_makes_add_task_wait_for_the_broker(
    fake_kafka: type[FakeProducer],
) -> None:
    async with _node(KafkaTriggers(wait_for_ack=True)) as app:
        fake_kafka.mode = "silent"
        adding = asyncio.ensure_future(app.service.add_task(AddTaskRequest(type="work")))
        await asyncio.sleep(0.2)
        assert not adding.done()
        fake_kafka.silent[0].set_result(None)
        async with asyncio.timeout(1):
            await adding


async def test_wait_for_ack_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="wait_for_ack"):
        KafkaTriggers(wait_for_ack="no")  # type: ignore[arg-type]


# --- coalescing ----------------------------------------------------------------------------


class Lost:
    def __init__(self) -> None:
        self.tasks: list[BaseTask] = []

    async def __call__(self, tasks: Sequence[BaseTask]) -> None:
        self.tasks.extend(tasks)


def _coalescing(coalesce: float) -> KafkaTriggerer:
    return KafkaTriggerer(
        properties=KafkaProperties(), send_timeout=SEND_TIMEOUT, retry_after=60, coalesce=coalesce
    )


async def test_hand_overs_soon_after_a_send_wait_and_go_out_together(
    fake_kafka: type[FakeProducer],
) -> None:
    lost = Lost()
    async with _coalescing(0.05) as triggerer:
        first, second, third = make_tasks(3)
        await triggerer.hand_over([first], lost)
        assert len(fake_kafka.sent) == 1  # after a quiet spell: at once
        await triggerer.hand_over([second], lost)
        await triggerer.hand_over([third], lost)
        assert len(fake_kafka.sent) == 1  # within 50 ms of it: held
        async with asyncio.timeout(5):
            while len(fake_kafka.sent) < 3:  # noqa: ASYNC110 - the fake's record
                await asyncio.sleep(0.01)
        assert [decode_trigger(value) for value in fake_kafka.sent] == [first, second, third]
    assert lost.tasks == []


async def test_stop_sends_the_held_hand_overs(fake_kafka: type[FakeProducer]) -> None:
    lost = Lost()
    tasks = make_tasks(3)
    async with _coalescing(60) as triggerer:
        for task in tasks:
            await triggerer.hand_over([task], lost)
        assert len(fake_kafka.sent) == 1
    assert [decode_trigger(value) for value in fake_kafka.sent] == tasks
    assert lost.tasks == []


async def test_held_hand_overs_the_broker_refuses_go_to_the_callback(
    fake_kafka: type[FakeProducer],
) -> None:
    lost = Lost()
    first, second = make_tasks(2)
    async with _coalescing(0.05) as triggerer:
        await triggerer.hand_over([first], lost)
        fake_kafka.mode = "refuse"
        await triggerer.hand_over([second], lost)  # held: no error for the caller
        async with asyncio.timeout(5):
            while not lost.tasks:  # noqa: ASYNC110 - the callback's record
                await asyncio.sleep(0.01)
    assert lost.tasks == [second]


async def test_held_hand_overs_are_not_sent_once_the_topic_is_down(
    fake_kafka: type[FakeProducer],
) -> None:
    lost = Lost()
    first, second = make_tasks(2)
    async with _coalescing(0.2) as triggerer:
        fake_kafka.mode = "refuse"
        await triggerer.hand_over([first], lost)  # refused: the topic counts as down
        await triggerer.hand_over([second], lost)  # held, then handed to polling unsent
        async with asyncio.timeout(5):
            while len(lost.tasks) < 2:  # noqa: ASYNC110 - the callback's record
                await asyncio.sleep(0.01)
    assert lost.tasks == [first, second]
    assert len(fake_kafka.sent) == 1

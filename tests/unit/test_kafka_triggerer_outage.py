"""KafkaTriggerer.trigger during a broker outage, against a fake producer.

A caller may wait the send timeout once per outage, never once per ``retry_after`` window:
after the first failure, calls fail at once while a background probe finds out when the broker
takes triggers again.
"""

from __future__ import annotations

import asyncio

import pytest

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.adapters.kafka.triggerer import KafkaTriggerer
from resilient_task.errors import TriggerError
from resilient_task.testing.triggerer_contract import make_tasks
from tests.unit.fake_kafka import FakeProducer, install_fake_producer

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

SEND_TIMEOUT = 0.3
RETRY_AFTER = 0.1


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    return install_fake_producer(monkeypatch)


async def test_during_an_outage_a_caller_waits_the_send_timeout_once_not_once_per_window(
    fake_kafka: type[FakeProducer],
) -> None:
    triggerer = KafkaTriggerer(
        properties=KafkaProperties(), send_timeout=SEND_TIMEOUT, retry_after=RETRY_AFTER
    )
    async with triggerer:
        await triggerer.trigger(make_tasks(1))  # up: acknowledged
        fake_kafka.mode = "silent"
        waited, failed_at_once = 0, 0
        for _ in range(12):  # 12 calls over ~1.2 s: a dozen retry_after windows
            try:
                await triggerer.trigger(make_tasks(1))
            except TriggerError as exc:
                if "could not send" in str(exc):
                    waited += 1  # this caller waited the whole send timeout
                else:
                    failed_at_once += 1
            await asyncio.sleep(RETRY_AFTER)
        assert waited == 1, f"{waited} callers waited the send timeout during one outage"
        assert failed_at_once == 11
        assert triggerer.probes >= 1, "no background probe of the broker"

        fake_kafka.mode = "ack"  # the broker is back: the next probe succeeds
        recovered = False
        for _ in range(50):
            try:
                await triggerer.trigger(make_tasks(1))
            except TriggerError:
                await asyncio.sleep(RETRY_AFTER)
                continue
            recovered = True
            break
        assert recovered, "triggers still fail at once after the broker came back"

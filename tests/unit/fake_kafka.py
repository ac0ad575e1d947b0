"""A fake aiokafka producer for the KafkaTriggerer unit tests: no broker, no network."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from resilient_task.adapters.kafka import clients as clients_module
from resilient_task.adapters.kafka import topics as topics_module
from resilient_task.adapters.kafka import triggerer as triggerer_module


class FakeProducer:
    """Sends are acknowledged at once (``mode`` "ack"), never ("silent": a dead broker) or
    refused at once ("refuse"); ``sent`` holds every value sent, ``silent`` the futures of the
    sends left unanswered (a test may answer them late)."""

    mode: ClassVar[Literal["ack", "silent", "refuse"]] = "ack"
    sent: ClassVar[list[bytes]] = []
    silent: ClassVar[list[asyncio.Future[None]]] = []

    def __init__(self, **_: Any) -> None:
        return None

    async def start(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        FakeProducer.sent.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if FakeProducer.mode == "ack":
            future.set_result(None)
        elif FakeProducer.mode == "refuse":
            future.set_exception(KafkaTimeoutError("refused"))
        else:
            FakeProducer.silent.append(future)
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(6))

    async def stop(self) -> None:
        return None


def install_fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    """Make ``KafkaTriggerer`` use :class:`FakeProducer` (reset to "ack") and find its topic."""

    async def exists(*_: Any, **__: Any) -> tuple[int, bool]:
        return 6, False

    monkeypatch.setattr(triggerer_module, "AIOKafkaProducer", FakeProducer)
    accepted = clients_module._CLIENT_KEYS[AIOKafkaProducer]
    monkeypatch.setitem(clients_module._CLIENT_KEYS, FakeProducer, accepted)
    monkeypatch.setattr(topics_module, "ensure_topic", exists)
    FakeProducer.mode, FakeProducer.sent, FakeProducer.silent = "ack", [], []
    return FakeProducer

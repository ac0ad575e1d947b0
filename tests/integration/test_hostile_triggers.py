"""Hostile trigger values on the real transports: each is skipped, and triggers behind it flow.

Kafka: a value the decoder used to raise on (``b"[" * 5000``: RecursionError) restarted the
consumer on the same uncommitted offset again and again. Here every such value is logged as
malformed once, committed past (a second consumer in the group sees none of it again), and the
real triggers produced after it are delivered. NOTIFY: the same values sent with ``pg_notify``
by anyone who can connect are skipped and later notifications still arrive.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from resilient_task.testing.triggerer_contract import Recorder, make_tasks, running
from tests.integration.test_kafka_triggerer import (
    DELIVERY_TIMEOUT,
    make_properties,
    make_triggerer,
    produce_raw,
)
from tests.integration.test_postgres_notify import make_triggerer as make_notify_triggerer
from tests.integration.test_postgres_notify import sql

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _kafka(**changes: object) -> bytes:
    document = {"v": 1, "id": str(uuid.uuid4()), "version": 0, "type": "t", "priority": 5}
    document.update(changes)
    return json.dumps(document).encode()


HOSTILE_KAFKA: list[bytes] = [
    b"[" * 5000,  # RecursionError in the JSON parser
    b'{"v":' * 1500,
    _kafka(version=2**64),  # beyond bigint: used to fail the whole grab batch
    _kafka(version=-1),
    _kafka(v=True),
    _kafka(type="\ud800"),  # a lone surrogate (sent as a JSON escape)
    _kafka(type="a\x00b"),
    _kafka(type="forged\nWARNING line " * 50),
    b"1" * 5000,  # an int longer than Python converts from text
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
]


async def test_hostile_kafka_values_are_skipped_once_and_committed_past(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    properties = make_properties(kafka_bootstrap, partitions=1)
    await produce_raw(properties, list(HOSTILE_KAFKA))
    tasks = make_tasks(3)
    caplog.set_level(logging.WARNING, logger="resilient_task.adapters.kafka")
    async with make_triggerer(properties) as triggerer:
        await triggerer.trigger(tasks)
        async with running(triggerer, Recorder()) as recorder:
            await recorder.wait_for_tasks(tasks, DELIVERY_TIMEOUT)
    assert recorder.ids == {task.id for task in tasks}
    skipped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == len(HOSTILE_KAFKA)
    assert all("; value: " in r.getMessage() for r in skipped), "each line says why"
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback: no consumer restart

    caplog.clear()
    marker = make_tasks(1)
    async with make_triggerer(properties) as again:
        await again.trigger(marker)
        async with running(again, Recorder()) as second:
            await second.wait_for_tasks(marker, DELIVERY_TIMEOUT)
    assert second.ids == {marker[0].id}
    assert not [r for r in caplog.records if "malformed" in r.getMessage()]


HOSTILE_NOTIFY: list[str] = [
    "[" * 5000,
    "[1," + "[" * 5000,
    json.dumps([1, [uuid.uuid4().hex, 2**64, "t", None, 5]]),
    json.dumps([True, [uuid.uuid4().hex, 1, "t", None, 5]]),
    json.dumps([1, [uuid.uuid4().hex, 1, "\ud800", None, 5]]),
    "1" * 5000,
    "forged\nWARNING line " * 50,
]


async def test_hostile_notifications_are_skipped_and_later_triggers_delivered(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tasks = make_tasks(2)
    triggerer = make_notify_triggerer(database_url)
    async with triggerer, running(triggerer, Recorder()) as recorder:
        for payload in HOSTILE_NOTIFY:
            await sql(database_url, "SELECT pg_notify(:c, :p)", c=triggerer.channel, p=payload)
        await triggerer.trigger(tasks)
        await recorder.wait_for_tasks(tasks, 5)
    assert recorder.ids == {task.id for task in tasks}
    skipped = [r for r in caplog.records if "malformed notification" in r.getMessage()]
    assert len(skipped) == len(HOSTILE_NOTIFY)
    assert all("; payload: " in r.getMessage() for r in skipped), "each line says why"
    assert all("\n" not in r.getMessage() for r in caplog.records)

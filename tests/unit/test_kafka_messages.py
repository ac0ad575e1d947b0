"""The trigger message format: round trips, and never raises on garbage (poison pills)."""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from resilient_task.adapters.kafka.messages import MESSAGE_VERSION, decode_trigger, encode_trigger
from resilient_task.domain.task import BaseTask
from tests.unit.hostile import valid_texts

tasks = st.builds(
    BaseTask,
    id=st.uuids(),
    version=st.integers(min_value=0, max_value=2**40),
    type=valid_texts(50),
    sub_type=st.none() | valid_texts(20),
    priority=st.integers(min_value=0, max_value=9),
)


@given(tasks)
def test_every_trigger_round_trips(task: BaseTask) -> None:
    assert decode_trigger(encode_trigger(task)) == task


@given(tasks)
def test_the_message_is_what_json_dumps_writes(task: BaseTask) -> None:
    document = {
        "v": MESSAGE_VERSION,
        "id": str(task.id),
        "version": task.version,
        "type": task.type,
        "sub_type": task.sub_type,
        "priority": task.priority,
    }
    expected = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    assert encode_trigger(task) == expected


def test_the_message_is_small_versioned_json() -> None:
    task = BaseTask(uuid.uuid4(), 3, "send-email", None, 5)
    document = json.loads(encode_trigger(task))
    assert document["v"] == MESSAGE_VERSION
    assert document["id"] == str(task.id)
    assert len(encode_trigger(task)) < 150


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_to_none_or_a_task_never_an_exception(value: bytes) -> None:
    result = decode_trigger(value)
    assert result is None or isinstance(result, BaseTask)


def test_malformed_documents_are_rejected() -> None:
    good = json.loads(encode_trigger(BaseTask(uuid.uuid4(), 1, "t")))
    for broken in (
        {**good, "v": 2},
        {**good, "id": "not-a-uuid"},
        {**good, "version": "1"},
        {**good, "version": True},
        {**good, "version": 2**64},
        {**good, "version": -1},
        {**good, "v": True},
        {**good, "type": " "},
        {**good, "type": "\ud800"},
        {**good, "priority": 10},
        {**good, "type": ""},
        {**good, "type": 7},
        {**good, "sub_type": 3},
        [good],
        None,
    ):
        assert decode_trigger(json.dumps(broken).encode()) is None
    assert decode_trigger(None) is None
    assert decode_trigger(b"\xff\xfe") is None

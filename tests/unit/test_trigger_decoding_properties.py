"""Any bytes at all decode to a trigger or to None, never an exception (Kafka and NOTIFY).

A trigger comes from outside the process: a poison message that raises in the decoder would
restart the consumer on the same uncommitted offset forever, and a value the store cannot hold
(``version: 2**64``) would fail the grab of the whole batch fetched with it. So each decoder
must (1) never raise, whatever it is given, (2) accept exactly the references the documented
rules accept (oracles in :mod:`tests.unit.hostile`), and (3) explain a refusal in one log-safe
line. Budget: ``RESILIENT_TASK_FUZZ_EXAMPLES`` (see :mod:`tests.unit.hostile`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from resilient_task.adapters.kafka.messages import (
    MAX_MESSAGE_BYTES,
    decode_trigger,
    encode_trigger,
    malformed_reason,
)
from resilient_task.adapters.postgres.notify_payloads import (
    decode_payload,
    encode_payloads,
)
from resilient_task.adapters.postgres.notify_payloads import (
    malformed_reason as malformed_payload_reason,
)
from resilient_task.domain.task import BaseTask
from tests.unit.hostile import (
    expected_reference,
    fuzz,
    hostile_values,
    reference_fields,
    valid_texts,
)

_Fields = tuple[Any, Any, Any, Any, Any]

DEEP = [b"[" * 5000, b'{"v":' * 1500, b"[" * 3000 + b"]" * 3000, b"[1," + b"[" * 7000]
"""Nesting that overflows the parser's recursion limit (RecursionError, not ValueError), in
values short enough to be parsed at all."""

tasks = st.builds(
    BaseTask,
    id=st.uuids(),
    version=st.integers(min_value=0, max_value=2**63 - 1),
    type=valid_texts(),
    sub_type=st.none() | valid_texts(),
    priority=st.integers(min_value=0, max_value=9),
)


def _one_line(text: str) -> bool:
    return text.isprintable() and len(text) < 1000


def _kafka_document(fields: _Fields, v: Any = 1) -> bytes:
    task_id, version, type_, sub_type, priority = fields
    document = {
        "v": v,
        "id": task_id,
        "version": version,
        "type": type_,
        "sub_type": sub_type,
        "priority": priority,
    }
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a forger would send them.
    return json.dumps(document).encode()


def _notify_payload(entries: list[_Fields], version: Any = 1) -> str:
    return json.dumps([version, *[list(entry) for entry in entries]])


# --- Kafka ---------------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=MAX_MESSAGE_BYTES + 10) | st.sampled_from(DEEP))
@example(b"[" * 5000)
@example(b"\xed\xa0\x80")  # a UTF-8-encoded surrogate: not valid UTF-8
@example(b"1" * 5000)  # an int longer than Python converts from text
def test_any_bytes_decode_to_a_trigger_or_none_and_a_one_line_reason(value: bytes) -> None:
    task = decode_trigger(value)
    assert task is None or isinstance(task, BaseTask)
    if task is None:
        assert _one_line(malformed_reason(value))


@fuzz
@given(reference_fields())
def test_a_kafka_trigger_is_accepted_exactly_when_its_fields_are_storable(
    fields: _Fields,
) -> None:
    value = _kafka_document(fields)
    expected = expected_reference(fields)
    assert decode_trigger(value) == expected
    if expected is None:
        assert _one_line(malformed_reason(value))


@fuzz
@given(hostile_values)
@example(True)
@example(1.0)
@example("1")
def test_only_the_int_1_is_a_kafka_message_version(v: Any) -> None:
    decoded = decode_trigger(_kafka_document(("0" * 32, 0, "t", None, 5), v=v))
    assert (decoded is not None) == (type(v) is int and v == 1)


@fuzz
@given(tasks)
def test_every_storable_trigger_round_trips_through_kafka(task: BaseTask) -> None:
    assert decode_trigger(encode_trigger(task)) == task


@pytest.mark.parametrize("value", DEEP)
def test_deeply_nested_kafka_values_are_refused_as_not_json(value: bytes) -> None:
    assert decode_trigger(value) is None
    reason = malformed_reason(value)
    assert reason.startswith(("not JSON", "not a JSON object")), reason


def test_a_version_beyond_bigint_is_refused_with_its_reason() -> None:
    value = _kafka_document(("0" * 32, 2**64, "t", None, 5))
    assert decode_trigger(value) is None
    assert malformed_reason(value).startswith("version must be from 0 to 2**63-1")


def test_a_kafka_value_over_the_size_limit_is_refused_unparsed() -> None:
    value = b" " * MAX_MESSAGE_BYTES + encode_trigger(BaseTask(uuid.uuid4(), 1, "t"))
    assert decode_trigger(value) is None
    assert "over the limit" in malformed_reason(value)


def test_a_refusal_reason_escapes_newlines_and_is_cut() -> None:
    value = _kafka_document(("0" * 32, -1, "forged\nWARNING: line" * 100, None, 5))
    reason = malformed_reason(value)
    assert "\n" not in reason
    assert len(reason) < 400


# --- NOTIFY --------------------------------------------------------------------------------


@fuzz
@given(st.text(max_size=8100) | st.binary(max_size=8100) | st.sampled_from(DEEP))
@example("[" * 5000)
@example("[1," + "[" * 5000)
def test_any_text_or_bytes_decode_to_references_or_none_and_a_one_line_reason(
    payload: str | bytes,
) -> None:
    found = decode_payload(payload)
    assert found is None or all(isinstance(task, BaseTask) for task in found)
    if found is None:
        assert _one_line(malformed_payload_reason(payload))


@fuzz
@given(st.lists(reference_fields(), max_size=4))
def test_a_notification_is_accepted_exactly_when_every_entry_is_storable(
    entries: list[_Fields],
) -> None:
    payload = _notify_payload(entries)
    expected = [expected_reference(entry) for entry in entries]
    if any(task is None for task in expected) or len(payload) > 7999:
        assert decode_payload(payload) is None
        assert _one_line(malformed_payload_reason(payload))
    else:
        assert decode_payload(payload) == expected


@fuzz
@given(hostile_values, st.lists(reference_fields(), max_size=2))
def test_only_the_int_1_is_a_notification_version(version: Any, entries: list[_Fields]) -> None:
    valid = [e for e in entries if expected_reference(e) is not None]
    decoded = decode_payload(_notify_payload(valid, version))
    assert (decoded is not None) == (type(version) is int and version == 1)


@fuzz
@given(st.lists(tasks, max_size=20))
def test_every_storable_batch_round_trips_through_notify(batch: list[BaseTask]) -> None:
    decoded = [t for payload in encode_payloads(batch) for t in decode_payload(payload) or []]
    assert decoded == batch


@pytest.mark.parametrize("payload", [v.decode() for v in DEEP])
def test_deeply_nested_notifications_are_refused_as_not_json(payload: str) -> None:
    assert decode_payload(payload) is None
    assert decode_payload(payload.encode()) is None


def test_a_notification_with_a_version_beyond_bigint_is_refused_with_its_reason() -> None:
    payload = _notify_payload([("0" * 32, 2**64, "t", None, 5)])
    assert decode_payload(payload) is None
    assert "entry 1: version must be from 0 to 2**63-1" in malformed_payload_reason(payload)

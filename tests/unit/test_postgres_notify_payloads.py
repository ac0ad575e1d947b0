"""The NOTIFY payloads and channel names: packing, splitting, round trips, poison pills."""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from resilient_task.adapters.postgres import PostgresSettings
from resilient_task.adapters.postgres.notify_payloads import (
    MAX_PAYLOAD_BYTES,
    PAYLOAD_VERSION,
    channel_name,
    decode_payload,
    encode_payloads,
)
from resilient_task.domain.task import BaseTask
from tests.unit.hostile import valid_texts

names = valid_texts()
tasks = st.builds(
    BaseTask,
    id=st.uuids(),
    version=st.integers(min_value=0, max_value=2**62),
    type=names,
    sub_type=st.none() | names,
    priority=st.integers(min_value=0, max_value=9),
)


def references(count: int, *, type_: str = "send-email") -> list[BaseTask]:
    return [BaseTask(uuid.uuid4(), n, type_, None, 5) for n in range(count)]


@given(st.lists(tasks, max_size=40))
def test_every_batch_round_trips_in_order_within_the_size_limit(batch: list[BaseTask]) -> None:
    payloads = encode_payloads(batch)
    decoded = [task for payload in payloads for task in decode_payload(payload) or []]
    assert decoded == batch
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert all(p.isascii() for p in payloads)


def test_nothing_to_trigger_gives_no_payload() -> None:
    assert encode_payloads([]) == []


def test_many_small_references_share_a_payload() -> None:
    batch = references(1000)
    payloads = encode_payloads(batch)
    assert len(payloads) == 8  # about 60 bytes a reference: ~130 per payload
    assert all(7000 < len(p) <= MAX_PAYLOAD_BYTES for p in payloads[:-1])


def test_a_batch_splits_exactly_at_the_limit() -> None:
    batch = references(3)
    one = len(encode_payloads(batch[:1])[0])
    two = len(encode_payloads(batch[:2])[0])
    assert encode_payloads(batch, limit=two) == [
        encode_payloads(batch[:2])[0],
        encode_payloads(batch[2:])[0],
    ]
    assert len(encode_payloads(batch, limit=two - 1)) == 3
    assert one < two


def test_the_longest_possible_reference_still_fits_in_one_payload() -> None:
    worst = BaseTask(uuid.uuid4(), 2**62, "\u2603" * 250, "\U0001f600" * 250, 9)
    payloads = encode_payloads([worst, worst])
    assert len(payloads) == 2
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert decode_payload(payloads[0]) == [worst]


def test_the_payload_is_a_versioned_json_array() -> None:
    task = BaseTask(uuid.uuid4(), 3, "ship", "express", 2)
    document = json.loads(encode_payloads([task])[0])
    assert document == [PAYLOAD_VERSION, [task.id.hex, 3, "ship", "express", 2]]


@given(st.text(max_size=200))
def test_arbitrary_text_decodes_to_none_or_tasks_never_an_exception(payload: str) -> None:
    result = decode_payload(payload)
    assert result is None or all(isinstance(task, BaseTask) for task in result)


def test_malformed_payloads_are_rejected() -> None:
    good = [uuid.uuid4().hex, 1, "t", None, 5]
    for broken in (
        [2, good],
        [True, good],
        [],
        {"v": 1},
        [1, good[:4]],
        [1, ["not-a-uuid", *good[1:]]],
        [1, [good[0], "1", *good[2:]]],
        [1, [good[0], True, *good[2:]]],
        [1, [good[0], 2**64, *good[2:]]],
        [1, [*good[:2], "\ud800", *good[3:]]],
        [1, [*good[:2], "", *good[3:]]],
        [1, [*good[:3], 7, 5]],
        [1, [*good[:4], None]],
        [1, good, "junk"],
    ):
        assert decode_payload(json.dumps(broken)) is None, broken
    assert decode_payload("") is None
    assert decode_payload("not json") is None


def test_the_channel_names_the_schema_and_prefix() -> None:
    assert channel_name(PostgresSettings()) == "public.resilient_task_triggers"
    assert channel_name(PostgresSettings(schema="billing", prefix="")) == "billing.triggers"


def test_deployments_in_one_database_get_different_channels() -> None:
    settings = [
        PostgresSettings(schema="a"),
        PostgresSettings(schema="b"),
        PostgresSettings(schema="a", prefix="other_"),
    ]
    assert len({channel_name(s) for s in settings}) == 3


def test_a_long_channel_name_is_shortened_to_63_bytes_and_stays_unique() -> None:
    schema = "s" * 63
    first = channel_name(PostgresSettings(schema=schema, prefix="p" * 40))
    second = channel_name(PostgresSettings(schema=schema, prefix="p" * 39 + "q"))
    assert len(first.encode()) == 63
    assert first.startswith(schema[:40])
    assert first != second
    assert first == channel_name(PostgresSettings(schema=schema, prefix="p" * 40))

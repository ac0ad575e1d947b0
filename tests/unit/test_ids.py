"""UUIDv7 task ids: RFC 9562 layout, time-ordered, strictly increasing within a process."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest

from resilient_task import ids
from resilient_task.ids import uuid7


def millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_ids_are_version_7_with_the_rfc_variant() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_ten_thousand_ids_are_strictly_increasing() -> None:
    values = [uuid7() for _ in range(10_000)]
    assert values == sorted(set(values))


def test_ids_also_sort_by_their_text_form() -> None:
    values = [uuid7() for _ in range(1_000)]
    texts = [str(value) for value in values]
    assert texts == sorted(texts)


def test_the_time_prefix_is_the_current_unix_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    # A burst of ids may borrow a few milliseconds ahead of the clock; a second is plenty.
    assert before <= millis(value) <= after + 1_000


def test_ids_stay_increasing_when_the_clock_stands_still(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen_ms = time.time_ns() // 1_000_000
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: frozen_ms * 1_000_000))
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids, "_counter", 0)

    values = [uuid7() for _ in range(10_000)]

    assert values == sorted(set(values))
    assert all(value.version == 7 and value.variant == uuid.RFC_4122 for value in values)
    # The 12-bit counter starts below 1024 and counts to 4095, then the next millisecond is
    # borrowed with the counter at 0: 10k ids need at most two borrowed milliseconds.
    assert millis(values[0]) == frozen_ms
    assert frozen_ms < millis(values[-1]) <= frozen_ms + 2


def test_ids_stay_increasing_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now_ms = time.time_ns() // 1_000_000
    clock = SimpleNamespace(time_ns=lambda: now_ms * 1_000_000)
    monkeypatch.setattr(ids, "time", clock)
    first = uuid7()
    clock.time_ns = lambda: (now_ms - 5_000) * 1_000_000
    assert uuid7() > first


def test_a_forked_child_draws_other_random_bits_than_its_parent() -> None:
    import os

    uuid7()  # the parent's pool of random bytes is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, written back, then exit without pytest's teardown
        os.close(read)
        os.write(write, uuid7().bytes)
        os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    parent = uuid7()
    # Same process state at the fork: without a fresh pool, both would draw the same 62 bits.
    assert child.int & ((1 << 62) - 1) != parent.int & ((1 << 62) - 1)

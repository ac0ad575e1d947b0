"""Pure offset bookkeeping of the Kafka consumer: commit only the contiguous handled prefix."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilient_task.adapters.kafka.offsets import OffsetTracker, PartitionOffsets


def test_nothing_is_committable_before_anything_is_handled() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(10)
    assert offsets.to_commit() is None


def test_a_message_handled_out_of_order_is_not_committed_past_an_unhandled_one() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.fetched(offset)
    offsets.handled(12)
    offsets.handled(11)
    assert offsets.to_commit() is None  # 10 still running: a crash must redeliver it
    offsets.handled(10)
    assert offsets.to_commit() == 13


def test_the_commit_offset_is_the_next_message_to_read_and_reported_once() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(0)
    offsets.handled(0)
    assert offsets.to_commit() == 1
    offsets.committed(1)
    assert offsets.to_commit() is None


def test_unknown_or_repeated_handled_offsets_are_ignored() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(5)
    offsets.handled(99)
    offsets.handled(5)
    offsets.handled(5)
    assert offsets.to_commit() == 6
    assert offsets.unhandled == 0


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_committed_offset_never_passes_an_unhandled_message(
    order: list[int], handled_count: int
) -> None:
    offsets = PartitionOffsets()
    for offset in range(30):
        offsets.fetched(offset)
    done = set(order[:handled_count])
    for offset in order[:handled_count]:
        offsets.handled(offset)
    commit = offsets.to_commit()
    prefix = 0
    while prefix in done:
        prefix += 1
    assert commit == (prefix if prefix else None)
    assert offsets.unhandled == 30 - handled_count


def test_tracker_reports_only_partitions_that_moved_and_forgets_revoked_ones() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.partition("a").fetched(0)
    tracker.partition("b").fetched(0)
    tracker.partition("a").handled(0)
    assert tracker.to_commit() == {"a": 1}
    assert tracker.unhandled(["a", "b"]) == 1
    tracker.committed({"a": 1})
    assert tracker.to_commit() == {}
    tracker.forget(["b"])
    assert tracker.unhandled(["b"]) == 0
    tracker.forget()
    assert tracker.to_commit() == {}

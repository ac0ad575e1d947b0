"""Which offsets may be committed: the contiguous prefix of handled messages, per partition.

Messages of one partition are handled concurrently and finish out of order. Committing the
highest finished offset would skip a message still being handled, which a crash would then
lose (the bug of committing on hand-off). Only offsets up to the first unfinished one are
committed; everything after it is delivered again after a crash or rebalance (duplicates are
harmless: the grab is version-checked).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["OffsetTracker", "PartitionOffsets"]

P = TypeVar("P", bound=Hashable)


class PartitionOffsets:
    """Fetched and handled offsets of one partition during one assignment."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._unhandled: set[int] = set()
        self._handled_early: set[int] = set()
        self._committable: int | None = None
        self._committed: int | None = None

    @property
    def unhandled(self) -> int:
        """How many fetched messages are not handled yet."""
        return len(self._unhandled)

    def fetched(self, offset: int) -> None:
        """Record a message handed out for handling (offsets arrive in increasing order)."""
        self._order.append(offset)
        self._unhandled.add(offset)

    def handled(self, offset: int) -> None:
        """Record that the message at ``offset`` is handled; unknown offsets are ignored."""
        if offset not in self._unhandled:
            return
        self._unhandled.discard(offset)
        self._handled_early.add(offset)
        while self._order and self._order[0] in self._handled_early:
            first = self._order.popleft()
            self._handled_early.discard(first)
            self._committable = first + 1

    def to_commit(self) -> int | None:
        """The offset to commit (next message to read), or None if nothing new is handled."""
        if self._committable is None or self._committable == self._committed:
            return None
        return self._committable

    def committed(self, offset: int) -> None:
        """Record a successful commit of ``offset``."""
        self._committed = offset


class OffsetTracker(Generic[P]):
    """:class:`PartitionOffsets` for every partition currently assigned."""

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}

    def partition(self, partition: P) -> PartitionOffsets:
        """The offsets of ``partition``, created on first use."""
        return self._partitions.setdefault(partition, PartitionOffsets())

    def unhandled(self, partitions: Iterable[P]) -> int:
        """How many fetched messages of ``partitions`` are not handled yet."""
        return sum(self._partitions[p].unhandled for p in partitions if p in self._partitions)

    def to_commit(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Offsets to commit for ``partitions`` (all when None) that moved since the last commit."""
        chosen = self._partitions if partitions is None else partitions
        offsets = {}
        for partition in chosen:
            state = self._partitions.get(partition)
            offset = state.to_commit() if state is not None else None
            if offset is not None:
                offsets[partition] = offset
        return offsets

    def committed(self, offsets: dict[P, int]) -> None:
        """Record a successful commit of ``offsets``."""
        for partition, offset in offsets.items():
            if partition in self._partitions:
                self._partitions[partition].committed(offset)

    def forget(self, partitions: Iterable[P] | None = None) -> None:
        """Drop ``partitions`` (all when None); handlers still running for them are ignored."""
        if partitions is None:
            self._partitions.clear()
        for partition in partitions or ():
            self._partitions.pop(partition, None)

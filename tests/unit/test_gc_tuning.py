"""``tune_gc``: what ``resilient-task worker`` does to the collector once the node has started."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from resilient_task.gc_tuning import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_it_freezes_what_exists_and_raises_the_first_threshold() -> None:
    gc.unfreeze()
    _, second, third = gc.get_threshold()
    tune_gc(12_345)
    assert gc.get_threshold() == (12_345, second, third)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_it_are_still_collected() -> None:
    tune_gc(10_000)

    class Node:
        other: object = None

    freed = []
    for _ in range(3):
        a, b = Node(), Node()
        a.other, b.other = b, a
        freed.append(weakref.ref(a))
        del a, b
    gc.collect()
    assert all(ref() is None for ref in freed)


@pytest.mark.usefixtures("restored_gc")
def test_zero_leaves_the_collector_alone() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from resilient_task.errors import BackendUnavailableError
from resilient_task.service.batcher import Batcher

pytestmark = pytest.mark.anyio


async def test_concurrent_submissions_share_round_trips_and_get_their_own_results() -> None:
    seen: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await anyio.lowlevel.checkpoint()
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush)
    results: dict[int, int] = {}

    async def submit(i: int) -> None:
        results[i] = await batcher.submit(i)

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(submit, i)

    assert results == {i: i * 10 for i in range(100)}
    assert sorted(i for batch in seen for i in batch) == list(range(100))
    assert batcher.batches == len(seen) < 10


async def test_batches_never_exceed_the_maximum_size() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=7)
    results: dict[int, int] = {}

    async def submit(i: int) -> None:
        results[i] = await batcher.submit(i)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(submit, i)
    assert max(sizes) <= 7
    assert sum(sizes) == 50
    assert results == {i: i for i in range(50)}


async def test_a_failed_flush_fails_every_request_of_its_batch_and_later_batches_work() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackendUnavailableError("database down")
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush)
    with pytest.raises(BackendUnavailableError):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2


async def test_a_flush_returning_the_wrong_number_of_results_is_an_error_not_a_hang() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return []

    batcher: Batcher[int, int] = Batcher(flush)
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="0 results for 1 items"):
        await batcher.submit(1)


async def test_a_request_whose_caller_is_cancelled_is_still_written_with_its_batch() -> None:
    written: list[int] = []
    release = anyio.Event()

    async def flush(items: Sequence[int]) -> list[int]:
        await release.wait()
        written.extend(items)
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush)
    results: dict[int, int] = {}

    async def submit(i: int) -> None:
        results[i] = await batcher.submit(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)  # the flusher: its batch is in flight
        await anyio.lowlevel.checkpoint()
        async with anyio.create_task_group() as inner:
            inner.start_soon(submit, 2)  # both wait for the next batch
            inner.start_soon(submit, 3)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            inner.cancel_scope.cancel()  # their callers give up
        release.set()
    assert sorted(written) == [1, 2, 3]
    assert results == {1: 1}

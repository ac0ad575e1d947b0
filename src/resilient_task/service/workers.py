"""Long-lived worker tasks for the executor's jobs, each job in its own context.

Spawning a task per job costs far more than the executor's own work on a no-op processor
(anyio >= 4.14 gives every spawned task a cancel scope, an event and a weak-keyed state
entry). The pool keeps a worker task alive after its job and hands it the next one, so a
steady load spawns nothing. A job that finds no idle worker spawns one in the caller's task
group, exactly as a task per job would: cancelling that group (shutdown) cancels running and
idle workers alike.

What a job sees does not change with the pool: every job runs in a copy of the context of
the code that submitted it, as ``start_soon`` would give it, so context variables a processor
sets never leak into the next job of the same worker. The one visible difference: consecutive
jobs of a worker share its task object (``asyncio.current_task()``, the task's name), so state
keyed by the task rather than held in a context variable is per worker, not per job.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

__all__ = ["WorkerPool", "run_in_context"]

J = TypeVar("J")
T = TypeVar("T")


class WorkerPool(Generic[J]):
    """Runs ``work(job)`` for each submitted job in a reused worker task.

    Args:
        work: the job's coroutine function; it must not raise (an error would cancel the
            task group the workers run in, as with ``start_soon``).
        max_idle: most workers kept waiting for a job; more end after their job.
    """

    def __init__(
        self, work: Callable[[J], Coroutine[Any, Any, None]], *, max_idle: int = 128
    ) -> None:
        self._work = work
        self._max_idle = max_idle
        self._idle: list[_Worker[J]] = []
        self.spawned = 0
        """How many worker tasks were started (for statistics and tests)."""

    def submit(self, task_group: anyio.abc.TaskGroup, job: J) -> None:
        """Run ``job`` now: in an idle worker, or in a new one started in ``task_group``."""
        context = contextvars.copy_context()
        if self._idle:
            worker = self._idle.pop()
            worker.job = (job, context)
            worker.wake.release()
        else:
            self.spawned += 1
            task_group.start_soon(self._run, job, context)

    async def _run(self, job: J, context: contextvars.Context) -> None:
        worker: _Worker[J] | None = None  # made once the worker first waits, then reused
        while True:
            await run_in_context(context, self._work(job))
            del job, context  # an idle worker keeps no finished task alive
            if len(self._idle) >= self._max_idle:
                return
            if worker is None:
                worker = _Worker()
            self._idle.append(worker)
            try:
                await worker.wake.acquire()
            except BaseException:
                if worker.job is None:
                    self._idle.remove(worker)
                    raise
                # Handed a job just as it was cancelled: the job still starts (and meets the
                # cancellation at its first checkpoint), as a task spawned for it would.
                (job, context), worker.job = worker.job, None
                await run_in_context(context, self._work(job))
                raise
            assert worker.job is not None
            (job, context), worker.job = worker.job, None


class _Worker(Generic[J]):
    """An idle worker: ``submit`` hands it ``job`` and releases ``wake``.

    One per worker task, reused for each of its waits: a semaphore (one future per wait)
    rather than a new ``anyio.Event`` each time (an Event, an asyncio Event, a deque and the
    backend look-up).
    """

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: tuple[J, contextvars.Context] | None = None
        self.wake = anyio.Semaphore(0)


def run_in_context(context: contextvars.Context, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
    """Await ``coro`` with every step of it run inside ``context`` (as a task of its own would).

    The caller's task drives the coroutine, so cancel scopes, timeouts and cancellation work
    as with a plain ``await``; only context variable reads and writes go to ``context``.
    """
    return _InContext(context, coro)


class _InContext(Generic[T]):
    __slots__ = ("_context", "_coro")

    def __init__(self, context: contextvars.Context, coro: Coroutine[Any, Any, T]) -> None:
        self._context = context
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, T]:
        run, coro = self._context.run, self._coro
        sent: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    yielded = run(coro.send, sent)
                else:
                    yielded, error = run(coro.throw, error), None
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            try:
                sent = yield yielded
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:  # cancellation and the like: deliver them inside
                sent, error = None, exc

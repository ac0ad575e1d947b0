"""In-process triggering: the embedded default, and a fake with test helpers.

Triggers go into a bounded in-memory queue; a background loop hands them to the callback, at
most ``max_in_flight`` at a time, on reused delivery tasks (a burst is handed out at once, so
the executor's grabs of a burst share one round trip; no task is spawned per trigger, and
consecutive callbacks of a delivery task share its context). When that many callbacks are
running the loop stops pulling (backpressure) and the queue absorbs new triggers up to
``max_pending``; beyond that :meth:`InMemoryTriggerer.trigger` raises
:class:`~resilient_task.errors.TriggerError`, like a broker that is down, and the task waits
for the resumer. Triggers are lost with the process; the store stays the truth.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from resilient_task.domain.task import BaseTask
from resilient_task.errors import TriggerError
from resilient_task.ports.triggerer import TriggerCallback

__all__ = ["InMemoryTriggerer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Run:
    """One start..stop period: ``stop`` cancels ``pull_scope``, then ``scope``; ``done`` ends."""

    scope: anyio.CancelScope
    pull_scope: anyio.CancelScope
    done: anyio.Event


def spawn_detached(function: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``function()`` in the background, outside the caller's task group and cancel scopes.

    ``Triggerer.start`` must return while delivery goes on, and ``stop`` may be called from
    another task or under a timeout. A task group entered in ``start`` and exited in ``stop``
    breaks both (cancel scopes must nest in one task), so the delivery loop runs as a trio
    system task or an asyncio task, owns its task group, and is stopped through cancel scopes.
    ``function`` must not raise: on trio an error in a system task crashes the event loop.
    """
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            trio.lowlevel.spawn_system_task(function, context=contextvars.copy_context())
            return
    task = asyncio.get_running_loop().create_task(function())
    _detached.add(task)  # asyncio keeps only weak references to tasks
    task.add_done_callback(_detached.discard)


_detached: set[asyncio.Task[None]] = set()


class InMemoryTriggerer:
    """Delivers triggers within one process (implements the ``Triggerer`` port).

    Works on asyncio and trio. ``start`` runs delivery in a detached background task (see
    :func:`spawn_detached`), so ``start`` and ``stop`` may be called from any task and under
    timeouts; call ``stop`` before the event loop ends. ``stop`` stops pulling, waits up to
    ``stop_timeout`` seconds for running callbacks, then cancels them; cancelled triggers go back
    to the front of the queue and are delivered again after the next ``start``. A callback that
    raises is logged with the task id and counts as handled (the resumer owns retries).

    Test helpers: :attr:`sent`, :meth:`reset`, :meth:`fail_with`, :attr:`pending`,
    :attr:`in_flight`.

    Args:
        max_in_flight: most callbacks running at once.
        max_pending: most triggers queued and not yet delivered; more raise TriggerError.
        stop_timeout: seconds ``stop`` waits for running callbacks before cancelling them.
        sent_history: how many of the latest sent triggers :attr:`sent` remembers.
    """

    def __init__(
        self,
        *,
        max_in_flight: int = 1000,
        max_pending: int = 100_000,
        stop_timeout: float = 5.0,
        sent_history: int = 100_000,
    ) -> None:
        if max_in_flight < 1 or max_pending < 1 or sent_history < 0 or stop_timeout < 0:
            raise ValueError("max_in_flight and max_pending must be positive, others >= 0")
        self._max_in_flight = max_in_flight
        self._max_pending = max_pending
        self._stop_timeout = stop_timeout
        self._pending: deque[BaseTask] = deque()
        self._sent: deque[BaseTask] = deque(maxlen=sent_history)
        self._failure: BaseException | None = None
        self._wakeup: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._in_flight = 0
        self._run: _Run | None = None
        self._deliverers: list[_Deliverer] = []  # idle delivery tasks, the latest last

    @property
    def sent(self) -> list[BaseTask]:
        """Every trigger accepted by :meth:`trigger` (the latest ``sent_history``), in order."""
        return list(self._sent)

    @property
    def pending(self) -> int:
        """How many triggers wait to be delivered."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """How many callbacks are running now."""
        return self._in_flight

    def reset(self) -> None:
        """Forget sent and queued triggers and clear :meth:`fail_with`."""
        self._sent.clear()
        self._pending.clear()
        self._failure = None

    def fail_with(self, error: BaseException | None) -> None:
        """Make :meth:`trigger` raise TriggerError caused by ``error`` (None: work again)."""
        self._failure = error

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Queue ``tasks`` for delivery; raise TriggerError when failing or the queue is full."""
        await anyio.lowlevel.checkpoint()
        if self._failure is not None:
            if isinstance(self._failure, TriggerError):
                raise self._failure
            raise TriggerError("in-memory triggerer set to fail", transient=True) from (
                self._failure
            )
        if len(self._pending) + len(tasks) > self._max_pending:
            raise TriggerError(
                f"in-memory trigger queue is full ({self._max_pending} pending); "
                f"{len(tasks)} trigger(s) not sent",
                transient=True,
            )
        self._pending.extend(tasks)
        self._sent.extend(tasks)
        if self._wakeup is not None:
            self._wakeup.set()

    async def start(self, on_trigger: TriggerCallback) -> None:
        """Start delivering queued and future triggers to ``on_trigger`` in the background."""
        if self._run is not None:
            raise RuntimeError("InMemoryTriggerer is already started")
        run = _Run(anyio.CancelScope(), anyio.CancelScope(), anyio.Event())
        self._run = run
        self._idle = anyio.Event()
        spawn_detached(lambda: self._deliver_all(run, on_trigger))

    async def stop(self) -> None:
        """Stop delivering; wait up to ``stop_timeout`` for running callbacks. Idempotent."""
        run, self._run = self._run, None
        if run is None:
            return
        run.pull_scope.cancel()
        try:
            with anyio.move_on_after(self._stop_timeout):
                while self._in_flight:
                    assert self._idle is not None
                    await self._idle.wait()
                    self._idle = anyio.Event()
        finally:
            run.scope.cancel()
            with anyio.CancelScope(shield=True):
                await run.done.wait()

    async def _deliver_all(self, run: _Run, on_trigger: TriggerCallback) -> None:
        try:
            with run.scope:
                async with anyio.create_task_group() as task_group:
                    with run.pull_scope:
                        await self._pull(run, on_trigger, task_group)
        except Exception:
            # A detached task has nobody to raise to; on trio it would crash the event loop.
            logger.exception("in-memory trigger delivery stopped unexpectedly")
        finally:
            run.done.set()

    async def _pull(self, run: _Run, on_trigger: TriggerCallback, task_group: TaskGroup) -> None:
        """Hand queued triggers to delivery tasks, at most ``max_in_flight`` at once.

        Every trigger there is room for is handed out before this yields, so the callbacks
        of a burst run side by side (and the executor's grabs share round trips). Delivery
        tasks are reused: a task whose callback returned takes the next queued trigger
        itself, or waits idle for one; a new one is spawned only when none is idle.
        """
        idle = self._deliverers
        while True:
            while not self._pending or self._in_flight >= self._max_in_flight:
                # With every slot busy, triggers stay queued: running deliverers take them.
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
            while self._pending and self._in_flight < self._max_in_flight:
                task = self._pending.popleft()
                self._in_flight += 1
                if idle:
                    deliverer = idle.pop()
                    deliverer.task = task
                    deliverer.wake.release()
                else:
                    task_group.start_soon(self._deliverer, run, task, on_trigger)

    async def _deliverer(self, run: _Run, task: BaseTask, on_trigger: TriggerCallback) -> None:
        """Deliver ``task``, then the next queued triggers, then wait idle for more."""
        waiting: _Deliverer | None = None  # made once this task first waits, then reused
        while True:
            await self._deliver(task, on_trigger)
            if self._pending and not run.pull_scope.cancel_called:
                task = self._pending.popleft()  # keeps its slot: in_flight stays
                continue
            self._slot_freed()
            if waiting is None:
                waiting = _Deliverer()
            self._deliverers.append(waiting)
            try:
                await waiting.wake.acquire()
            except BaseException:
                if waiting.task is None:
                    self._deliverers.remove(waiting)
                else:  # handed a trigger as delivery stopped: it goes back to the queue
                    self._pending.appendleft(waiting.task)
                    self._slot_freed()
                raise
            assert waiting.task is not None
            task, waiting.task = waiting.task, None

    def _slot_freed(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()
        if self._pending and self._wakeup is not None:
            self._wakeup.set()  # the puller may hand the queued triggers out again

    async def _deliver(self, task: BaseTask, on_trigger: TriggerCallback) -> None:
        handled = False
        try:
            await on_trigger(task)
            handled = True
        except Exception:
            # A failed callback counts as handled: the store and the resumer own the retry.
            handled = True
            logger.exception(
                "trigger callback failed for task %s (version %s)", task.id, task.version
            )
        finally:
            if not handled:
                # Cancelled by stop(): deliver it again after the next start().
                self._pending.appendleft(task)
                self._slot_freed()


class _Deliverer:
    """An idle delivery task: ``wake`` is released once ``task`` is handed to it.

    One per delivery task, reused for each of its waits (a semaphore: one future per wait).
    """

    __slots__ = ("task", "wake")

    def __init__(self) -> None:
        self.task: BaseTask | None = None
        self.wake = anyio.Semaphore(0)

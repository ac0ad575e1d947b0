"""Admission: the slots a trigger must hold before its task is grabbed.

Three bounds, taken in this order and released in any: the node's (``max_triggers_in_memory``),
the handler's concurrency policy's (shared by the handlers sharing the policy instance) and,
for transactional handlers whose store pools connections, a connection slot. A trigger that
finds every slot free takes them without waiting or a cancel scope (the fast path); otherwise
it waits in a cancel scope that :meth:`Admission.close` cancels, so shutdown releases every
waiting trigger without grabbing its task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio

from resilient_task.domain.handler import TaskHandler
from resilient_task.errors import ConfigurationError
from resilient_task.ports.clock import Clock
from resilient_task.properties import TaskProperties

__all__ = ["CONNECTION_HEADROOM", "Admission", "Held", "wait_event"]

log = logging.getLogger("resilient_task.executor")

CONNECTION_HEADROOM = 2
"""Pooled connections left to grabs and completions (one batch each at a time) when
transactional tasks, each holding a connection while it runs, are bounded by the pool."""


class Held:
    """The policy and connection slots one admitted trigger holds (None: released or none)."""

    __slots__ = ("connection", "policy")

    def __init__(self, policy: anyio.Semaphore | None, connection: anyio.Semaphore | None):
        self.policy = policy
        self.connection = connection


class Admission:
    """Node, policy and connection slots of one executor."""

    def __init__(
        self,
        *,
        handlers: Iterable[TaskHandler],
        properties: TaskProperties,
        max_connections: object = None,
    ) -> None:
        self.accepting = False
        """Whether triggers are admitted; :meth:`close` ends it."""
        self._node = anyio.Semaphore(properties.max_triggers_in_memory)
        self._policies: dict[int, anyio.Semaphore] = {}
        self._unlimited = anyio.Semaphore(2**31)  # the "policy" of tasks without a handler
        self._waiting: set[anyio.CancelScope] = set()
        self.connection_slots = _connection_slots(handlers, properties, max_connections)
        """Transactional tasks' bound by the store's pool (None: unbounded)."""

    async def admit(self, handler: TaskHandler | None) -> Held | None:
        """Take the slots ``handler``'s task needs; None (holding nothing) when closed meanwhile.

        On None, or when this raises, no slot is held.
        """
        policy = self._unlimited if handler is None else self._slots_for(handler)
        connection = self.connection_slots if handler and handler.transactional else None
        node = self._node
        if _try_acquire(node):  # fast path: no waiting, no cancel scope
            if _try_acquire(policy):
                if connection is None or _try_acquire(connection):
                    return Held(policy, connection)
                policy.release()
            node.release()
        taken: list[anyio.Semaphore | None] = []
        try:
            with anyio.CancelScope() as scope:
                self._waiting.add(scope)
                try:
                    for slots in (node, policy, connection):
                        if slots is not None:
                            # A free slot is taken without a checkpoint (anyio's acquire yields
                            # even then, in a shielded cancel scope of its own).
                            if not _try_acquire(slots):
                                await slots.acquire()
                            taken.append(slots)
                finally:
                    self._waiting.discard(scope)
        except BaseException:
            _release(taken)
            raise
        if scope.cancelled_caught or not self.accepting:
            _release(taken)
            return None
        return Held(policy, connection)

    async def switch(self, held: Held, handler: TaskHandler) -> None:
        """Hold ``handler``'s slots instead (the stored task routes to another handler)."""
        policy = self._slots_for(handler)
        if policy is not held.policy:
            self.release_policy(held)
            await policy.acquire()
            held.policy = policy
        connection = self.connection_slots if handler.transactional else None
        if connection is not held.connection:
            if held.connection is not None:
                held.connection.release()
                held.connection = None
            if connection is not None:
                await connection.acquire()
                held.connection = connection

    def release_policy(self, held: Held) -> None:
        """Free the policy slot early (the processor is done; its outcome is being written)."""
        if held.policy is not None:
            held.policy.release()
            held.policy = None

    def release(self, held: Held | None) -> None:
        """Free everything the trigger still holds, the node slot included."""
        if held is not None:
            _release([held.policy, held.connection])
        self._node.release()

    async def pause(self, event: anyio.Event, seconds: float, clock: Clock) -> bool:
        """Wait for ``event`` or ``seconds`` of ``clock`` time; False when closed meanwhile.

        A trigger over its global limit waits here holding its slots (see the executor).
        """
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                await wait_event(event, seconds, clock)
            finally:
                self._waiting.discard(scope)
        return self.accepting and not scope.cancelled_caught

    def close(self) -> None:
        """Admit no more triggers; those waiting for a slot give up (first shutdown step)."""
        self.accepting = False
        for scope in list(self._waiting):
            scope.cancel()

    def _slots_for(self, handler: TaskHandler) -> anyio.Semaphore:
        policy = handler.concurrency_policy
        slots = self._policies.get(id(policy))
        if slots is None:
            slots = self._policies[id(policy)] = anyio.Semaphore(policy.max_concurrency)
        return slots


def _connection_slots(
    handlers: Iterable[TaskHandler], properties: TaskProperties, capacity: object
) -> anyio.Semaphore | None:
    """Let no more transactional tasks run at once than the store's pool can serve.

    A transactional task holds a pooled connection while its processor runs. Grabbed
    beyond the pool's size, it would wait for a connection after the grab -- past its
    deadline, or until the pool's timeout fails it. Bounded here, the surplus waits for a
    slot *before* the grab instead, like any concurrency limit.

    Raises:
        ConfigurationError: the pool cannot hold a running transactional task and the
            connection that grabs and completions need beside it.
    """
    limits = {
        id(h.concurrency_policy): h.concurrency_policy.max_concurrency
        for h in handlers
        if h.transactional
    }
    wanted = min(sum(limits.values()), properties.max_triggers_in_memory)
    if not isinstance(capacity, int) or not limits or wanted + CONNECTION_HEADROOM <= capacity:
        return None
    if capacity < CONNECTION_HEADROOM:
        raise ConfigurationError(
            f"transactional handlers need a database pool of at least "
            f"{CONNECTION_HEADROOM} connections (one held by each running task, one for "
            f"grabs and completions); this pool holds {capacity}"
        )
    allowed = max(1, capacity - CONNECTION_HEADROOM)
    log.warning(
        "transactional handlers allow %d task(s) at once but the database pool holds %d "
        "connection(s): at most %d transactional task(s) run at once on this node, the "
        "others wait before being grabbed (raise pool_size / max_overflow, or lower the "
        "handlers' concurrency_policy)",
        wanted,
        capacity,
        allowed,
    )
    return anyio.Semaphore(allowed)


def _release(slots: Iterable[anyio.Semaphore | None]) -> None:
    for semaphore in slots:
        if semaphore is not None:
            semaphore.release()


def _try_acquire(semaphore: anyio.Semaphore) -> bool:
    if semaphore.value <= 0:  # full: no WouldBlock raised and caught (the common miss)
        return False
    try:
        semaphore.acquire_nowait()
    except anyio.WouldBlock:
        return False
    return True


async def wait_event(event: anyio.Event, seconds: float, clock: Clock) -> bool:
    """Wait for ``event`` at most ``seconds`` of ``clock`` time; True if it was set."""
    if event.is_set():
        return True
    async with anyio.create_task_group() as tg:

        async def timer() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(timer)
        await event.wait()
        tg.cancel_scope.cancel()
    return event.is_set()

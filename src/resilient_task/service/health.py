"""Readiness of a node: is its store reachable, is it taking work.

:class:`StoreProbe` reads one (absent) task by id every ``interval`` seconds, bounded by
``timeout``: a primary-key look-up, the cheapest read that proves the store answers. Its
verdict is cached, so ``/readyz`` answers at once and a hanging store cannot hang the
endpoint: after a failure or a timeout the node is unready within ``interval + timeout``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

import anyio

from resilient_task.service.stores import AnyTaskDAO

__all__ = ["Readiness", "StoreProbe"]

log = logging.getLogger("resilient_task.health")

_NO_TASK = UUID(int=0)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the node is ready, and why not."""

    ready: bool
    reason: str


class StoreProbe:
    """Checks that the store answers, every ``interval`` seconds (see the module docstring).

    Args:
        dao: the store.
        interval: seconds between probes.
        timeout: seconds one probe may take before the store counts as unreachable.
    """

    def __init__(self, *, dao: AnyTaskDAO, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._dao = dao
        self.interval = interval
        """Seconds between probes."""
        self.timeout = timeout
        """Seconds one probe may take."""
        self.reachable = False
        """The last probe's verdict (False until the first one succeeds)."""
        self.problem = "store not probed yet"
        """Why the store counts as unreachable (empty when reachable)."""
        self._probed = False

    async def probe(self) -> bool:
        """Probe once; updates and returns :attr:`reachable`. Never raises (but cancellation)."""
        problem = ""
        with anyio.move_on_after(self.timeout) as scope:
            try:
                await self._dao.get_task(_NO_TASK)
            except Exception as exc:
                problem = f"store unreachable: {type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            problem = f"store did not answer within {self.timeout} s"
        if problem and (self.reachable or not self._probed):
            log.warning("readiness: %s", problem)
        elif not problem and not self.reachable and self._probed:
            log.warning("readiness: store reachable again")
        self._probed = True
        self.reachable = not problem
        self.problem = problem[:300]
        return self.reachable

    async def run(self) -> None:
        """Probe every ``interval`` seconds until cancelled."""
        while True:
            await self.probe()
            await anyio.sleep(self.interval)

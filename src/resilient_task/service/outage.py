"""Log a backend outage once when it starts and once when it ends, not once per task."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from resilient_task.errors import BackendError
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer

__all__ = ["OutageLog", "repeat_every"]


class OutageLog:
    """Tracks consecutive failures of one dependency (e.g. "database", "broker")."""

    def __init__(
        self, logger: logging.Logger, what: str, observer: Observer = NULL_OBSERVER
    ) -> None:
        self.log = logger
        """The logger this outage writes to."""
        self._what = what
        self._observer = observer
        self.failures = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        """True while the last call failed."""
        return self.failures > 0

    def failed(self, exc: BaseException, doing: str) -> None:
        """Record a failure: the first of an outage is a warning, the rest are debug."""
        self.failures += 1
        transient = isinstance(exc, BackendError) and exc.transient
        if self.failures == 1:
            self.outages += 1
            self._observer.outage(self._what, down=True)
            self.log.warning(
                "%s unavailable while %s (%s: %s); %s",
                self._what,
                doing,
                type(exc).__name__,
                exc,
                "will keep retrying" if transient else "not transient",
            )
        else:
            self.log.debug("%s still unavailable while %s: %s", self._what, doing, exc)

    def succeeded(self) -> None:
        """Record a success; ends an outage with one info line."""
        if self.failures:
            self.log.warning("%s reachable again after %d failed calls", self._what, self.failures)
            self.failures = 0
            self._observer.outage(self._what, down=False)


async def repeat_every(
    step: Callable[[], Awaitable[object]],
    *,
    seconds: float,
    clock: Clock,
    outage: OutageLog,
    doing: str,
) -> None:
    """Run ``step`` every ``seconds`` forever (cancel to stop); it survives any failure.

    Backend failures go to ``outage`` (logged once per outage); anything else is logged with
    its traceback. Either way the next run comes after ``seconds``.
    """
    while True:
        try:
            await step()
            outage.succeeded()
        except BackendError as exc:
            outage.failed(exc, doing)
        except Exception:
            outage.log.exception("%s failed unexpectedly; trying again in %ss", doing, seconds)
        await clock.sleep(seconds)

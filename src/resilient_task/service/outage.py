"""Log a backend outage once when it starts and once when it ends, not once per task.

The one outage log of the package: services use it for the database and the trigger broker,
adapters for their own background connections (the PostgreSQL listener, the Kafka consumer).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from resilient_task.errors import BackendError
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer

__all__ = ["OutageLog", "repeat_every"]


class OutageLog:
    """Tracks consecutive failures of one dependency (e.g. "database", "broker").

    Its user retries in the background: a failure is logged "will keep retrying" unless it is
    a :class:`BackendError` marked not transient.
    """

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

    def failed(self, exc: BaseException, doing: str | None = None) -> None:
        """Record a failure: the first of an outage is a warning, the rest are debug.

        Args:
            exc: the failure.
            doing: what failed, for the log line ("grabbing task ..."); None: nothing to add.
        """
        self.failures += 1
        transient = not isinstance(exc, BackendError) or exc.transient
        while_ = f" while {doing}" if doing else ""
        if self.failures == 1:
            self.outages += 1
            self._observer.outage(self._what, down=True)
            self.log.warning(
                "%s unavailable%s (%s: %s); %s",
                self._what,
                while_,
                type(exc).__name__,
                exc,
                "will keep retrying" if transient else "not transient",
            )
        else:
            self.log.debug("%s still unavailable%s: %s", self._what, while_, exc)

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

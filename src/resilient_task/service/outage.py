"""Log a backend outage once when it starts and once when it ends, not once per task."""

from __future__ import annotations

import logging

from resilient_task.errors import BackendError

__all__ = ["OutageLog"]


class OutageLog:
    """Tracks consecutive failures of one dependency (e.g. "database", "broker")."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
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
            self._log.warning(
                "%s unavailable while %s (%s: %s); %s",
                self._what,
                doing,
                type(exc).__name__,
                exc,
                "will keep retrying" if transient else "not transient",
            )
        else:
            self._log.debug("%s still unavailable while %s: %s", self._what, doing, exc)

    def succeeded(self) -> None:
        """Record a success; ends an outage with one info line."""
        if self.failures:
            self._log.warning("%s reachable again after %d failed calls", self._what, self.failures)
            self.failures = 0

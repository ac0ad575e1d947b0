"""In-memory adapters: the embedded default and the fakes for users' unit tests (supported API)."""

from resilient_task.adapters.memory.clock import FakeClock

__all__ = ["FakeClock"]

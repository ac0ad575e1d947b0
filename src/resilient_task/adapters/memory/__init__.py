"""In-memory adapters: the embedded default and the fakes for users' unit tests (supported API)."""

from resilient_task.adapters.memory.clock import FakeClock
from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO, InMemoryTransaction
from resilient_task.adapters.memory.triggerer import InMemoryTriggerer

__all__ = ["FakeClock", "InMemoryTaskDAO", "InMemoryTransaction", "InMemoryTriggerer"]

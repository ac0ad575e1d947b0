"""The pytest plugin of resilient_task: fixtures for tests of applications using it.

Registered as the ``pytest11`` entry point ``resilient_task``, so installing resilient_task
makes these fixtures available to every test (a fixture of the same name in your own
``conftest.py`` wins). Each test gets fresh fakes::

    async def test_welcome_email_is_sent(fake_clock: FakeClock) -> None:
        async with ResilientTask(handlers=[...], in_memory=True, clock=fake_clock) as app:
            ...
            await settle(app)
"""

from __future__ import annotations

import pytest

from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer

__all__ = ["fake_clock", "in_memory_task_dao", "in_memory_triggerer"]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh :class:`FakeClock` at its default start (2030-01-01 UTC)."""
    return FakeClock()


@pytest.fixture
def in_memory_task_dao() -> InMemoryTaskDAO:
    """A fresh, empty :class:`InMemoryTaskDAO`."""
    return InMemoryTaskDAO()


@pytest.fixture
def in_memory_triggerer() -> InMemoryTriggerer:
    """A fresh, not started :class:`InMemoryTriggerer`."""
    return InMemoryTriggerer()

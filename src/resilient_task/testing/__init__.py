"""Test support for applications and adapters: fakes, settle helpers and contract suites.

Needs pytest (and anyio's pytest plugin, installed with anyio): they are test dependencies of
your project, not runtime dependencies of resilient_task, which never imports this package.

- The in-memory adapters: :class:`InMemoryTaskDAO`, :class:`InMemoryTriggerer`,
  :class:`FakeClock` (also in ``resilient_task.adapters.memory``).
- :func:`settle` and :func:`run_until_idle`: wait until a node on a FakeClock has done its work.
- The contract suites a store, queries, triggerer or clock adapter proves itself with, by
  subclassing one class: :class:`TaskDAOContract`, :class:`TaskQueriesContract`,
  :class:`TriggererContract` / :class:`DurableTriggererContract`, :class:`ClockContract`.
- A pytest plugin (``resilient_task.testing.pytest_plugin``, registered as an entry point)
  with the fixtures ``fake_clock``, ``in_memory_task_dao`` and ``in_memory_triggerer``.

See ``docs/testing.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pytest

from resilient_task.adapters.memory import FakeClock, InMemoryTaskDAO, InMemoryTriggerer

if TYPE_CHECKING:
    from resilient_task.testing.clock_contract import ClockContract
    from resilient_task.testing.idle import SettleError, run_until_idle, settle
    from resilient_task.testing.task_dao_contract import TaskDAOContract
    from resilient_task.testing.task_queries_contract import TaskQueriesContract
    from resilient_task.testing.triggerer_contract import (
        DurableTriggererContract,
        TriggererContract,
    )

# Before the suites are imported: their plain ``assert``s then explain a failure like a test's.
pytest.register_assert_rewrite(
    "resilient_task.testing.clock_contract",
    "resilient_task.testing.task_dao_contract",
    "resilient_task.testing.task_queries_contract",
    "resilient_task.testing.triggerer_contract",
)

_LAZY = {
    "ClockContract": "clock_contract",
    "DurableTriggererContract": "triggerer_contract",
    "SettleError": "idle",
    "TaskDAOContract": "task_dao_contract",
    "TaskQueriesContract": "task_queries_contract",
    "TriggererContract": "triggerer_contract",
    "run_until_idle": "idle",
    "settle": "idle",
}
"""Imported on first use, so loading the pytest plugin imports only the in-memory adapters."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ClockContract",
    "DurableTriggererContract",
    "FakeClock",
    "InMemoryTaskDAO",
    "InMemoryTriggerer",
    "SettleError",
    "TaskDAOContract",
    "TaskQueriesContract",
    "TriggererContract",
    "run_until_idle",
    "settle",
]

"""``AnyTaskDAO``: a task store of any transaction handle type.

The ports name a store with its transaction handle (``TaskDAO[InMemoryTransaction]``,
``TaskDAO[AsyncConnection]``), so mypy rejects one store's handle given to another. Services,
the composition root and the contract suites take whichever store was chosen at run time
(configuration, not code, picks it), and the handles they pass come from that same store's
``transaction()``: the handle type is the store's. They say so with :data:`AnyTaskDAO`, the one
place ``Any`` stands for a handle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from resilient_task.ports.task_dao import TaskDAO

__all__ = ["AnyTaskDAO"]

if TYPE_CHECKING:
    AnyTaskDAO: TypeAlias = TaskDAO[Any]
else:
    # At run time the bare port class: punq reads constructor annotations and finds the
    # store registered under ``TaskDAO`` itself (``TaskDAO[Any]`` would be another key).
    AnyTaskDAO = TaskDAO

"""Finds the handler of a task."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta

from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.task import BaseTask
from resilient_task.errors import ConfigurationError
from resilient_task.properties import TaskProperties

__all__ = ["HandlerRegistry"]

log = logging.getLogger("resilient_task.registry")


class HandlerRegistry:
    """The node's handlers, asked in registration order; the first that accepts a task wins."""

    def __init__(self, handlers: Iterable[TaskHandler] = ()) -> None:
        self._handlers: list[TaskHandler] = []
        for handler in handlers:
            self.register(handler)

    def register(self, handler: TaskHandler) -> None:
        """Add a handler after the existing ones."""
        if not isinstance(handler, TaskHandler):
            raise ConfigurationError(f"expected a TaskHandler, got {type(handler).__name__}")
        self._handlers.append(handler)

    @property
    def handlers(self) -> Sequence[TaskHandler]:
        """The registered handlers, in order."""
        return tuple(self._handlers)

    def find(self, task: BaseTask) -> TaskHandler | None:
        """The handler for ``task``, or None. A predicate that raises counts as 'no'."""
        for handler in self._handlers:
            try:
                if handler.handles(task):
                    return handler
            except Exception:
                log.exception("predicate of handler %s raised for task %s", handler.name, task.id)
        return None

    def timeout(self, handler: TaskHandler, properties: TaskProperties) -> timedelta:
        """The handler's processing timeout, or the node default."""
        return handler.processing_policy.timeout or properties.task_stuck_timeout

    def expected_queue_time(self, task: BaseTask, properties: TaskProperties) -> timedelta:
        """How long ``task`` may stay SUBMITTED before it is re-triggered."""
        handler = self.find(task)
        if handler is not None and handler.processing_policy.expected_queue_time is not None:
            return handler.processing_policy.expected_queue_time
        return properties.expected_queue_time

    def queue_times_by_type(self) -> dict[str, timedelta]:
        """Each task type's ``expected_queue_time`` where its handler sets one.

        For a store that applies them by type (``TaskDAO.resubmit_overdue``): a type's time is
        that of the first registered handler naming it (``types=``). A handler matched by a
        predicate names no type: tasks only it accepts get the node default, and one ahead of a
        handler naming a type does not change that type's time.
        """
        times: dict[str, timedelta] = {}
        named: set[str] = set()
        for handler in self._handlers:
            wait = handler.processing_policy.expected_queue_time
            for type_ in handler.types or ():
                if type_ not in named:
                    named.add(type_)
                    if wait is not None:
                        times[type_] = wait
        return times

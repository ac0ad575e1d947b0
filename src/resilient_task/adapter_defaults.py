"""The adapter a node uses for a port when none is registered, chosen from its settings.

Drivers are imported only here and only when chosen (the ``[postgres]`` and ``[kafka]``
extras): the in-memory node needs neither.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import cast

from resilient_task.adapters.memory.queries import InMemoryTaskQueries
from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.adapters.memory.triggerer import InMemoryTriggerer
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.errors import ConfigurationError
from resilient_task.extras import require_extra
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.ports.task_dao import TaskDAO
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.ports.triggerer import Triggerer
from resilient_task.properties import TaskProperties
from resilient_task.settings import KafkaTriggers, NotifyTriggers, PostgresOptions, Triggers

__all__ = ["DefaultAdapters", "is_postgres"]

_HISTORY = 1000
"""Triggers the default in-process triggerer remembers (tests that inspect them bring theirs)."""


def is_postgres(dao: object) -> bool:
    """Whether ``dao`` is the PostgreSQL store (False, without importing it, if not installed)."""
    try:
        from resilient_task.adapters.postgres.dao import PostgresTaskDAO
    except ImportError:
        return False
    return isinstance(dao, PostgresTaskDAO)


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultAdapters:
    """Opens the default adapter of each port from the node's settings."""

    properties: TaskProperties
    database_url: str | None
    triggers: Triggers | None
    postgres: PostgresOptions

    async def open(
        self, port: type, stack: AsyncExitStack, opened: dict[type, object]
    ) -> object | None:
        """The default adapter for ``port``, opened on ``stack``; None when there is none.

        ``opened`` holds the adapters of the ports opened before (the store before the
        triggerer and the reads, which depend on it).
        """
        if port is Clock:
            return SystemClock()
        if port is Observer:
            return NULL_OBSERVER
        if port is TaskDAO:
            return await self._dao(stack)
        if port is Triggerer:
            observer = cast(Observer, opened.get(Observer, NULL_OBSERVER))  # checked when bound
            return await self._triggerer(stack, opened[TaskDAO], observer)
        if port is TaskQueries:
            return _queries(opened[TaskDAO])
        raise ConfigurationError(f"no default adapter for {port!r}")

    async def _dao(self, stack: AsyncExitStack) -> object:
        if self.database_url is None:
            return InMemoryTaskDAO()
        require_extra("postgres", "database_url= (the PostgreSQL store)")
        from resilient_task.adapters.postgres import open_postgres_dao

        return await stack.enter_async_context(
            open_postgres_dao(self.database_url, **self.postgres.dao_options())
        )

    async def _triggerer(self, stack: AsyncExitStack, dao: object, observer: Observer) -> object:
        max_in_flight = self.properties.max_triggers_in_memory
        if isinstance(self.triggers, NotifyTriggers):
            return await self._notify(stack, dao, self.triggers)
        if isinstance(self.triggers, KafkaTriggers):
            require_extra("kafka", "KafkaTriggers")
            from resilient_task.adapters.kafka.triggerer import KafkaTriggerer

            kafka = self.triggers.properties or self.properties.kafka
            triggerer = KafkaTriggerer(
                properties=kafka, max_in_flight=max_in_flight, observer=observer
            )
            return await stack.enter_async_context(triggerer)
        return InMemoryTriggerer(max_in_flight=max_in_flight, sent_history=_HISTORY)

    async def _notify(self, stack: AsyncExitStack, dao: object, notify: NotifyTriggers) -> object:
        from resilient_task.adapters.postgres import PostgresNotifyTriggerer, PostgresTaskDAO

        if not isinstance(dao, PostgresTaskDAO):
            raise ConfigurationError(
                f"NotifyTriggers needs the PostgreSQL store, not {type(dao).__name__}"
            )
        triggerer = PostgresNotifyTriggerer(
            url=dao.engine.url,
            settings=dao.settings,
            max_in_flight=self.properties.max_triggers_in_memory,
            stop_timeout=notify.stop_timeout,
            send_timeout=notify.send_timeout,
            connect_timeout=(
                self.postgres.connect_timeout
                if notify.connect_timeout is None
                else notify.connect_timeout
            ),
            health_check_interval=notify.health_check_interval,
            application_name=notify.application_name or self.postgres.application_name,
            catch_up_limit=notify.catch_up_limit,
        )
        # The insert itself NOTIFYs the channel of the tasks it creates: no second round trip,
        # and delivered exactly when the task commits.
        dao.notify_on_insert(triggerer.channel)
        return await stack.enter_async_context(triggerer)


def _queries(dao: object) -> object | None:
    """The operators' reads over the stores this library ships; None for another store."""
    if isinstance(dao, InMemoryTaskDAO):
        return InMemoryTaskQueries(dao=dao)
    if is_postgres(dao):
        from resilient_task.adapters.postgres.dao import PostgresTaskDAO
        from resilient_task.adapters.postgres.queries import PostgresTaskQueries

        assert isinstance(dao, PostgresTaskDAO)
        return PostgresTaskQueries(dao=dao)
    return None

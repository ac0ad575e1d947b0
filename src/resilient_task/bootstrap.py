"""The composition root: picks adapters from configuration and wires the services with punq.

The only module that imports punq. Adapters that must be opened and closed (the database
engine, Kafka clients) are opened in an async exit stack and registered as instances.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import punq

from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.adapters.memory.triggerer import InMemoryTriggerer
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.domain.handler import TaskHandler
from resilient_task.errors import ConfigurationError
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NullObserver, Observer
from resilient_task.ports.task_dao import TaskDAO
from resilient_task.ports.triggerer import Triggerer
from resilient_task.properties import ENV_PREFIX, TaskProperties
from resilient_task.service.cleaner import TaskCleaner
from resilient_task.service.executor import TaskExecutor
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.resumer import TaskResumer
from resilient_task.service.task_service import TaskService

__all__ = ["ResilientTask"]

log = logging.getLogger("resilient_task")


class ResilientTask:
    """One node: the task service, and (when ``run_workers``) executor and resumer.

    Use as ``async with ResilientTask(...) as app:``; ``app.service`` adds tasks. Adapters:

    - store: ``dao=`` an instance, else PostgreSQL when ``database_url`` is given, else
      in-memory. A ``run_workers=False`` node (a producer) on the in-memory store is refused
      (:class:`ConfigurationError` naming ``RESILIENT_TASK_DATABASE_URL``) unless
      ``in_memory=True``: no worker could ever see the tasks it adds, and they would vanish
      with the process;
    - triggers: ``triggerer=`` an instance, else Kafka when ``kafka=True`` (settings from
      ``properties.kafka``), else PostgreSQL LISTEN/NOTIFY when ``notify=True`` (needs the
      PostgreSQL store; every listening node receives every trigger), else in-process. A
      ``run_workers=False`` node with the in-process triggerer cannot reach any worker: it
      leaves its tasks to the workers' database polling (``poll_only``);
    - time: ``clock=`` (e.g. ``FakeClock`` in tests), else the system clock.

    Leaving the block stops taking work, lets running tasks finish for
    ``properties.shutdown_grace``, then closes adapters. Anything cut off stays in the store
    and is recovered later -- never lost.
    """

    def __init__(
        self,
        *,
        handlers: Iterable[TaskHandler] = (),
        properties: TaskProperties | None = None,
        database_url: str | None = None,
        kafka: bool = False,
        notify: bool = False,
        dao: TaskDAO | None = None,
        triggerer: Triggerer | None = None,
        clock: Clock | None = None,
        run_workers: bool = True,
        postgres_options: dict[str, Any] | None = None,
        in_memory: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self.properties = properties or TaskProperties()
        self.observer: Observer = observer if observer is not None else NullObserver()
        """Told of what happens to tasks on this node (metrics); set it before the node starts."""
        self.registry = HandlerRegistry(handlers)
        self._database_url = database_url
        self._kafka = kafka
        self._notify = notify
        self._dao = dao
        self._triggerer = triggerer
        self._clock = clock
        self._run_workers = run_workers
        self._postgres_options = postgres_options or {}
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._container: punq.Container | None = None
        if notify and kafka:
            raise ConfigurationError("choose one trigger transport: kafka=True or notify=True")
        if in_memory and (database_url is not None or (dao is not None and not self.in_memory)):
            raise ConfigurationError(
                "in_memory=True asks for the in-memory store: do not also pass database_url= "
                "or a database dao="
            )
        if self.in_memory and not run_workers and not in_memory and dao is None:
            raise ConfigurationError(
                f"this node runs no workers and has no database: the tasks it adds would stay "
                f"in this process's memory, where no worker can run them, and vanish when it "
                f"exits. Set {ENV_PREFIX}DATABASE_URL (or database_url=), or pass "
                f"in_memory=True if that is what you want"
            )
        if notify and database_url is None and not _is_postgres(dao):
            raise ConfigurationError(
                "notify=True sends triggers through PostgreSQL: it needs database_url= "
                "(or a PostgresTaskDAO as dao=)"
            )

    @property
    def in_memory(self) -> bool:
        """Whether this node keeps its tasks in process memory (lost when the process ends)."""
        if self._dao is not None:
            return isinstance(self._dao, InMemoryTaskDAO)
        return self._database_url is None

    @classmethod
    def from_env(
        cls,
        *,
        handlers: Iterable[TaskHandler] = (),
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ResilientTask:
        """A node configured from ``RESILIENT_TASK_*`` environment variables.

        ``RESILIENT_TASK_DATABASE_URL`` selects PostgreSQL;
        ``RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS`` selects Kafka triggering;
        ``RESILIENT_TASK_NOTIFY=1`` selects PostgreSQL LISTEN/NOTIFY triggering; the rest is
        read by :meth:`TaskProperties.from_env`.
        Keyword ``overrides`` win over the environment.
        """
        env = os.environ if environ is None else environ
        settings: dict[str, Any] = {
            "handlers": handlers,
            "properties": TaskProperties.from_env(env),
            "database_url": env.get(ENV_PREFIX + "DATABASE_URL") or None,
            "kafka": bool(env.get(ENV_PREFIX + "KAFKA_BOOTSTRAP_SERVERS")),
            "notify": _flag(env, "NOTIFY"),
        }
        settings.update(overrides)
        return cls(**settings)

    # --- wiring -------------------------------------------------------------------------
    async def _open_dao(self, stack: AsyncExitStack) -> TaskDAO:
        if self._dao is not None:
            return self._dao
        if self._database_url is None:
            return InMemoryTaskDAO()
        from resilient_task.adapters.postgres import open_postgres_dao

        return await stack.enter_async_context(
            open_postgres_dao(self._database_url, **self._postgres_options)
        )

    async def _open_triggerer(self, stack: AsyncExitStack, dao: TaskDAO) -> Triggerer:
        if self._triggerer is not None:
            return self._triggerer
        if self._notify:
            return await self._open_notify_triggerer(stack, dao)
        if not self._kafka:
            # A production-sized history: tests that inspect `sent` pass their own triggerer.
            return InMemoryTriggerer(
                max_in_flight=self.properties.max_triggers_in_memory, sent_history=1000
            )
        from resilient_task.adapters.kafka import KafkaTriggerer

        triggerer = KafkaTriggerer(
            properties=self.properties.kafka,
            max_in_flight=self.properties.max_triggers_in_memory,
        )
        return await stack.enter_async_context(triggerer)

    async def _open_notify_triggerer(self, stack: AsyncExitStack, dao: TaskDAO) -> Triggerer:
        from resilient_task.adapters.postgres import PostgresNotifyTriggerer, PostgresTaskDAO

        if not isinstance(dao, PostgresTaskDAO):
            raise ConfigurationError(
                f"notify=True needs the PostgreSQL store, not {type(dao).__name__}"
            )
        options = self._postgres_options
        triggerer = PostgresNotifyTriggerer(
            url=dao.engine.url,
            settings=dao.settings,
            max_in_flight=self.properties.max_triggers_in_memory,
            connect_timeout=options.get("connect_timeout", 10),
            application_name=options.get("application_name", "resilient-task"),
        )
        return await stack.enter_async_context(triggerer)

    def _wire(self, dao: TaskDAO, triggerer: Triggerer) -> punq.Container:
        container = punq.Container()
        container.register(TaskProperties, instance=self.properties)
        container.register(HandlerRegistry, instance=self.registry)
        container.register(Clock, instance=self._clock or SystemClock())
        container.register(TaskDAO, instance=dao)
        container.register(Triggerer, instance=triggerer)
        container.register(Observer, instance=self.observer)
        container.register(TaskService, scope=punq.Scope.singleton)
        container.register(TaskExecutor, scope=punq.Scope.singleton)
        container.register(TaskResumer)
        container.register(TaskCleaner)
        return container

    # --- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise ConfigurationError("this ResilientTask is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            dao = await self._open_dao(stack)
            triggerer = await self._open_triggerer(stack, dao)
            self._container = self._wire(dao, triggerer)
            self.dao: TaskDAO = dao
            self.triggerer: Triggerer = triggerer
            self.clock: Clock = self._container.resolve(Clock)
            # Without workers here and without a broker (Kafka or NOTIFY), no trigger can reach
            # a worker: leave due tasks to the workers' database polling.
            poll_only = not self._run_workers and isinstance(triggerer, InMemoryTriggerer)
            self.service: TaskService = self._container.resolve(TaskService, poll_only=poll_only)
            self.executor: TaskExecutor = self._container.resolve(TaskExecutor)
            self.resumer: TaskResumer = self._container.resolve(
                TaskResumer, executor=self.executor if self._run_workers else None
            )
            self.cleaner: TaskCleaner = self._container.resolve(TaskCleaner)
            if self._run_workers:
                tg = anyio.create_task_group()
                await tg.__aenter__()
                self._tg = tg
                await tg.start(self.executor.run)
                await self.triggerer.start(self.executor.on_trigger)
                tg.start_soon(self.resumer.run)
                if self.properties.cleaner.enabled:
                    tg.start_soon(self.cleaner.run)
                log.info(
                    "node %s started: %d handler(s), store %s, triggers %s",
                    self.properties.node_id,
                    len(self.registry.handlers),
                    type(dao).__name__,
                    type(triggerer).__name__,
                )
        except BaseException:
            # A task group entered here must be left here, in this task (trio insists), before
            # the adapters it uses close.
            opened, self._tg = self._tg, None
            if opened is not None:
                opened.cancel_scope.cancel()
                await opened.__aexit__(None, None, None)
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if self._tg is not None:
                tg, self._tg = self._tg, None
                self.resumer.stop_claiming()  # due tasks stay WAITING for a node that runs
                self.executor.stop_accepting()  # no new grabs, waiting triggers released
                await self.triggerer.stop()  # unhandled triggers are redelivered later
                await self.executor.stop()
                tg.cancel_scope.cancel()  # the resumer loop
                await tg.__aexit__(None, None, None)
                log.info("node %s stopped", self.properties.node_id)
        finally:
            if stack is not None:
                await stack.__aexit__(exc_type, exc, tb)


def _is_postgres(dao: TaskDAO | None) -> bool:
    if dao is None:
        return False
    from resilient_task.adapters.postgres import PostgresTaskDAO

    return isinstance(dao, PostgresTaskDAO)


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A ``RESILIENT_TASK_<name>`` switch: 1/true/yes/on or 0/false/no/off (unset: off)."""
    raw = env.get(ENV_PREFIX + name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{ENV_PREFIX}{name} must be 0 or 1 (or true/false), got {raw!r}")

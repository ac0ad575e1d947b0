"""The composition root: one adapter per port, from configuration or from you, wired with punq.

The only module that imports punq. Every port (:data:`~resilient_task.bindings.PORTS`: the
store, the triggerer, the clock, the observer, the operators' reads) gets one adapter: yours
if you registered one, else the default chosen from the settings. Adapters that must be
opened and closed (the database engine, Kafka clients) are opened in an async exit stack, then
all are registered in the container under their port; the services are resolved from it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.abc
import punq

from resilient_task.adapter_defaults import DefaultAdapters, is_postgres
from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.adapters.memory.triggerer import InMemoryTriggerer
from resilient_task.bindings import AdapterBindings
from resilient_task.domain.cron import CronJob
from resilient_task.domain.handler import TaskHandler
from resilient_task.environment import node_settings_from_env
from resilient_task.errors import ConfigurationError
from resilient_task.extras import require_extra
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.ports.task_dao import TaskDAO
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.ports.triggerer import Triggerer
from resilient_task.properties import ENV_PREFIX, TaskProperties
from resilient_task.service.cleaner import TaskCleaner
from resilient_task.service.cron import CronJobs
from resilient_task.service.executor import TaskExecutor
from resilient_task.service.operator import TaskOperator
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.resumer import TaskResumer
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.service.task_service import HandOver, TaskService
from resilient_task.settings import (
    KafkaTriggers,
    NotifyTriggers,
    PostgresOptions,
    Triggers,
    chosen_postgres,
    chosen_triggers,
)

__all__ = ["ResilientTask"]

log = logging.getLogger("resilient_task")

_T = TypeVar("_T")


class ResilientTask:
    """One node: the task service, and (when ``run_workers``) executor and resumer.

    Use as ``async with ResilientTask(...) as app:``; ``app.service`` adds tasks and
    ``app.operator`` resumes, cancels or lists them. Adapters, one per port of
    :data:`~resilient_task.bindings.PORTS`:

    - store: PostgreSQL when ``database_url`` is given (tuned by ``postgres=``), else
      in-memory. A ``run_workers=False`` node (a producer) on the in-memory store is refused
      (:class:`ConfigurationError` naming ``RESILIENT_TASK_DATABASE_URL``) unless
      ``in_memory=True``: no worker could ever see the tasks it adds, and they would vanish
      with the process;
    - triggers: ``triggers=KafkaTriggers(...)`` through Kafka (``add_task`` returns once the
      trigger is handed to the producer, unless ``wait_for_ack=True``),
      ``triggers=NotifyTriggers(...)`` through PostgreSQL LISTEN/NOTIFY (every listening node
      receives every trigger), else in-process. A ``run_workers=False`` node with in-process
      triggers cannot reach any worker: it leaves its tasks to the workers' polling;
    - time: the system clock; observer: none.

    ``cron_jobs=[CronJob(...)]``: recurring jobs; each is one task, added when the node starts
    (a no-op when it exists), run once per tick across all nodes (see ``docs/cron.md``).

    Your own adapter replaces the default for its port: ``adapters={Triggerer: mine}`` or
    ``app.register(Triggerer, mine)`` before the node starts (``dao=``, ``triggerer=``,
    ``clock=``, ``observer=`` are the same for those ports). An instance stays yours to open
    and close; with ``register(port, factory=f)`` the node calls ``f()`` when it starts and,
    when the product is an async context manager, enters it then and leaves it on stop.

    Leaving the block stops taking work, lets running tasks finish for
    ``properties.shutdown_grace``, then closes adapters. Anything cut off stays in the store
    and is recovered later -- never lost.
    """

    def __init__(
        self,
        *,
        handlers: Iterable[TaskHandler] = (),
        cron_jobs: Iterable[CronJob] = (),
        properties: TaskProperties | None = None,
        database_url: str | None = None,
        triggers: Triggers | None = None,
        postgres: PostgresOptions | None = None,
        adapters: Mapping[type, object] | None = None,
        dao: AnyTaskDAO | None = None,
        triggerer: Triggerer | None = None,
        clock: Clock | None = None,
        observer: Observer | None = None,
        run_workers: bool = True,
        in_memory: bool = False,
    ) -> None:
        self.properties = properties or TaskProperties()
        self.cron = CronJobs(cron_jobs)
        """The node's recurring jobs: each is one task, added at start if absent."""
        self.registry = HandlerRegistry([*handlers, *self.cron.handlers])
        self._database_url = database_url
        self._triggers = chosen_triggers(triggers)
        self._postgres = chosen_postgres(postgres)
        self._run_workers = run_workers
        self._bindings = AdapterBindings()
        self._opened: dict[type, object] = {}
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._parts: dict[type, object] = {}
        given: dict[type, object] = {
            TaskDAO: dao,
            Triggerer: triggerer,
            Clock: clock,
            Observer: observer,
        }
        for port, adapter in (adapters or {}).items():
            if given.get(port) is not None:
                raise ConfigurationError(f"two adapters for {port.__name__}: pick one")
            given[port] = adapter
        for port, adapter in given.items():
            if adapter is not None:
                self.register(port, adapter)
        self._check(in_memory=in_memory)

    def _check(self, *, in_memory: bool) -> None:
        dao = self._bindings.get(TaskDAO)
        if in_memory and (self._database_url is not None or (dao and not self.in_memory)):
            raise ConfigurationError(
                "in_memory=True asks for the in-memory store: do not also pass database_url= "
                "or a database dao="
            )
        if self.in_memory and not self._run_workers and not in_memory and dao is None:
            raise ConfigurationError(
                f"this node runs no workers and has no database: the tasks it adds would stay "
                f"in this process's memory, where no worker can run them, and vanish when it "
                f"exits. Set {ENV_PREFIX}DATABASE_URL (or database_url=), or pass "
                f"in_memory=True if that is what you want"
            )
        on_postgres = self._database_url is not None or (dao and is_postgres(dao.instance))
        if isinstance(self._triggers, NotifyTriggers) and not on_postgres:
            raise ConfigurationError(
                "NotifyTriggers sends triggers through PostgreSQL: it needs "
                "database_url= (or a PostgresTaskDAO as dao=)"
            )
        if self._database_url is not None and dao is None:
            require_extra("postgres", "database_url= (the PostgreSQL store)")
        if isinstance(self._triggers, KafkaTriggers):
            require_extra("kafka", "KafkaTriggers")

    def register(
        self,
        port: type,
        adapter: object | None = None,
        *,
        factory: Callable[[], object] | None = None,
    ) -> None:
        """Use ``adapter`` (or what ``factory()`` returns when the node starts) for ``port``.

        Replaces the default adapter and any registered before. An ``adapter`` instance is
        yours: the node neither opens nor closes it. A factory's product is the node's: if it
        is an async context manager, the node enters it when it starts and leaves it when it
        stops (the adapter is what ``__aenter__`` returns).

        Raises:
            ConfigurationError: ``port`` is not one of the ports, not exactly one of
                ``adapter`` and ``factory`` is given, ``adapter`` lacks a method of the port,
                the node is running, or the port is the Triggerer while ``triggers=`` chose one.
        """
        if self._stack is not None:
            raise ConfigurationError("register adapters before the node starts")
        if port is Triggerer and self._triggers is not None:
            raise ConfigurationError("a registered Triggerer replaces triggers=: pass only one")
        self._bindings.bind(port, adapter, factory)
        self._opened.pop(port, None)  # the one of an earlier run is no longer this port's

    @property
    def in_memory(self) -> bool:
        """Whether this node keeps its tasks in process memory (lost when the process ends)."""
        dao = self._bindings.get(TaskDAO)
        if dao is not None:
            return isinstance(dao.instance, InMemoryTaskDAO)
        return self._database_url is None

    @property
    def observer(self) -> Observer:
        """Told of what happens to tasks on this node (metrics); set it before the node starts."""
        opened = self._opened.get(Observer)
        if opened is not None:
            return opened  # type: ignore[return-value]
        binding = self._bindings.get(Observer)
        if binding is None:
            return NULL_OBSERVER
        if binding.instance is None:
            raise ConfigurationError("the observer is made by its factory when the node starts")
        return binding.instance  # type: ignore[return-value]

    @observer.setter
    def observer(self, observer: Observer) -> None:
        self.register(Observer, observer)

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
        settings = node_settings_from_env(os.environ if environ is None else environ)
        if "triggerer" in overrides or Triggerer in overrides.get("adapters", {}):
            settings.pop("triggers")  # the caller chose the transport
        settings.update(overrides)
        return cls(handlers=handlers, **settings)

    # --- the running node's parts -------------------------------------------------------
    @property
    def service(self) -> TaskService:
        """Adds tasks; also the operator actions (resume, cancel...) on one task."""
        return self._resolved(TaskService)

    @property
    def operator(self) -> TaskOperator:
        """Lists, counts and acts on tasks in bulk, for operators (the CLI's ``tasks``)."""
        if self._parts and TaskOperator not in self._parts:
            raise ConfigurationError(
                f"no operator: no TaskQueries adapter for the store "
                f"{type(self.dao).__name__}; register one with register(TaskQueries, ...)"
            )
        return self._resolved(TaskOperator)

    @property
    def executor(self) -> TaskExecutor:
        """Runs triggered tasks on this node."""
        return self._resolved(TaskExecutor)

    @property
    def resumer(self) -> TaskResumer:
        """Polls for due and stuck tasks."""
        return self._resolved(TaskResumer)

    @property
    def cleaner(self) -> TaskCleaner:
        """Deletes finished tasks past their retention."""
        return self._resolved(TaskCleaner)

    @property
    def dao(self) -> AnyTaskDAO:
        """The task store in use."""
        return self._adapter(TaskDAO)  # type: ignore[no-any-return]

    @property
    def triggerer(self) -> Triggerer:
        """The triggerer in use."""
        return self._adapter(Triggerer)  # type: ignore[no-any-return]

    @property
    def clock(self) -> Clock:
        """The clock in use."""
        return self._adapter(Clock)  # type: ignore[no-any-return]

    def _adapter(self, port: type) -> Any:
        if not self._parts or port not in self._opened:
            raise _not_started(port.__name__)
        return self._opened[port]

    def _resolved(self, cls: type[_T]) -> _T:
        if not self._parts:
            raise _not_started(cls.__name__)
        part = self._parts[cls]
        assert isinstance(part, cls)
        return part

    # --- wiring -------------------------------------------------------------------------
    async def _open_adapters(self, stack: AsyncExitStack) -> None:
        defaults = DefaultAdapters(
            properties=self.properties,
            database_url=self._database_url,
            triggers=self._triggers,
            postgres=self._postgres,
        )
        self._opened = {}  # nothing of an earlier run, should opening fail
        self._opened = await self._bindings.open(stack, defaults)

    def _wire(self) -> dict[type, object]:
        """Register every adapter by its port, then resolve the services from the container."""
        container = punq.Container()
        for port, adapter in self._opened.items():
            container.register(port, instance=adapter)
        container.register(TaskProperties, instance=self.properties)
        container.register(HandlerRegistry, instance=self.registry)
        for service in (TaskService, TaskExecutor, TaskResumer, TaskCleaner, TaskOperator):
            container.register(service, scope=punq.Scope.singleton)
        # Without workers here and without a broker (Kafka or NOTIFY), no trigger can reach
        # a worker: leave due tasks to the workers' database polling.
        poll_only = not self._run_workers and isinstance(self._opened[Triggerer], InMemoryTriggerer)
        parts: dict[type, object] = {
            TaskService: container.resolve(
                TaskService, poll_only=poll_only, hand_over=self._hand_over()
            )
        }
        parts[TaskExecutor] = executor = container.resolve(TaskExecutor)
        parts[TaskResumer] = container.resolve(
            TaskResumer, executor=executor if self._run_workers else None
        )
        parts[TaskCleaner] = container.resolve(TaskCleaner)
        if TaskQueries in self._opened:
            parts[TaskOperator] = container.resolve(TaskOperator)
        return parts

    def _hand_over(self) -> HandOver | None:
        """``KafkaTriggers(wait_for_ack=False)``: add_task hands triggers over, acks unawaited."""
        if not isinstance(self._triggers, KafkaTriggers) or self._triggers.wait_for_ack:
            return None
        from resilient_task.adapters.kafka.triggerer import KafkaTriggerer

        triggerer = self._opened[Triggerer]
        return triggerer.hand_over if isinstance(triggerer, KafkaTriggerer) else None

    # --- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise ConfigurationError("this ResilientTask is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open_adapters(stack)
            self._parts = self._wire()
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
                    type(self.dao).__name__,
                    type(self.triggerer).__name__,
                )
            if self.cron.jobs:
                await self.cron.ensure(self.service, clock=self.clock)
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


def _not_started(part: str) -> ConfigurationError:
    return ConfigurationError(
        f"the node's {part} exists once it started: use it inside `async with app:` (the "
        f"store and the triggerer are opened when the block is entered)"
    )

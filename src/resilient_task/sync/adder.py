"""TaskAdder: the task service's add, run synchronously inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Literal, cast, get_args

from resilient_task.adapters.postgres.schema import PostgresSettings
from resilient_task.adapters.system.clock import SystemClock
from resilient_task.domain.handler import TaskHandler
from resilient_task.domain.requests import AddTaskRequest
from resilient_task.domain.results import AddTaskResult
from resilient_task.errors import ConfigurationError
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NULL_OBSERVER, Observer
from resilient_task.ports.triggerer import Triggerer
from resilient_task.properties import TaskProperties
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO
from resilient_task.service.task_service import TaskService
from resilient_task.sync.connection import JoinedConnection
from resilient_task.sync.drive import run_to_completion
from resilient_task.sync.store import JoinedTaskDAO, NoTriggers

__all__ = ["TaskAdder", "Triggers", "add_task", "add_tasks"]

Triggers = Literal["notify", "poll"]
"""How workers learn of a task added synchronously.

- ``"notify"``: workers run with ``triggers=NotifyTriggers()`` (PostgreSQL LISTEN/NOTIFY). The
  insert itself runs ``pg_notify``, in the caller's transaction: delivered by PostgreSQL at
  commit (milliseconds), never after a rollback.
- ``"poll"``: workers triggered by Kafka (or anything else). Due tasks are stored already past
  their pick-up deadline; the next poll of any worker's resumer triggers them (within
  ``resumer.polling_interval``, 2 s by default).
"""


@lru_cache(maxsize=32)
def _store(settings: PostgresSettings, notify: bool) -> JoinedTaskDAO:
    """One store per deployment settings: building its statements takes milliseconds."""
    return JoinedTaskDAO(settings, notify=notify)


class TaskAdder:
    """Adds tasks from synchronous code, atomically with the caller's own writes.

    Build one per application (it is thread-safe) and call :meth:`add_task` with the open
    transaction of the current request. What the asynchronous
    :meth:`TaskService.add_task <resilient_task.TaskService.add_task>` does, it does: the
    same checks and errors (:class:`~resilient_task.ValidationError` ...), the same
    deduplication by task id and ``(type, unique_key)``, the same
    :class:`~resilient_task.AddTaskResult` -- it runs that very method, over the caller's
    connection.

    Args:
        triggers: how workers learn of new tasks, ``"notify"`` or ``"poll"`` (see
            :data:`Triggers`).
        settings: the deployment's schema and table prefix (and payload compression), as the
            workers use them.
        properties: ``expected_queue_time`` (the pick-up deadline of a due task when its
            handler says nothing) and ``max_payload_bytes``, as for the workers.
        handlers: the workers' handlers, when their ``expected_queue_time`` should apply here
            too (only their processing policies are read; nothing runs here).
        observer: told of every task added (metrics).
        clock: time source (tests).
    """

    def __init__(
        self,
        *,
        triggers: Triggers,
        settings: PostgresSettings | None = None,
        properties: TaskProperties | None = None,
        handlers: Iterable[TaskHandler] = (),
        observer: Observer = NULL_OBSERVER,
        clock: Clock | None = None,
    ) -> None:
        if triggers not in get_args(Triggers):
            raise ConfigurationError(f"triggers must be 'notify' or 'poll', got {triggers!r}")
        settings = settings or PostgresSettings()
        store = _store(settings, triggers == "notify")
        triggerer = NoTriggers()  # the inserts NOTIFY, or the workers poll
        # The service's add path uses the store's insert_tasks, apply and after_commit only.
        self._service = TaskService(
            dao=cast(AnyTaskDAO, store),
            triggerer=cast(Triggerer, triggerer),
            registry=HandlerRegistry(handlers),
            clock=clock or SystemClock(),
            properties=properties or TaskProperties(),
            poll_only=triggers == "poll",
            observer=observer,
        )
        self.triggers: Triggers = triggers

    def add_task(self, connection: object, request: AddTaskRequest) -> AddTaskResult:
        """Store a task in ``connection``'s transaction; due now -> SUBMITTED, later -> WAITING.

        Args:
            connection: the caller's open transaction: a ``psycopg.Connection`` (Django's
                ``connection.connection``), or a SQLAlchemy ``Connection`` or ``Session`` on
                ``postgresql+psycopg``. Nothing is committed here: the task exists once the
                caller commits, and never if it rolls back.
            request: what to run.

        Returns:
            The task id and OK, or the existing task's id and ALREADY_EXISTS.

        Raises:
            ValidationError: as :meth:`TaskService.add_task`, or ``connection`` is not a
                synchronous connection of these kinds.
            BackendError: the database refused (e.g. the caller's transaction already failed).
        """
        joined = JoinedConnection(connection)
        with joined.current():
            result = run_to_completion(self._service.add_task(request, transaction=joined))
            _run_triggers(joined)
        return result

    def add_tasks(
        self, connection: object, requests: Iterable[AddTaskRequest]
    ) -> list[AddTaskResult]:
        """Store many tasks in one statement; results in the same order (see :meth:`add_task`)."""
        joined = JoinedConnection(connection)
        with joined.current():
            results = run_to_completion(self._service.add_tasks(requests, transaction=joined))
            _run_triggers(joined)
        return results


def _run_triggers(joined: JoinedConnection) -> None:
    """Run what the service registered for after the commit, inside the transaction.

    Nothing, as it is: the inserts NOTIFY themselves (their outcomes say ``triggered``) or the
    workers poll. Were the service to register its trigger, it would run now and fail
    (:class:`~.store.NoTriggers`), and its fallback would hurry the tasks to the workers' poll.
    """
    callbacks, joined.after_commit = joined.after_commit, []
    for callback in callbacks:
        run_to_completion(callback())


def add_task(
    connection: object,
    request: AddTaskRequest,
    *,
    triggers: Triggers,
    settings: PostgresSettings | None = None,
    properties: TaskProperties | None = None,
) -> AddTaskResult:
    """:meth:`TaskAdder.add_task` with an adder of these arguments."""
    adder = TaskAdder(triggers=triggers, settings=settings, properties=properties)
    return adder.add_task(connection, request)


def add_tasks(
    connection: object,
    requests: Iterable[AddTaskRequest],
    *,
    triggers: Triggers,
    settings: PostgresSettings | None = None,
    properties: TaskProperties | None = None,
) -> list[AddTaskResult]:
    """:meth:`TaskAdder.add_tasks` with an adder of these arguments."""
    adder = TaskAdder(triggers=triggers, settings=settings, properties=properties)
    return adder.add_tasks(connection, requests)

"""Typed choices for :class:`~resilient_task.ResilientTask`: trigger transport and PostgreSQL.

``ResilientTask(triggers=KafkaTriggers(...))`` or ``NotifyTriggers(...)`` picks how triggers
travel (neither: in-process, with database polling as the fallback), and
``ResilientTask(postgres=PostgresOptions(...))`` tunes the PostgreSQL store opened for
``database_url``. Plain values only: building them imports no driver, so a node can be
configured where the ``[postgres]`` or ``[kafka]`` extra is not installed (using it then raises
:class:`~resilient_task.errors.ConfigurationError` naming the extra).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.errors import ConfigurationError

__all__ = ["KafkaTriggers", "NotifyTriggers", "PostgresOptions", "Triggers"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaTriggers:
    """Triggers through a Kafka topic (needs ``pip install 'resilient-task[kafka]'``).

    Args:
        properties: brokers, topic namespace, consumer group...; ``None`` takes the node's
            ``TaskProperties.kafka`` (what ``ResilientTask.from_env`` reads from
            ``RESILIENT_TASK_KAFKA_*``).
        wait_for_ack: whether ``add_task`` (and the operator's resume) waits for the broker to
            acknowledge the task's trigger. ``False`` (the default): it returns once the task
            is committed and its trigger handed to the Kafka producer -- the task is durable
            once committed and a trigger is only a hint. Under load the triggers of adds
            within 5 ms of the node's previous produce request wait for the end of those 5 ms
            and go out together, in one request (about half the CPU per add; an add after a
            quiet spell is sent at once). A trigger the broker then refuses or does not
            acknowledge within the send timeout (3 s) is logged with its task id and the
            task's pick-up deadline is pulled to now, so database polling takes it at once, as
            after a failed send; so are triggers still unacknowledged when the node stops.
            ``True``: wait for the acknowledgement (a failed send is then seen by the caller's
            ``add_task`` taking up to the send timeout). Either way a task is never lost, and
            the resumer's own triggers always wait for the acknowledgement (it runs the tasks
            itself when the broker fails).
    """

    properties: KafkaProperties | None = None
    wait_for_ack: bool = False

    def __post_init__(self) -> None:
        if self.properties is not None and not isinstance(self.properties, KafkaProperties):
            raise ConfigurationError(
                f"KafkaTriggers.properties must be a KafkaProperties, got {self.properties!r}"
            )
        if not isinstance(self.wait_for_ack, bool):
            raise ConfigurationError(
                f"KafkaTriggers.wait_for_ack must be a bool, got {self.wait_for_ack!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyTriggers:
    """Triggers through PostgreSQL ``LISTEN``/``NOTIFY``: no broker, needs the PostgreSQL store.

    Every listening node receives every trigger. Durations are in seconds, as the triggerer
    (:class:`~resilient_task.adapters.postgres.PostgresNotifyTriggerer`) takes them.

    Args:
        send_timeout: seconds one ``trigger`` call may take before it raises
            :class:`~resilient_task.errors.TriggerError` (the task stays for polling).
        stop_timeout: seconds stopping waits for running callbacks before cancelling them.
        health_check_interval: seconds without notifications after which the listener checks
            its connection.
        catch_up_limit: most SUBMITTED tasks delivered when ``LISTEN`` takes effect; 0 turns
            the catch-up off.
        connect_timeout: seconds to connect; ``None``: :attr:`PostgresOptions.connect_timeout`.
        application_name: the connections show as ``<name>-notify`` and ``<name>-listen``;
            ``None``: :attr:`PostgresOptions.application_name`.
    """

    send_timeout: float = 3.0
    stop_timeout: float = 5.0
    health_check_interval: float = 30.0
    catch_up_limit: int = 1000
    connect_timeout: float | None = None
    application_name: str | None = None


Triggers = KafkaTriggers | NotifyTriggers
"""The trigger transports a node can be given; ``None`` means in-process."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresOptions:
    """The PostgreSQL store a node opens for its ``database_url`` (the ``[postgres]`` extra).

    The first group are the store's settings
    (:class:`~resilient_task.adapters.postgres.PostgresSettings`), ``migrate`` creates or
    upgrades the tables on start, the rest size the connection pool
    (:func:`~resilient_task.adapters.postgres.create_engine`).

    Args:
        schema: PostgreSQL schema of the tables.
        prefix: prefix of every table and index name.
        compression_threshold: payloads longer than this many bytes are zlib-compressed;
            ``None`` disables compression.
        compression_level: zlib level 1 (fastest) to 9 (smallest).
        prepared_statements: prepare the hot statements once per connection (turn off behind
            a pooler that cannot keep them).
        lock_timeout: the longest a statement waits for a row lock (``None``: for ever).
        idle_in_transaction_timeout: a session idle in a transaction this long is ended by
            the server (``None``: never).
        migrate: run the schema migrations when the node starts.
        pool_size: connections kept open.
        max_overflow: extra connections opened under load.
        pool_timeout: seconds to wait for a free connection.
        pool_recycle: seconds after which a connection is replaced.
        connect_timeout: seconds to wait for the server when connecting.
        application_name: shown in ``pg_stat_activity``.
        ping_after_idle: seconds a pooled connection may idle before it is pinged
            (``None``: never).
        hot_connections: connections of the pool kept checked out, in autocommit, for
            one-statement operations (adds outside a transaction, grabs, completions);
            ``None``: 2, at most ``pool_size + max_overflow - 1``. Each one above 2 lowers the
            number of transactional tasks a node runs at once by one.
        engine_options: more SQLAlchemy ``create_async_engine`` options.
    """

    schema: str = "public"
    prefix: str = "resilient_task_"
    compression_threshold: int | None = 1024
    compression_level: int = 6
    prepared_statements: bool = True
    lock_timeout: timedelta | None = timedelta(seconds=10)
    idle_in_transaction_timeout: timedelta | None = timedelta(minutes=10)
    migrate: bool = False
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 10.0
    pool_recycle: float = 1800.0
    connect_timeout: int = 10
    application_name: str = "resilient-task"
    ping_after_idle: float | None = 10.0
    hot_connections: int | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hot = self.hot_connections
        if hot is not None and (isinstance(hot, bool) or not isinstance(hot, int) or hot < 0):
            raise ConfigurationError(
                f"PostgresOptions.hot_connections must be None or an int >= 0, got {hot!r}"
            )

    def dao_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~resilient_task.adapters.postgres.open_postgres_dao`."""
        options = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "engine_options"
        }
        return {**self.engine_options, **options}


def chosen_triggers(triggers: Triggers | None) -> Triggers | None:
    """``ResilientTask(triggers=)``, checked: a :data:`Triggers` or ``None``."""
    if triggers is not None and not isinstance(triggers, KafkaTriggers | NotifyTriggers):
        raise ConfigurationError(
            f"triggers= takes KafkaTriggers(...) or NotifyTriggers(...), got {triggers!r}"
        )
    return triggers


def chosen_postgres(postgres: PostgresOptions | None) -> PostgresOptions:
    """``ResilientTask(postgres=)``, checked; ``None``: the defaults."""
    if postgres is not None and not isinstance(postgres, PostgresOptions):
        raise ConfigurationError(f"postgres= takes PostgresOptions(...), got {postgres!r}")
    return postgres or PostgresOptions()

"""``RESILIENT_TASK_*`` environment variables: one table of them, and strict parsing.

Every variable is listed in :data:`VARIABLES` (the README's configuration table shows the same
list, and a test keeps the two together). A value that cannot be used raises
:class:`~resilient_task.errors.ConfigurationError` naming the variable and what it accepts --
never a bare ``ValueError`` or a traceback from deep inside a constructor.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.errors import ConfigurationError
from resilient_task.properties import (
    ENV_PREFIX,
    CleanerProperties,
    TaskProperties,
    TaskResumerProperties,
    default_node_id,
)
from resilient_task.settings import KafkaTriggers, NotifyTriggers, Triggers

__all__ = [
    "VARIABLES",
    "gc_threshold_from_env",
    "kafka_extra_from_env",
    "log_level_from_env",
    "node_settings_from_env",
    "task_properties_from_env",
]

VARIABLES: Mapping[str, str] = {
    "DATABASE_URL": "PostgreSQL store, `postgresql+psycopg://user:pw@host/db` (unset: in memory)",
    "KAFKA_BOOTSTRAP_SERVERS": "Kafka triggering through these brokers (`host:port,...`)",
    "NOTIFY": "`1`: triggers through PostgreSQL LISTEN/NOTIFY (needs the database)",
    "NODE_ID": "this node's name (`processing_node`, logs)",
    "STUCK_TIMEOUT_S": "task_stuck_timeout",
    "PROCESSING_GRACE_S": "processing_grace",
    "EXPECTED_QUEUE_TIME_S": "expected_queue_time",
    "SHUTDOWN_GRACE_S": "shutdown_grace",
    "MAX_TRIGGERS_IN_MEMORY": "max_triggers_in_memory",
    "MAX_PAYLOAD_BYTES": "max_payload_bytes (largest task `data` accepted; default 1 MiB)",
    "RESUMER_BATCH_SIZE": "resumer.batch_size",
    "RESUMER_POLLING_INTERVAL_S": "resumer.polling_interval",
    "RESUMER_CONCURRENCY": "resumer.concurrency",
    "CLEANER_ENABLED": "cleaner.enabled (`0`/`1`)",
    "CLEANER_RETENTION_S": "cleaner.retention",
    "CLEANER_INTERVAL_S": "cleaner.interval",
    "CLEANER_BATCH_SIZE": "cleaner.batch_size",
    "KAFKA_TOPICS_NAMESPACE": "kafka.topics_namespace",
    "KAFKA_CONSUMER_GROUP_ID": "kafka.consumer_group_id",
    "KAFKA_PARTITIONS": "kafka.partitions",
    "KAFKA_REPLICATION_FACTOR": "kafka.replication_factor",
    "KAFKA_CLIENT_ID": "kafka.client_id",
    "KAFKA_EXTRA": "kafka.extra as a JSON object (TLS, SASL)",
    "LOG_LEVEL": "`resilient-task worker` log level: DEBUG, INFO (default), WARNING, ERROR",
    "GC_THRESHOLD": "`resilient-task worker` garbage collector's first threshold "
    "(default 10000; `0`: Python's own settings)",
}
"""Every variable, without the ``RESILIENT_TASK_`` prefix, and what it sets."""

_MAX_INT = 2**31 - 1
_MAX_SECONDS = 10 * 365 * 24 * 3600  # ten years: beyond that a duration is a typo
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TLS_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname")


def task_properties_from_env(environ: Mapping[str, str]) -> TaskProperties:
    """The node settings from ``environ``; unset variables keep their defaults.

    Raises:
        ConfigurationError: a variable is set to a value it does not accept (the message names
            the variable).
    """
    env = _Env(environ)
    defaults = TaskProperties(node_id="defaults")
    resumer, cleaner, kafka = defaults.resumer, defaults.cleaner, defaults.kafka
    return TaskProperties(
        task_stuck_timeout=env.seconds("STUCK_TIMEOUT_S", defaults.task_stuck_timeout),
        processing_grace=env.seconds(
            "PROCESSING_GRACE_S", defaults.processing_grace, allow_zero=True
        ),
        expected_queue_time=env.seconds("EXPECTED_QUEUE_TIME_S", defaults.expected_queue_time),
        shutdown_grace=env.seconds("SHUTDOWN_GRACE_S", defaults.shutdown_grace, allow_zero=True),
        max_triggers_in_memory=env.integer(
            "MAX_TRIGGERS_IN_MEMORY", defaults.max_triggers_in_memory
        ),
        max_payload_bytes=env.integer("MAX_PAYLOAD_BYTES", defaults.max_payload_bytes),
        node_id=env.text("NODE_ID", "") or default_node_id(),
        resumer=TaskResumerProperties(
            batch_size=env.integer("RESUMER_BATCH_SIZE", resumer.batch_size),
            polling_interval=env.seconds("RESUMER_POLLING_INTERVAL_S", resumer.polling_interval),
            concurrency=env.integer("RESUMER_CONCURRENCY", resumer.concurrency),
        ),
        cleaner=CleanerProperties(
            enabled=env.flag("CLEANER_ENABLED", cleaner.enabled),
            retention=env.seconds("CLEANER_RETENTION_S", cleaner.retention),
            interval=env.seconds("CLEANER_INTERVAL_S", cleaner.interval),
            batch_size=env.integer("CLEANER_BATCH_SIZE", cleaner.batch_size),
        ),
        kafka=KafkaProperties(
            bootstrap_servers=env.text(
                "KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers, required=True
            ),
            topics_namespace=env.text("KAFKA_TOPICS_NAMESPACE", kafka.topics_namespace),
            consumer_group_id=env.text(
                "KAFKA_CONSUMER_GROUP_ID", kafka.consumer_group_id, required=True
            ),
            partitions=env.integer("KAFKA_PARTITIONS", kafka.partitions),
            replication_factor=env.integer("KAFKA_REPLICATION_FACTOR", kafka.replication_factor),
            client_id=env.text("KAFKA_CLIENT_ID", kafka.client_id, required=True),
            extra=kafka_extra_from_env(environ),
        ),
    )


def node_settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """What :meth:`ResilientTask.from_env <resilient_task.ResilientTask.from_env>` reads.

    ``properties`` (:func:`task_properties_from_env`), ``database_url`` (``DATABASE_URL``)
    and ``triggers``: :class:`KafkaTriggers` when ``KAFKA_BOOTSTRAP_SERVERS`` is set,
    :class:`NotifyTriggers` when ``NOTIFY`` is on, else None.

    Raises:
        ConfigurationError: a bad value, or both transports chosen.
    """
    env = _Env(environ)
    kafka = bool(env.text("KAFKA_BOOTSTRAP_SERVERS", ""))
    notify = env.flag("NOTIFY", False)
    if kafka and notify:
        raise ConfigurationError(
            f"choose one trigger transport: {ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS or "
            f"{ENV_PREFIX}NOTIFY=1, not both"
        )
    triggers: Triggers | None = KafkaTriggers() if kafka else NotifyTriggers() if notify else None
    return {
        "properties": task_properties_from_env(environ),
        "database_url": env.text("DATABASE_URL", "") or None,
        "triggers": triggers,
    }


def kafka_extra_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``RESILIENT_TASK_KAFKA_EXTRA``: a JSON object of aiokafka client options (unset: ``{}``).

    Values are JSON scalars, e.g. ``{"security_protocol": "SASL_SSL", "sasl_mechanism":
    "SCRAM-SHA-512", "sasl_plain_username": "app", "sasl_plain_password": "..."}``. TLS files
    cannot travel as an ``ssl_context`` in JSON: ``ssl_cafile``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_password`` and ``ssl_check_hostname`` (default true) build one.
    Keys no aiokafka client accepts are refused when the Kafka triggerer starts.

    Raises:
        ConfigurationError: not a JSON object of scalars, or the TLS files cannot be loaded.
    """
    name = ENV_PREFIX + "KAFKA_EXTRA"
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        raise ConfigurationError(
            f"{name} must be a JSON object such as "
            '{"security_protocol": "SSL", "ssl_cafile": "/etc/kafka/ca.pem"}, '
            f"got {_shown(raw)}"
        ) from None
    if not isinstance(decoded, dict):
        raise ConfigurationError(f"{name} must be a JSON object, got {_shown(raw)}")
    for key, value in decoded.items():
        if isinstance(value, dict | list):
            raise ConfigurationError(
                f"{name}: option {_shown(key)} must be a string, number, boolean or null"
            )
    if "ssl_context" in decoded:
        raise ConfigurationError(
            f"{name}: ssl_context cannot be given as JSON; give ssl_cafile, ssl_certfile, "
            "ssl_keyfile (and ssl_password) instead"
        )
    tls = {key: decoded.pop(key) for key in _TLS_FILES if key in decoded}
    if tls:
        decoded["ssl_context"] = _ssl_context(name, tls)
    return decoded


def log_level_from_env(environ: Mapping[str, str], default: int = logging.INFO) -> int:
    """``RESILIENT_TASK_LOG_LEVEL`` as a :mod:`logging` level (a name, any case).

    Raises:
        ConfigurationError: not one of DEBUG, INFO, WARNING, ERROR, CRITICAL.
    """
    name = ENV_PREFIX + "LOG_LEVEL"
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.upper() not in _LOG_LEVELS:
        raise ConfigurationError(
            f"{name} must be one of {', '.join(_LOG_LEVELS)}, got {_shown(raw)}"
        )
    level: int = logging.getLevelNamesMapping()[raw.upper()]
    return level


GC_THRESHOLD = 10_000
"""``resilient-task worker``'s default first collection threshold (Python's own is 700)."""


def gc_threshold_from_env(environ: Mapping[str, str]) -> int:
    """``RESILIENT_TASK_GC_THRESHOLD``: the worker's first GC threshold; 0 keeps Python's.

    Raises:
        ConfigurationError: not an integer from 0 to 2**31 - 1.
    """
    name = ENV_PREFIX + "GC_THRESHOLD"
    raw = environ.get(name, "").strip()
    if not raw:
        return GC_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_INT:
        raise ConfigurationError(
            f"{name} must be an integer from 0 to {_MAX_INT} (0: Python's own settings), "
            f"got {_shown(raw)}"
        )
    return value


def _ssl_context(name: str, tls: dict[str, Any]) -> ssl.SSLContext:
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
        if tls.get(key) is not None and not isinstance(tls[key], str):
            raise ConfigurationError(f"{name}: {key} must be a string")
    check_hostname = tls.get("ssl_check_hostname", True)
    if not isinstance(check_hostname, bool):
        raise ConfigurationError(f"{name}: ssl_check_hostname must be true or false")
    if tls.get("ssl_keyfile") and not tls.get("ssl_certfile"):
        raise ConfigurationError(f"{name}: ssl_keyfile needs ssl_certfile")
    try:
        context = ssl.create_default_context(cafile=tls.get("ssl_cafile"))
        if tls.get("ssl_certfile"):
            context.load_cert_chain(
                tls["ssl_certfile"], tls.get("ssl_keyfile"), tls.get("ssl_password")
            )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigurationError(f"{name}: cannot load the TLS files: {exc}") from exc
    context.check_hostname = check_hostname
    return context


def _shown(value: str) -> str:
    """A user's value quoted for an error message, cut to a readable length."""
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."


class _Env:
    """Typed reads of ``RESILIENT_TASK_<name>``; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        raw = self._environ.get(ENV_PREFIX + name)
        return None if raw is None else raw.strip()

    def _error(self, name: str, accepts: str, raw: str) -> ConfigurationError:
        return ConfigurationError(f"{ENV_PREFIX}{name} must be {accepts}, got {_shown(raw)}")

    def text(self, name: str, default: str, *, required: bool = False) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if required and not raw:
            raise self._error(name, "a non-empty string", raw)
        return raw

    def integer(self, name: str, default: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        accepts = f"an integer from 1 to {_MAX_INT}"
        try:
            value = int(raw)
        except ValueError:
            raise self._error(name, accepts, raw) from None
        if not 1 <= value <= _MAX_INT:
            raise self._error(name, accepts, raw)
        return value

    def seconds(self, name: str, default: timedelta, *, allow_zero: bool = False) -> timedelta:
        raw = self._raw(name)
        if raw is None:
            return default
        lowest = "0" if allow_zero else "more than 0"
        accepts = f"a number of seconds, {lowest} and at most {_MAX_SECONDS} (ten years)"
        try:
            value = float(raw)
        except ValueError:
            raise self._error(name, accepts, raw) from None
        if not math.isfinite(value) or value > _MAX_SECONDS or value < 0:
            raise self._error(name, accepts, raw)
        if value == 0 and not allow_zero:
            raise self._error(name, accepts, raw)
        delta = timedelta(seconds=value)
        if delta <= timedelta(0) and not allow_zero:  # below a microsecond
            raise self._error(name, accepts, raw)
        return delta

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None or raw == "":
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self._error(name, "0 or 1 (or true/false)", raw)

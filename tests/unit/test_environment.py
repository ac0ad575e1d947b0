"""RESILIENT_TASK_* variables: each sets its setting; any bad value is an error naming it."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_task import ConfigurationError, TaskProperties
from resilient_task.environment import (
    GC_THRESHOLD,
    VARIABLES,
    gc_threshold_from_env,
    kafka_extra_from_env,
    log_level_from_env,
    node_settings_from_env,
)
from resilient_task.settings import KafkaTriggers, NotifyTriggers

README = Path(__file__).resolve().parents[2] / "README.md"
DATA = Path(__file__).resolve().parent / "data"
TLS_KEYS = {"ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname"}
CERT, KEY = DATA / "test-client-cert.pem", DATA / "test-client-key.pem"

# Read by ResilientTask.from_env or the worker command, not by TaskProperties.from_env.
NOT_PROPERTIES = {"DATABASE_URL", "NOTIFY", "KAFKA_BOOTSTRAP_SERVERS", "LOG_LEVEL", "GC_THRESHOLD"}

Getter = Callable[[TaskProperties], object]
SETS: list[tuple[str, str, Getter, object]] = [
    ("NODE_ID", "worker-a", lambda p: p.node_id, "worker-a"),
    ("STUCK_TIMEOUT_S", "90", lambda p: p.task_stuck_timeout, timedelta(seconds=90)),
    ("PROCESSING_GRACE_S", "0", lambda p: p.processing_grace, timedelta(0)),
    ("EXPECTED_QUEUE_TIME_S", "2.5", lambda p: p.expected_queue_time, timedelta(seconds=2.5)),
    ("SHUTDOWN_GRACE_S", "7", lambda p: p.shutdown_grace, timedelta(seconds=7)),
    ("MAX_TRIGGERS_IN_MEMORY", "50", lambda p: p.max_triggers_in_memory, 50),
    ("MAX_PAYLOAD_BYTES", "2048", lambda p: p.max_payload_bytes, 2048),
    ("RESUMER_BATCH_SIZE", "10", lambda p: p.resumer.batch_size, 10),
    ("RESUMER_POLLING_INTERVAL_S", "0.5", lambda p: p.resumer.polling_interval, timedelta(0, 0.5)),
    ("RESUMER_CONCURRENCY", "3", lambda p: p.resumer.concurrency, 3),
    ("CLEANER_ENABLED", "false", lambda p: p.cleaner.enabled, False),
    ("CLEANER_RETENTION_S", "3600", lambda p: p.cleaner.retention, timedelta(hours=1)),
    ("CLEANER_INTERVAL_S", "15", lambda p: p.cleaner.interval, timedelta(seconds=15)),
    ("CLEANER_BATCH_SIZE", "200", lambda p: p.cleaner.batch_size, 200),
    ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092", lambda p: p.kafka.bootstrap_servers,
     "k1:9092,k2:9092"),
    ("KAFKA_TOPICS_NAMESPACE", "payments", lambda p: p.kafka.topics_namespace, "payments"),
    ("KAFKA_CONSUMER_GROUP_ID", "payers", lambda p: p.kafka.consumer_group_id, "payers"),
    ("KAFKA_PARTITIONS", "12", lambda p: p.kafka.partitions, 12),
    ("KAFKA_REPLICATION_FACTOR", "3", lambda p: p.kafka.replication_factor, 3),
    ("KAFKA_CLIENT_ID", "pay", lambda p: p.kafka.client_id, "pay"),
    ("KAFKA_EXTRA", '{"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}',
     lambda p: p.kafka.extra, {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}),
]  # fmt: skip


def refusal(read: Callable[[dict[str, str]], object], environ: dict[str, str]) -> str | None:
    """The ConfigurationError message ``read(environ)`` raises, or None when it accepts."""
    try:
        read(environ)
    except ConfigurationError as exc:
        return str(exc)
    return None


def env(**values: str) -> dict[str, str]:
    return {f"RESILIENT_TASK_{name}": value for name, value in values.items()}


@pytest.mark.parametrize(("name", "value", "get", "expected"), SETS, ids=[s[0] for s in SETS])
def test_each_variable_sets_its_setting(name: str, value: str, get: Getter, expected: Any) -> None:
    assert get(TaskProperties.from_env(env(**{name: value}))) == expected
    assert get(TaskProperties.from_env({})) != expected


def test_every_variable_is_read_and_listed_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    assert {s[0] for s in SETS} | NOT_PROPERTIES == set(VARIABLES)
    missing = [name for name in VARIABLES if f"RESILIENT_TASK_{name}" not in readme]
    assert missing == []


def test_unset_variables_keep_the_defaults() -> None:
    read, default = TaskProperties.from_env({}), TaskProperties()
    assert (read.resumer, read.cleaner, read.kafka) == (
        default.resumer,
        default.cleaner,
        default.kafka,
    )
    assert read.task_stuck_timeout == default.task_stuck_timeout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RESUMER_BATCH_SIZE", "ten"),
        ("RESUMER_BATCH_SIZE", "0"),
        ("KAFKA_PARTITIONS", "99999999999"),
        ("CLEANER_INTERVAL_S", "0"),
        ("CLEANER_INTERVAL_S", "-5"),
        ("STUCK_TIMEOUT_S", "inf"),
        ("STUCK_TIMEOUT_S", "nan"),
        ("EXPECTED_QUEUE_TIME_S", "1e300"),
        ("SHUTDOWN_GRACE_S", "-1"),
        ("RESUMER_POLLING_INTERVAL_S", "1e-9"),
        ("CLEANER_ENABLED", "maybe"),
        ("KAFKA_BOOTSTRAP_SERVERS", "  "),
        ("KAFKA_EXTRA", "{not json"),
        ("KAFKA_EXTRA", "[1, 2]"),
        ("KAFKA_EXTRA", "[" * 5000),
        ("KAFKA_EXTRA", '{"sasl_mechanism": {"nested": 1}}'),
        ("KAFKA_EXTRA", '{"ssl_context": "x"}'),
        ("KAFKA_EXTRA", '{"ssl_cafile": "/no/such/ca.pem"}'),
        ("KAFKA_EXTRA", '{"ssl_cafile": 3}'),
        ("KAFKA_EXTRA", '{"ssl_keyfile": "k.pem"}'),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"RESILIENT_TASK_{name}"):
        TaskProperties.from_env(env(**{name: value}))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(set(VARIABLES) - {"DATABASE_URL", "NOTIFY"})), value=st.text())
def test_any_value_of_any_variable_is_accepted_or_refused_by_name(name: str, value: str) -> None:
    environ = env(**{name: value})
    for read in (log_level_from_env, gc_threshold_from_env, TaskProperties.from_env):
        message = refusal(read, environ)
        assert message is None or f"RESILIENT_TASK_{name}" in message


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
))  # fmt: skip
def test_any_json_in_kafka_extra_is_accepted_or_refused_by_name(value: object) -> None:
    environ = env(KAFKA_EXTRA=json.dumps(value))
    message = refusal(kafka_extra_from_env, environ)
    if message is not None:
        assert "RESILIENT_TASK_KAFKA_EXTRA" in message
    else:
        assert isinstance(value, dict)
        extra = kafka_extra_from_env(environ)
        for key, item in value.items():
            if key not in TLS_KEYS:
                assert extra[key] == item


def test_tls_files_in_kafka_extra_become_an_ssl_context() -> None:
    extra = kafka_extra_from_env(
        env(
            KAFKA_EXTRA=(
                f'{{"security_protocol": "SSL", "ssl_cafile": "{CERT}", '
                f'"ssl_certfile": "{CERT}", "ssl_keyfile": "{KEY}", "ssl_check_hostname": false}}'
            )
        )
    )
    assert extra["security_protocol"] == "SSL"
    context = extra["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert not {"ssl_cafile", "ssl_certfile", "ssl_keyfile"} & set(extra)


def test_a_key_that_does_not_match_is_refused_with_the_variable_name(tmp_path: Path) -> None:
    bad_key = tmp_path / "key.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    raw = f'{{"ssl_certfile": "{CERT}", "ssl_keyfile": "{bad_key}"}}'
    with pytest.raises(ConfigurationError, match="RESILIENT_TASK_KAFKA_EXTRA: cannot load"):
        kafka_extra_from_env(env(KAFKA_EXTRA=raw))


@pytest.mark.parametrize(
    ("value", "level"),
    [("", logging.INFO), ("debug", logging.DEBUG), ("WARNING", logging.WARNING)],
)
def test_the_log_level_is_a_level_name_in_any_case(value: str, level: int) -> None:
    assert log_level_from_env(env(LOG_LEVEL=value)) == level


@pytest.mark.parametrize("value", ["LOUD", "10", "WARN ING"])
def test_an_unknown_log_level_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigurationError, match="RESILIENT_TASK_LOG_LEVEL must be one of"):
        log_level_from_env(env(LOG_LEVEL=value))


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_TASK_CLEANER_INTERVAL_S", "30")
    assert TaskProperties.from_env().cleaner.interval == timedelta(seconds=30)


@pytest.mark.parametrize(
    "name", ["task_stuck_timeout", "expected_queue_time", "processing_grace", "shutdown_grace"]
)
def test_a_duration_setting_beyond_ten_years_is_refused_at_construction(name: str) -> None:
    # Accepted, now + timedelta.max would raise OverflowError deep in the executor or resumer.
    with pytest.raises(ConfigurationError, match=name):
        TaskProperties(**{name: timedelta.max})  # type: ignore[arg-type]


def test_the_environment_chooses_the_store_and_the_trigger_transport() -> None:
    url = "postgresql+psycopg://app@db/tasks"
    kafka = node_settings_from_env({"RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    notify = node_settings_from_env(
        {"RESILIENT_TASK_NOTIFY": "on", "RESILIENT_TASK_DATABASE_URL": url}
    )
    neither = node_settings_from_env({"RESILIENT_TASK_NOTIFY": "0"})

    assert (kafka["triggers"], kafka["database_url"]) == (KafkaTriggers(), None)
    assert kafka["properties"].kafka.bootstrap_servers == "k:9092"
    assert (notify["triggers"], notify["database_url"]) == (NotifyTriggers(), url)
    assert neither["triggers"] is None


@settings(max_examples=300, deadline=None)
@given(value=st.text() | st.integers(min_value=-(2**40), max_value=2**40).map(str))
def test_the_gc_threshold_is_an_int_from_zero_or_refused_by_name(value: str) -> None:
    environ = env(GC_THRESHOLD=value)
    message = refusal(gc_threshold_from_env, environ)
    if message is None:
        read = gc_threshold_from_env(environ)
        assert read == (int(value.strip()) if value.strip() else GC_THRESHOLD)
        assert 0 <= read <= 2**31 - 1
    else:
        assert "RESILIENT_TASK_GC_THRESHOLD" in message

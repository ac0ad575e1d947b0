"""The typed node settings: their defaults are the adapters' own, and what they hand the store."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import timedelta
from typing import Any

import pytest

from resilient_task.adapters.kafka import KafkaProperties
from resilient_task.adapters.postgres import PostgresNotifyTriggerer, open_postgres_dao
from resilient_task.adapters.postgres.engine import create_engine
from resilient_task.errors import ConfigurationError
from resilient_task.settings import KafkaTriggers, NotifyTriggers, PostgresOptions


def _defaults(function: Any) -> dict[str, object]:
    unwrapped = inspect.unwrap(function)
    return {
        name: parameter.default
        for name, parameter in inspect.signature(unwrapped).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def test_postgres_options_default_to_what_the_store_and_its_engine_default_to() -> None:
    adapter = {**_defaults(create_engine), **_defaults(open_postgres_dao)}
    options = PostgresOptions().dao_options()

    assert options == {name: adapter[name] for name in options}
    assert set(adapter) - set(options) == set()


def test_notify_triggers_default_to_what_the_notify_triggerer_defaults_to() -> None:
    adapter = _defaults(PostgresNotifyTriggerer.__init__)
    fields = {
        f.name: getattr(NotifyTriggers(), f.name)
        for f in dataclasses.fields(NotifyTriggers)
        if f.name not in ("connect_timeout", "application_name")  # PostgresOptions' then
    }

    assert fields == {name: adapter[name] for name in fields}
    assert adapter["connect_timeout"] == PostgresOptions().connect_timeout
    assert adapter["application_name"] == PostgresOptions().application_name


def test_the_options_for_the_store_keep_engine_options_apart() -> None:
    options = PostgresOptions(
        schema="payments", pool_size=3, lock_timeout=None, engine_options={"pool_pre_ping": True}
    )

    assert options.dao_options()["pool_pre_ping"] is True
    assert (options.dao_options()["schema"], options.dao_options()["lock_timeout"]) == (
        "payments",
        None,
    )
    assert "engine_options" not in options.dao_options()
    assert PostgresOptions().lock_timeout == timedelta(seconds=10)


def test_kafka_triggers_take_kafka_properties_only() -> None:
    assert KafkaTriggers(properties=KafkaProperties(topics_namespace="x")).properties
    with pytest.raises(ConfigurationError, match="KafkaProperties"):
        KafkaTriggers(properties={"bootstrap_servers": "k:9092"})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2"])
def test_hot_connections_must_be_none_or_a_non_negative_int(bad: object) -> None:
    assert PostgresOptions(hot_connections=0).dao_options()["hot_connections"] == 0
    with pytest.raises(ConfigurationError, match="hot_connections"):
        PostgresOptions(hot_connections=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["yes", 1, 0, None])
def test_wait_for_ack_must_be_a_bool(bad: object) -> None:
    assert KafkaTriggers(wait_for_ack=True).wait_for_ack is True
    with pytest.raises(ConfigurationError, match="wait_for_ack must be a bool"):
        KafkaTriggers(wait_for_ack=bad)  # type: ignore[arg-type]

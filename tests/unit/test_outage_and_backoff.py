"""The one outage log and the one backoff schedule, as the adapters use them."""

from __future__ import annotations

import logging
import random

import pytest

from resilient_task.adapters.delivery import Backoff
from resilient_task.adapters.kafka.clients import Outage
from resilient_task.errors import BackendError, BackendUnavailableError
from resilient_task.service.outage import OutageLog


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = OutageLog(logging.getLogger("test.outage"), "Kafka consumer of triggers")
    with caplog.at_level(logging.DEBUG, logger="test.outage"):
        for _ in range(3):
            outage.failed(OSError("connection refused"))
        outage.succeeded()
        outage.succeeded()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "Kafka consumer of triggers unavailable (OSError: connection refused); "
            "will keep retrying",
        ),
        (logging.DEBUG, "Kafka consumer of triggers still unavailable: connection refused"),
        (logging.DEBUG, "Kafka consumer of triggers still unavailable: connection refused"),
        (logging.WARNING, "Kafka consumer of triggers reachable again after 3 failed calls"),
    ]


def test_a_backend_failure_says_what_failed_and_whether_it_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = OutageLog(logging.getLogger("test.outage"), "database")
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        outage.failed(BackendUnavailableError("gone"), "grabbing task 7")
        outage.succeeded()
        outage.failed(BackendError("bad row", transient=False), "cleaning")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("database unavailable while grabbing task 7 (")
    assert messages[0].endswith("will keep retrying")
    assert messages[2].endswith("not transient")


def test_the_kafka_consumers_outage_is_the_same_log_under_its_names() -> None:
    outage = Outage(logging.getLogger("test.outage"), "Kafka consumer")
    assert isinstance(outage, OutageLog)
    outage.failed(OSError("down"))
    assert outage.down
    outage.recovered()
    assert not outage.down


def test_reconnect_backoff_doubles_from_first_to_cap_jittered_down_to_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounds: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", highest)
    backoff = Backoff(first=0.1, cap=5.0)
    ceilings = [backoff.next_delay() for _ in range(8)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert all(low == pytest.approx(high / 2) for low, high in bounds)
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)
    for _ in range(2000):  # a long outage: no float overflow
        backoff.next_delay()
    assert backoff.next_delay() == 5.0

"""The dashboard's parts: per-minute estimates, the chart, the CLI's safety checks, the
in-memory stats' caps."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO
from resilient_task.cli import main
from resilient_task.dashboard.chart import bar_chart
from resilient_task.dashboard.cli import is_loopback
from resilient_task.dashboard.stats import (
    InMemoryDashboardStats,
    MinuteCount,
    StatusCount,
    minute_starts,
    minute_totals,
    slot_count,
)
from resilient_task.domain.task import TaskStatus
from resilient_task.testing.task_dao_contract import make_task

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@given(read=st.integers(0, 10_000), cap=st.integers(1, 10_000))
def test_a_slot_below_its_cap_is_counted_exactly(read: int, cap: int) -> None:
    if read < cap:
        assert slot_count(read, cap, NOW, NOW + timedelta(seconds=5)) == MinuteCount(read)


@given(rate=st.integers(1, 1_000_000), cap=st.integers(20, 2_000))
def test_an_evenly_busy_slot_is_estimated_from_its_first_cap_tasks(rate: int, cap: int) -> None:
    """``rate`` tasks spread evenly over ten seconds: the estimate is within 2%."""
    step = timedelta(microseconds=10_000_000 // rate)
    if rate < cap or step < timedelta(microseconds=100):
        return
    last = NOW + step * cap  # the cap-th task finished here
    found = slot_count(cap, cap, NOW, last)
    assert not found.exact
    assert found.count >= cap
    assert abs(found.count - rate) <= max(0.02 * rate, 1)


def test_a_cap_reached_at_once_is_a_huge_estimate_not_a_division_by_zero() -> None:
    assert slot_count(10, 10, NOW, NOW) == MinuteCount(100_000, exact=False)


def test_minutes_sum_their_slots_and_are_exact_only_when_every_slot_is() -> None:
    slots = [MinuteCount(1)] * 6 + [MinuteCount(2)] * 5 + [MinuteCount(50, exact=False)]
    assert minute_totals(slots) == [MinuteCount(6), MinuteCount(60, exact=False)]


@given(octets=st.tuples(*[st.integers(0, 255)] * 4))
def test_only_loopback_addresses_are_loopback(octets: tuple[int, int, int, int]) -> None:
    host = ".".join(map(str, octets))
    assert is_loopback(host) is (octets[0] == 127)


@given(host=st.text(max_size=40))
def test_a_name_other_than_localhost_is_not_loopback(host: str) -> None:
    try:
        expected = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        expected = host == "localhost"
    assert is_loopback(host) is expected


@pytest.mark.parametrize("host", ["::1", "[::1]", "127.0.0.1", "127.8.9.10", "localhost"])
def test_loopback_spellings(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_non_loopback_spellings(host: str) -> None:
    assert not is_loopback(host)


def test_the_chart_marks_estimates_and_scales_to_the_tallest_bar() -> None:
    chart = bar_chart([MinuteCount(0), MinuteCount(5), MinuteCount(900, exact=False)], now=NOW)
    assert len(chart.bars) == 3
    assert chart.top_label == "≈ 900"
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 0
    assert heights[2] == max(heights)
    assert chart.bars[1].title == "11:58 UTC: 5"
    assert chart.bars[2].title == "11:59 UTC: ≈ 900"


def test_minute_starts_end_at_now() -> None:
    starts = minute_starts(NOW, 3)
    assert starts == [NOW - timedelta(minutes=3), NOW - timedelta(minutes=2), NOW - MINUTE]


MINUTE = timedelta(minutes=1)


@pytest.mark.anyio
async def test_in_memory_stats_read_at_most_their_caps() -> None:
    done = [
        replace(
            make_task(status=TaskStatus.DONE, type=f"t{i % 2}"),
            next_event_time=NOW - MINUTE + timedelta(seconds=i),
        )
        for i in range(10)
    ]
    stats = InMemoryDashboardStats(dao=InMemoryTaskDAO(tasks=done))
    counts = await stats.status_counts(cap=3)
    assert counts[TaskStatus.DONE] == StatusCount(10)  # in memory, always exact
    types = await stats.type_counts(cap=4)
    assert types.sampled == frozenset({TaskStatus.DONE})
    assert sum(types.counts.values()) == 4
    # one a second from NOW - 1 min: the first slot (10 tasks) reaches a cap of 4 after 3 s
    minutes = await stats.done_per_minute(now=NOW, minutes=2, cap=4)
    assert minutes == [MinuteCount(0), MinuteCount(13, exact=False)]
    assert await stats.done_per_minute(now=NOW, minutes=1, cap=100) == [MinuteCount(10)]


def run_cli(*argv: str) -> int:
    return main(["dashboard", *argv])


def test_the_cli_refuses_to_listen_beyond_loopback_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESILIENT_TASK_DASHBOARD_TOKEN", raising=False)
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    assert run_cli("--database-url", url, "--host", "0.0.0.0") == 2
    assert "give --token" in capsys.readouterr().err
    assert run_cli("--database-url", url, "--host", "0.0.0.0", "--token", "short") == 2
    assert "at least 16" in capsys.readouterr().err


def test_the_cli_needs_a_database_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESILIENT_TASK_DATABASE_URL", raising=False)
    assert main(["dashboard"]) == 2
    assert "--database-url" in capsys.readouterr().err


def test_an_unreachable_store_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    assert run_cli("--database-url", url, "--port", "1") == 3
    assert "error:" in capsys.readouterr().err


def test_the_command_line_imports_no_web_package() -> None:
    """``resilient-task`` must run without the [dashboard] extra installed."""
    code = (
        "import sys, resilient_task.cli, resilient_task.dashboard.cli; "
        "print(sorted(m for m in ('starlette', 'jinja2', 'uvicorn', 'multipart') "
        "if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"

"""Cron schedules, the tick a run covers and the next tick: pure rules, DST transitions included.

Europe/London springs forward on 2026-03-29 at 01:00 UTC (01:00 -> 02:00 local) and falls
back on 2026-10-25 at 01:00 UTC (02:00 -> 01:00 local).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid5

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from resilient_task.domain import Task, TaskStatus
from resilient_task.domain.cron import (
    CRON_NAMESPACE,
    CronJob,
    CronRetryPolicy,
    CronSchedule,
    MissedRuns,
)
from resilient_task.errors import ConfigurationError, ValidationError

LONDON = "Europe/London"
SPRING_FORWARD = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
FALL_BACK = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
SCHEDULES = [
    CronSchedule("*/5 * * * *", LONDON),
    CronSchedule("30 1 * * *", LONDON),  # 01:30 is missing in spring, doubled in autumn
    CronSchedule("0 1 * * *", LONDON),
    CronSchedule("0 * * * *", LONDON),
    CronSchedule("0 30 1 * * *", LONDON),  # six fields: no Debian DST quirks
    CronSchedule("*/20 * * * * *", LONDON),
    CronSchedule("15 2 * * 0", "America/New_York"),
    CronSchedule("*/7 * * * *"),
]


async def noop(run: object) -> None:
    """A processor that does nothing."""


def near_a_transition() -> st.SearchStrategy[datetime]:
    """Moments within two days of either London transition, to the microsecond."""
    offsets = st.integers(min_value=-2 * 86_400_000_000, max_value=2 * 86_400_000_000)
    return st.builds(
        lambda base, us: base + timedelta(microseconds=us),
        st.sampled_from([SPRING_FORWARD, FALL_BACK]),
        offsets,
    )


def grabbed(at: datetime, *, tries: int = 1) -> Task:
    """A cron task as the grab that started a run at ``at`` leaves it."""
    return Task(
        id=uuid5(CRON_NAMESPACE, "job"),
        type="cron:job",
        data=b"",
        status=TaskStatus.PROCESSING,
        next_event_time=at + timedelta(minutes=5),
        created_at=at - timedelta(days=1),
        updated_at=at,
        processing_tries_count=tries,
    )


def job(**overrides: Any) -> CronJob:
    """A valid job, with ``overrides``."""
    fields: dict[str, Any] = {"name": "job", "schedule": "*/5 * * * *", "processor": noop}
    fields.update(overrides)
    return CronJob(**fields)


# Inside the repeated hour cronsim walks from the wall time, which it took the first time round.
IN_THE_REPEATED_HOUR = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 01:10 GMT, the second one


@given(st.sampled_from(SCHEDULES), near_a_transition())
@example(CronSchedule("30 1 * * *", LONDON), IN_THE_REPEATED_HOUR)
def test_the_next_tick_is_always_later(schedule: CronSchedule, moment: datetime) -> None:
    assert schedule.next_after(moment) > moment


@given(st.sampled_from(SCHEDULES), near_a_transition())
@example(CronSchedule("30 1 * * *", LONDON), IN_THE_REPEATED_HOUR)
@example(CronSchedule("0 1 * * *", LONDON), IN_THE_REPEATED_HOUR)
def test_no_tick_lies_between_the_covering_tick_and_the_moment(
    schedule: CronSchedule, moment: datetime
) -> None:
    tick = schedule.covering_tick(moment)

    assert tick is not None
    assert tick <= moment < schedule.next_after(tick)


@given(st.sampled_from(SCHEDULES), near_a_transition(), st.integers(0, 10**11))
def test_the_next_tick_never_goes_back_as_time_goes_on(
    schedule: CronSchedule, moment: datetime, later_us: int
) -> None:
    later = moment + timedelta(microseconds=later_us)

    assert schedule.next_after(moment) <= schedule.next_after(later)


@given(st.sampled_from(SCHEDULES), near_a_transition(), st.data())
def test_punctual_runs_cover_every_tick_exactly_once(
    schedule: CronSchedule, start: datetime, data: st.DataObject
) -> None:
    policy = CronRetryPolicy(schedule)
    ticks = [schedule.next_after(start)]
    for _ in range(30):
        ticks.append(schedule.next_after(ticks[-1]))
    due = ticks[0]
    for expected in ticks[1:]:
        # Each run starts some time after its tick, but before the next one.
        room = int((expected - due).total_seconds() * 1_000_000) - 1
        started = due + timedelta(microseconds=data.draw(st.integers(0, room)))
        following = policy.next_run(grabbed(started), now=started + timedelta(milliseconds=1))
        assert following == expected
        due = expected


@given(near_a_transition(), st.integers(1, 10**6))
def test_a_late_run_covers_the_missed_ticks_and_the_next_is_in_the_future(
    due: datetime, late_s: int
) -> None:
    schedule = CronSchedule("*/5 * * * *", LONDON)
    started = due + timedelta(seconds=late_s)

    following = CronRetryPolicy(schedule).next_run(grabbed(started), now=started)

    assert following is not None
    assert started < following <= started + timedelta(minutes=5)


def test_an_interval_job_runs_every_five_real_minutes_through_both_transitions() -> None:
    schedule = CronSchedule("*/5 * * * *", LONDON)
    for transition in (SPRING_FORWARD, FALL_BACK):
        tick = schedule.next_after(transition - timedelta(hours=3))
        for _ in range(72):
            following = schedule.next_after(tick)
            assert following - tick == timedelta(minutes=5)
            tick = following


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # 01:30 does not exist that night: Debian cron runs the job at 02:00 BST.
        (datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # 01:30 happens twice that night: the job runs once, at the first (BST) one.
        (datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
)
def test_a_daily_job_runs_once_on_the_night_of_a_transition(
    day: datetime, expected: datetime
) -> None:
    schedule = CronSchedule("30 1 * * *", LONDON)
    ticks = [schedule.next_after(day - timedelta(days=1))]
    while ticks[-1] < day + timedelta(days=2):
        ticks.append(schedule.next_after(ticks[-1]))

    on_that_day = [t for t in ticks if day <= t < day + timedelta(days=1)]

    assert on_that_day == [expected]


def test_skip_drops_a_run_that_starts_over_its_misfire_grace_after_the_tick() -> None:
    skipping = job(missed=MissedRuns.SKIP, misfire_grace=timedelta(seconds=30))
    tick = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)

    on_time = skipping.run_for(grabbed(tick + timedelta(seconds=30)))
    late = skipping.run_for(grabbed(tick + timedelta(seconds=31)))

    assert on_time.tick == late.tick == tick
    assert not skipping.skips(on_time)
    assert skipping.skips(late)
    assert not job(missed=MissedRuns.RUN_ONCE).skips(late)


def test_a_run_is_told_its_tick_in_the_jobs_time_zone() -> None:
    london = job(schedule="0 9 * * *", timezone=LONDON)

    run = london.run_for(grabbed(datetime(2026, 7, 1, 8, 0, 2, tzinfo=UTC)))

    assert run.tick.isoformat() == "2026-07-01T09:00:00+01:00"
    assert run.job == "job"
    assert run.started == datetime(2026, 7, 1, 8, 0, 2, tzinfo=UTC)


def test_the_policy_stops_after_max_failures_consecutive_failed_runs() -> None:
    policy = CronRetryPolicy(CronSchedule("*/5 * * * *"), max_failures=3)
    now = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)

    assert policy.reset_tries_on_repeat
    assert policy.next_run(grabbed(now, tries=2), now=now) is not None
    assert policy.next_run(grabbed(now, tries=3), now=now) is None
    assert CronRetryPolicy(policy.schedule, None).next_run(grabbed(now, tries=99), now=now)


def test_a_job_has_one_task_whose_id_and_type_derive_from_its_name() -> None:
    assert job().task_id == job(schedule="0 * * * *").task_id == uuid5(CRON_NAMESPACE, "job")
    assert job(name="other").task_id != job().task_id
    assert job().task_type == "cron:job"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schedule": "61 * * * *"}, "bad cron expression"),
        ({"schedule": "* * *"}, "bad cron expression"),
        ({"schedule": " "}, "cron expression"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"name": ""}, "cron job name"),
        ({"name": "x" * 300}, "cron job name"),
        ({"missed": "SOMETIMES"}, "missed must be"),
        ({"misfire_grace": timedelta(0)}, "misfire_grace"),
        ({"max_failures": 1}, "max_failures"),
        ({"max_failures": True}, "max_failures"),
        ({"timeout": timedelta(seconds=-1)}, "timeout"),
        ({"processor": print}, "async function"),
    ],
)
def test_a_job_is_validated_when_declared(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        job(**overrides)


def test_without_the_cron_extra_declaring_a_job_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # import cronsim raises ImportError

    with pytest.raises(ConfigurationError, match=r"pip install 'resilient-task\[cron\]'"):
        job()

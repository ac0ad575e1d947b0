"""Recurring jobs: a cron schedule in a time zone, the tick a run covers, and the next tick.

A cron job is ONE task (its id derived from the job's name) that runs, returns
``COMMIT_AND_RETRY``, and is rescheduled to its next tick by :class:`CronRetryPolicy` in the
same version-checked write that records the run. Which tick a run covers is derived from the
time the task was grabbed (``Task.updated_at`` after the grab), so no extra state is stored:

- the run started at ``g`` covers the *latest tick at or before* ``g``, call it ``L``;
- the next run is due at the *first tick after* ``L``, which is after ``g`` too.

Each run's ``L`` is therefore later than the previous one's: two runs never cover the same
tick. Ticks missed while no node ran are covered together by the next run
(:attr:`MissedRuns.RUN_ONCE`), or dropped when that run starts more than ``misfire_grace``
after its tick (:attr:`MissedRuns.SKIP`).

Cron expressions are parsed and evaluated by the ``cronsim`` package (the ``cron`` extra):
five fields, or six with seconds first. Five-field expressions in a time zone with daylight
saving follow Debian cron: a fixed time that does not exist (spring forward) runs at the first
minute after the gap, a fixed time that occurs twice (fall back) runs once.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING
from uuid import NAMESPACE_DNS, UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from resilient_task.domain.handler import _is_plain_function
from resilient_task.domain.requests import MAX_TYPE_LENGTH, check_text, require_duration
from resilient_task.domain.task import Task
from resilient_task.errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    import cronsim

__all__ = [
    "CRON_NAMESPACE",
    "CRON_TYPE_PREFIX",
    "CronJob",
    "CronProcessor",
    "CronRetryPolicy",
    "CronRun",
    "CronSchedule",
    "MissedRuns",
]

CRON_TYPE_PREFIX = "cron:"
"""The task type of a cron job is this prefix and the job's name."""
CRON_NAMESPACE = uuid5(NAMESPACE_DNS, "cron.resilient-task")
"""The namespace of the uuid5 task ids of cron jobs (``uuid5(CRON_NAMESPACE, name)``)."""
_MAX_STEPS = 1000
"""Bound on the iterations that step over a daylight-saving quirk (a handful in practice)."""


class MissedRuns(enum.StrEnum):
    """What a cron job does about ticks that passed while no node ran it."""

    RUN_ONCE = "RUN_ONCE"
    """Run once, as soon as possible, for all the missed ticks; then continue on schedule."""
    SKIP = "SKIP"
    """Drop a run that starts more than ``misfire_grace`` after its tick; wait for the next."""


def _cronsim() -> ModuleType:
    """The cron library, imported when first needed: it is an optional dependency."""
    try:
        import cronsim
    except ImportError as exc:
        raise ConfigurationError(
            f"cron jobs need the 'cron' extra, which is not installed ({exc}): "
            f"pip install 'resilient-task[cron]'"
        ) from exc
    return cronsim


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression evaluated in an IANA time zone; every time it returns is UTC.

    Raises :class:`ValidationError` for an expression cronsim refuses, one that never fires
    within 50 years, or an unknown time zone.
    """

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or not self.expression.strip():
            raise ValidationError(f"schedule must be a cron expression, got {self.expression!r}")
        if not isinstance(self.timezone, str) or not self.timezone.strip():
            raise ValidationError(f"timezone must be an IANA name, got {self.timezone!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown time zone {self.timezone!r}") from None
        library = _cronsim()
        try:
            next(library.CronSim(self.expression, datetime(2000, 1, 1, tzinfo=self.zone)))
        except library.CronSimError as exc:
            raise ValidationError(f"bad cron expression {self.expression!r}: {exc}") from None
        except StopIteration:
            raise ValidationError(
                f"cron expression {self.expression!r} never fires within 50 years"
            ) from None

    @property
    def zone(self) -> ZoneInfo:
        """The time zone (``ZoneInfo`` caches instances: this is cheap)."""
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware), in UTC.

        Raises:
            ValidationError: no tick within 50 years of ``moment``.
        """
        ticks = _cronsim().CronSim(self.expression, moment.astimezone(self.zone))
        for _ in range(_MAX_STEPS):
            # In a repeated (fall-back) hour cronsim can answer a time before ``moment``.
            tick = self._utc(ticks)
            if tick is None:
                break
            if tick > moment:
                return tick
        raise ValidationError(f"cron expression {self.expression!r} has no tick after {moment}")

    def covering_tick(self, moment: datetime) -> datetime | None:
        """The latest tick at or before ``moment``, in UTC (None if none within 50 years).

        Consistent with :meth:`next_after`: ``tick <= moment < next_after(tick)``.
        """
        # cronsim walks back from a time strictly before the one given: 1 µs later includes it.
        start = (moment + timedelta(microseconds=1)).astimezone(self.zone)
        backwards = _cronsim().CronSim(self.expression, start, reverse=True)
        tick = self._utc(backwards)
        if tick is None:
            return None
        for _ in range(_MAX_STEPS):
            following = self.next_after(tick)
            if following > moment:
                return tick
            tick = following  # cronsim's backward and forward walks differ around DST
        return tick  # pragma: no cover - _MAX_STEPS ticks between two neighbours: impossible

    @staticmethod
    def _utc(ticks: cronsim.CronSim) -> datetime | None:
        try:
            return next(ticks).astimezone(UTC)
        except StopIteration:
            return None


@dataclass(frozen=True, slots=True)
class CronRun:
    """What a cron job's processor is given: which job, which tick, and the task running it.

    Attributes:
        job: the job's name.
        tick: the latest scheduled time this run covers, in the job's time zone. After an
            outage (``MissedRuns.RUN_ONCE``) the run stands for every tick missed up to it.
        started: when the run started (the task was grabbed), UTC.
        task: the job's task, as grabbed for this run.
    """

    job: str
    tick: datetime
    started: datetime
    task: Task


CronProcessor = Callable[[CronRun], Awaitable[object]]
"""An async function running one run of a job; raising means the run failed."""


@dataclass(frozen=True, slots=True)
class CronRetryPolicy:
    """Schedules a cron job's task: after a run (done or failed), the job's next tick.

    ``COMMIT_AND_RETRY`` starts the tries count again (``reset_tries_on_repeat``), so
    ``processing_tries_count`` counts the consecutive failed runs; after ``max_failures`` of
    them the task goes to ERROR (None: never). The first failure is always retried at the next
    tick: the executor asks this policy about a repeat as about a first failed attempt.
    """

    schedule: CronSchedule
    max_failures: int | None = 3
    reset_tries_on_repeat: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _check_max_failures(self.max_failures)

    def next_run(
        self, task: Task, *, now: datetime, rand: Callable[[], float] = random.random
    ) -> datetime | None:
        """The first tick after the one the run of ``task`` covered; None to stop (ERROR)."""
        if self.max_failures is not None and task.processing_tries_count >= self.max_failures:
            return None
        # The grab stamped updated_at: the run started then. The first tick after it is the
        # first tick after the tick the run covered (no tick lies between those two).
        return self.schedule.next_after(task.updated_at)


@dataclass(frozen=True, kw_only=True)
class CronJob:
    """A recurring job: ``processor`` runs once per tick of ``schedule`` across all nodes.

    Args:
        name: identifies the job; its task has type ``cron:<name>`` and id
            ``uuid5(CRON_NAMESPACE, name)``. Renaming a job makes a new one.
        schedule: a cron expression (five fields, or six with seconds first).
        processor: ``async def run(run: CronRun) -> None``; raising fails the run.
        timezone: the IANA zone the expression is read in (default UTC).
        missed: what to do with ticks missed while no node ran (see :class:`MissedRuns`).
        misfire_grace: with ``SKIP``, how late a run may start and still count for its tick.
        max_failures: consecutive failed runs after which the task goes to ERROR (at least 2;
            None: never). A failed run is retried at the next tick.
        timeout: the processing timeout of one run (None: the node's stuck timeout).
        transactional: run the processor in the transaction that records the run and
            reschedules the job (its writes commit with it, see ``current_transaction()``).
    """

    name: str
    schedule: str
    processor: CronProcessor
    timezone: str = "UTC"
    missed: MissedRuns = MissedRuns.RUN_ONCE
    misfire_grace: timedelta = timedelta(minutes=1)
    max_failures: int | None = 3
    timeout: timedelta | None = None
    transactional: bool = False
    cron: CronSchedule = field(init=False, repr=False)

    def __post_init__(self) -> None:
        limit = MAX_TYPE_LENGTH - len(CRON_TYPE_PREFIX)
        check_text("cron job name", self.name, limit, required=True)
        object.__setattr__(self, "cron", CronSchedule(self.schedule, self.timezone))
        if not callable(self.processor) or _is_plain_function(self.processor):
            raise ValidationError(
                f"cron job {self.name!r}: processor must be an async function (run) -> None"
            )
        try:
            object.__setattr__(self, "missed", MissedRuns(self.missed))
        except ValueError:
            raise ValidationError(f"missed must be RUN_ONCE or SKIP, got {self.missed!r}") from None
        require_duration("misfire_grace", self.misfire_grace)
        _check_max_failures(self.max_failures)
        if self.timeout is not None:
            require_duration("timeout", self.timeout)

    @property
    def task_id(self) -> UUID:
        """The id of the job's one task."""
        return uuid5(CRON_NAMESPACE, self.name)

    @property
    def task_type(self) -> str:
        """The type of the job's task: ``cron:<name>``."""
        return CRON_TYPE_PREFIX + self.name

    @property
    def retry_policy(self) -> CronRetryPolicy:
        """The policy that reschedules the job's task to its next tick."""
        return CronRetryPolicy(self.cron, self.max_failures)

    def run_for(self, task: Task) -> CronRun:
        """The run a grabbed ``task`` makes: the tick it covers, from the grab's time."""
        started = task.updated_at
        tick = self.cron.covering_tick(started) or started
        return CronRun(
            job=self.name, tick=tick.astimezone(self.cron.zone), started=started, task=task
        )

    def skips(self, run: CronRun) -> bool:
        """Whether ``missed=SKIP`` drops ``run``: it started over ``misfire_grace`` late."""
        return self.missed is MissedRuns.SKIP and run.started - run.tick > self.misfire_grace


def _check_max_failures(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValidationError(
            f"max_failures must be an int >= 2 or None (a first failure is always retried "
            f"at the next tick), got {value!r}"
        )

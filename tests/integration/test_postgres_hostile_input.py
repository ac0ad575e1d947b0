"""PostgreSQL under hostile input: overlapping concurrent batches, and the edges of its types.

The in-memory store passes the same contract; these add what only a real server shows:
deadlocks between concurrent inserts, and values the driver or the server cannot carry
(lone surrogates, NUL, times past year 9999 in some time zone) over a whole class of inputs.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_task.adapters.postgres import PostgresSettings, PostgresTaskDAO, create_engine
from resilient_task.domain.requests import EARLIEST_TIME, LATEST_TIME
from resilient_task.domain.task import Task
from resilient_task.errors import ValidationError
from resilient_task.ports.task_dao import InsertOutcome
from resilient_task.testing.task_dao_contract import make_task
from tests.unit.hostile import FUZZ_EXAMPLES, valid_text

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CALLERS = 6
ROUNDS = 25
KEYS = 40

# A short budget against a real server: each example is a round trip.
_db_examples = settings(
    max_examples=max(20, FUZZ_EXAMPLES // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def dao(database_url: str, settings: PostgresSettings) -> AsyncIterator[PostgresTaskDAO]:
    engine = create_engine(database_url, pool_size=CALLERS, max_overflow=0)
    async with PostgresTaskDAO(engine=engine, settings=settings, owns_engine=True) as dao:
        yield dao


async def test_concurrent_batches_with_overlapping_keys_in_any_order_never_deadlock(
    dao: PostgresTaskDAO,
) -> None:
    # Before the inserts were sorted, about one batch in five died as a deadlock (BackendError).
    rng = random.Random(20261129)
    for round_ in range(ROUNDS):
        keys = [f"round-{round_}-key-{k}" for k in range(KEYS)]
        outcomes: dict[int, list[InsertOutcome]] = {}
        batches: dict[int, list[Task]] = {}
        for caller in range(CALLERS):
            shuffled = rng.sample(keys, len(keys))
            batches[caller] = [make_task(type="payment", unique_key=k) for k in shuffled]

        async with anyio.create_task_group() as tg:
            for caller in range(CALLERS):
                tg.start_soon(_add, dao, batches[caller], outcomes, caller)

        owners: dict[str, set[UUID]] = {}
        for caller, batch in batches.items():
            for task, outcome in zip(batch, outcomes[caller], strict=True):
                owners.setdefault(task.unique_key or "", set()).add(outcome.task_id)
        assert all(len(ids) == 1 for ids in owners.values()), "a key has two owners"
        created = sum(o.created for results in outcomes.values() for o in results)
        assert created == KEYS


async def _add(
    dao: PostgresTaskDAO, batch: list[Task], outcomes: dict[int, list[InsertOutcome]], caller: int
) -> None:
    outcomes[caller] = await dao.insert_tasks(batch)


_texts = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x20), max_size=5),
    st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=5),
)


@_db_examples
@given(type_=_texts, sub_type=st.none() | _texts, unique_key=st.none() | _texts)
async def test_any_text_is_stored_exactly_or_refused_with_a_validation_error(
    dao: PostgresTaskDAO, type_: str, sub_type: str | None, unique_key: str | None
) -> None:
    task = make_task(type=type_, sub_type=sub_type, unique_key=unique_key)
    valid = valid_text(type_) and all(
        text is None or valid_text(text, limit)
        for text, limit in ((sub_type, 250), (unique_key, 150))
    )
    if not valid:
        with pytest.raises(ValidationError):
            await dao.insert_tasks([task])
        return
    (outcome,) = await dao.insert_tasks([task])
    if outcome.created:  # a repeated (type, unique_key) example finds the earlier task
        assert await dao.get_task(task.id) == task


_zones = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_edges = st.one_of(
    st.datetimes(min_value=datetime(9999, 12, 28), timezones=_zones),
    st.datetimes(max_value=datetime(1, 1, 3), timezones=_zones),
    st.datetimes(timezones=_zones),
)


@_db_examples
@given(at=_edges)
async def test_any_time_is_stored_and_read_back_or_refused_with_a_validation_error(
    dao: PostgresTaskDAO, at: datetime
) -> None:
    task = make_task(next_event_time=at)
    try:
        in_range = EARLIEST_TIME <= at.astimezone(UTC) <= LATEST_TIME
    except OverflowError:  # not even representable in UTC: year 0 or 10000
        in_range = False
    if not in_range:
        with pytest.raises(ValidationError, match="outside the storable range"):
            await dao.insert_tasks([task])
        return
    await dao.insert_tasks([task])
    stored = await dao.get_task(task.id)
    assert stored is not None
    assert stored.next_event_time == at
    assert stored.next_event_time.tzinfo is UTC

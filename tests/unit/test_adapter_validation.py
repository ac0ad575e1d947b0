"""check_new remembers the last valid time and type; it must still refuse every invalid one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_task.adapters.validation import check_new
from resilient_task.domain.requests import MAX_TYPE_LENGTH, check_text, require_time
from resilient_task.errors import ValidationError
from resilient_task.testing.task_dao_contract import make_task

_times = st.one_of(
    st.datetimes(timezones=st.just(UTC)),  # years 1 to 9999: some outside the storable range
    st.datetimes(),  # naive
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))),  # 9999-12-31 19:00 -> 10000
)
_types = st.one_of(st.text(max_size=MAX_TYPE_LENGTH + 2), st.sampled_from(["email", "", " "]))


def _valid(time: datetime, type_: str) -> bool:
    try:
        require_time("t", time)
        check_text("type", type_, MAX_TYPE_LENGTH, required=True)
    except ValidationError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_times, _types, st.booleans()), min_size=1, max_size=8))
def test_a_sequence_of_new_tasks_is_judged_as_each_alone(
    cases: list[tuple[datetime, str, bool]],
) -> None:
    good = datetime(2026, 1, 1, tzinfo=UTC)
    previous = None
    for time, type_, reuse in cases:
        if reuse and previous is not None:  # the very objects of the previous task
            time, type_ = previous
        task = make_task(type=type_, next_event_time=good, created_at=time)
        try:
            check_new(task)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == _valid(time, type_)
        previous = (time, type_)

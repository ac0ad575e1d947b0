from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilient_task.logtext import loggable


@given(st.one_of(st.text(), st.binary()), st.integers(min_value=1, max_value=300))
def test_any_value_becomes_one_bounded_printable_line(value: str | bytes, limit: int) -> None:
    line = loggable(value, limit)
    assert "\n" not in line
    assert "\r" not in line
    assert line.isprintable()
    assert len(line) <= 4 * limit + 30 + 10  # escaping at most quadruples a character


def test_a_short_printable_value_is_logged_as_it_is() -> None:
    assert loggable("payment.settle") == "payment.settle"


def test_a_newline_cannot_forge_a_log_line() -> None:
    assert loggable("a\nERROR forged") == "a\\nERROR forged"


def test_a_long_value_is_cut_and_says_by_how_much() -> None:
    assert loggable("x" * 1000, limit=10) == "x" * 10 + "...(+990 more)"


def test_an_object_whose_str_raises_is_described_by_its_type() -> None:
    class NastyError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert loggable(NastyError()) == "<unprintable NastyError: str() raised RuntimeError>"

"""Hypothesis strategies for hostile input, and the budget of the tests that use them.

The property tests of the trigger decoders and of request validation run
:data:`FUZZ_EXAMPLES` examples each: a short budget by default, so the suite stays fast, and as
many as asked for with ``RESILIENT_TASK_FUZZ_EXAMPLES`` (e.g. ``100000`` for a long fuzzing run)::

    RESILIENT_TASK_FUZZ_EXAMPLES=100000 .venv/bin/pytest -q -p no:cacheprovider \\
        tests/unit/test_trigger_decoding_properties.py tests/unit/test_request_properties.py

The oracles here (:func:`valid_text`, :func:`valid_version` ...) restate the documented rules
independently of the code under test, so a test compares the code with the documentation.
"""

from __future__ import annotations

import os
import re
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from resilient_task.domain.task import BaseTask

__all__ = [
    "FUZZ_EXAMPLES",
    "expected_reference",
    "fuzz",
    "hostile_values",
    "reference_fields",
    "valid_id",
    "valid_priority",
    "valid_text",
    "valid_texts",
    "valid_version",
]

FUZZ_EXAMPLES = int(os.environ.get("RESILIENT_TASK_FUZZ_EXAMPLES", "100"))
"""Examples per property test; ``RESILIENT_TASK_FUZZ_EXAMPLES`` overrides it."""

fuzz = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,  # the machine is shared: a slow example is load, not a bug
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""The settings of every fuzzing property test."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}\Z")
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")


def valid_text(value: object, max_length: int = 250) -> bool:
    """The documented rule for types, sub-types and unique keys."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_length
        and value.strip() != ""
        and "\x00" not in value
        and _SURROGATE.search(value) is None
    )


def valid_version(value: object) -> bool:
    """An int, not a bool, within PostgreSQL's bigint and not negative."""
    return type(value) is int and 0 <= value <= 2**63 - 1


def valid_priority(value: object) -> bool:
    """An int, not a bool, from 0 to 9."""
    return type(value) is int and 0 <= value <= 9


def valid_id(value: object) -> bool:
    """32 hex digits or the canonical 8-4-4-4-12 form."""
    return isinstance(value, str) and bool(_HEX32.match(value) or _CANONICAL.match(value))


def valid_texts(max_length: int = 250) -> st.SearchStrategy[str]:
    """Texts every store accepts as a type or sub-type (or unique key)."""
    return st.text(min_size=1, max_size=max_length).filter(lambda t: valid_text(t, max_length))


_nasty_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", " ", "\t\n", "a\x00b", "\ud800", "x\udfff", "\u2028", "t" * 251]),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4),
)
_nested: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)
hostile_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 1),
    st.sampled_from([-1, 2**63, -(2**63), 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    _nasty_text,
    _nested,
)
"""Values of every JSON type, biased to the edges: huge ints, bools, NaN, surrogates, NUL."""

_ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.uuids().map(lambda u: "+" + u.hex[1:]),
    st.uuids().map(lambda u: u.hex[:31] + "_"),
    st.text(alphabet="0123456789abcdef-_ +\u0660", min_size=30, max_size=38),
    hostile_values,
)


@st.composite
def reference_fields(draw: st.DrawFn) -> tuple[Any, Any, Any, Any, Any]:
    """``(id, version, type, sub_type, priority)``, each valid or hostile."""
    return (
        draw(_ids),
        draw(st.integers(min_value=0, max_value=2**63 - 1) | hostile_values),
        draw(valid_texts() | hostile_values),
        draw(st.none() | valid_texts() | hostile_values),
        draw(st.integers(min_value=0, max_value=9) | hostile_values),
    )


def expected_reference(fields: tuple[Any, Any, Any, Any, Any]) -> BaseTask | None:
    """The reference the documented rules make of ``fields``, or None."""
    task_id, version, type_, sub_type, priority = fields
    if not (
        valid_id(task_id)
        and valid_version(version)
        and valid_text(type_)
        and (sub_type is None or valid_text(sub_type))
        and valid_priority(priority)
    ):
        return None
    return BaseTask(UUID(task_id), version, type_, sub_type, priority)

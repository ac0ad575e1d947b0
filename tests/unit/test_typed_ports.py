"""The ports' typing promises hold: mypy rejects a transaction handle of another store."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

CHECKED = Path(__file__).parents[1] / "typing" / "task_dao_handles.py"
PROJECT = Path(__file__).parents[2]
_IGNORE = re.compile(r"\s*# type: ignore\[([a-z-]+)\]$", re.MULTILINE)


def test_mypy_rejects_another_stores_transaction_handle(tmp_path: Path) -> None:
    source = CHECKED.read_text()
    expected = {
        (number, match.group(1))
        for number, line in enumerate(source.splitlines(), start=1)
        if (match := _IGNORE.search(line))
    }
    assert len(expected) == 3  # the file's three misuses
    bare = tmp_path / "task_dao_handles.py"
    bare.write_text(_IGNORE.sub("", source))

    out, err, status = api.run(
        [
            "--config-file", str(PROJECT / "pyproject.toml"),
            "--cache-dir", str(PROJECT / ".mypy_cache"),
            "--show-error-codes", "--no-error-summary",
            str(bare),
        ]
    )  # fmt: skip

    errors = re.findall(r"task_dao_handles\.py:(\d+): error: (.*)  \[([a-z-]+)\]$", out, re.M)
    assert status == 1, out + err
    assert {(int(line), code) for line, _, code in errors} == expected, out
    messages = " | ".join(message for _, message, _ in errors)
    assert '"AsyncConnection"; expected "InMemoryTransaction | None"' in messages, out
    assert '(got "PostgresTaskDAO", expected "TaskDAO[InMemoryTransaction]")' in messages, out

"""docs/testing.md's examples, run as written, and the shipped suites failing a broken adapter.

The handler example's tests are compiled into this module (collected here on both anyio
backends, with the ``fake_clock`` fixture of the installed pytest plugin). Both examples also
run as their own files under a bare pytest configuration, as a user who copies them would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
HANDLERS = "## Unit-testing handlers"
ADAPTER = "## Proving a custom adapter"

BROKEN_ADAPTER = '''
import pytest

from resilient_task.ports.task_dao import TaskDAO
from resilient_task.testing import InMemoryTaskDAO, TaskDAOContract


class VersionBlindTaskDAO(InMemoryTaskDAO):
    """Forgets the compare-and-set: writes every change whatever the stored version."""

    async def apply(self, changes, *, transaction=None):
        fixed = [type(c)(c.task, self.tasks[c.task.id].version) if c.task.id in self.tasks
                 else c for c in changes]
        return await super().apply(fixed, transaction=transaction)


class TestVersionBlindTaskDAO(TaskDAOContract):
    @pytest.fixture
    async def dao(self) -> TaskDAO:
        return VersionBlindTaskDAO()
'''


def doc_block(section: str) -> tuple[str, int]:
    """The first ```python block after the ``section`` heading, and its first line number."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(section)
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no python block after {section!r} in {DOC.name}"
    return match.group(1), text.count("\n", 0, match.start(1)) + 1


_CODE, _FIRST_LINE = doc_block(HANDLERS)
# Padded so that a failing assertion's traceback points at the document's own line.
exec(compile("\n" * (_FIRST_LINE - 1) + _CODE, str(DOC), "exec"), globals())


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Bare pytest (no project configuration) over ``directory``, as a user would run it."""
    (directory / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_handler_example_defines_tests_that_use_the_plugin_fixture() -> None:
    tests = re.findall(r"^async def (test_\w+)\(\n?\s*fake_clock", _CODE, re.MULTILINE)
    assert tests
    assert all(callable(globals().get(name)) for name in tests)


def test_the_examples_pass_and_a_broken_adapter_fails_under_plain_pytest(tmp_path: Path) -> None:
    # One run (a pytest start-up costs seconds): both examples, and an adapter the suite rejects.
    for name, section in [("handlers", HANDLERS), ("adapter", ADAPTER)]:
        code, _ = doc_block(section)
        (tmp_path / f"test_{name}_example.py").write_text(code, encoding="utf-8")
    (tmp_path / "test_broken_adapter.py").write_text(BROKEN_ADAPTER, encoding="utf-8")

    done = run_pytest(tmp_path, "-rf")

    output = done.stdout + done.stderr
    failed = re.findall(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    assert done.returncode == 1, output
    assert failed, output
    assert all(f.startswith("test_broken_adapter.py::") for f in failed), output
    assert any("test_stale_version_cannot_complete_task" in f for f in failed), output
    passed = re.search(r"\b(\d+) passed\b", done.stdout)
    assert passed is not None, output
    assert int(passed.group(1)) > 2 * 50  # the handler test, the TaskDAO suite twice (mostly)
    assert "skipped" not in done.stdout

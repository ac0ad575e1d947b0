"""docs/testing.md's examples, run as written, and the shipped suites failing a broken adapter.

The handler example's tests are compiled into this module (collected here on both anyio
backends, with the ``fake_clock`` fixture of the installed pytest plugin). Both examples also
run as their own files under a bare pytest configuration, as a user who copies them would.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.doc_blocks import ROOT, exec_block, python_block, run_bare_pytest

DOC = ROOT / "docs" / "testing.md"
HANDLERS = "## Unit-testing handlers"
ADAPTER = "## Proving a custom adapter"

BROKEN_ADAPTER = '''
import pytest

from resilient_task.testing import InMemoryTaskDAO, TaskDAOContract


class VersionBlindTaskDAO(InMemoryTaskDAO):
    """Forgets the compare-and-set: writes every change whatever the stored version."""

    async def apply(self, changes, *, transaction=None):
        fixed = [type(c)(c.task, self.tasks[c.task.id].version) if c.task.id in self.tasks
                 else c for c in changes]
        return await super().apply(fixed, transaction=transaction)


class TestVersionBlindTaskDAO(TaskDAOContract):
    @pytest.fixture
    async def dao(self) -> VersionBlindTaskDAO:
        return VersionBlindTaskDAO()
'''


_CODE = exec_block(DOC, HANDLERS, globals())


def test_the_handler_example_defines_tests_that_use_the_plugin_fixture() -> None:
    tests = re.findall(r"^async def (test_\w+)\(\n?\s*fake_clock", _CODE, re.MULTILINE)
    assert tests
    assert all(callable(globals().get(name)) for name in tests)


def test_the_examples_pass_and_a_broken_adapter_fails_under_plain_pytest(tmp_path: Path) -> None:
    # One run (a pytest start-up costs seconds): both examples, and an adapter the suite rejects.
    for name, section in [("handlers", HANDLERS), ("adapter", ADAPTER)]:
        code, _ = python_block(DOC, section)
        (tmp_path / f"test_{name}_example.py").write_text(code, encoding="utf-8")
    (tmp_path / "test_broken_adapter.py").write_text(BROKEN_ADAPTER, encoding="utf-8")

    done = run_bare_pytest(tmp_path, "-rf")

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

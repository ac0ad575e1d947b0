"""Every integration test module is marked ``integration`` (so ``-m "not integration"`` works).

The mark must be on the module's ``pytestmark`` (alone or in a list): a test module added to
tests/integration without it fails here, before it runs a unit-only job against services.
"""

from __future__ import annotations

import ast
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"


def module_marks(path: Path) -> set[str]:
    """The ``pytest.mark.<name>`` names a module's top-level ``pytestmark`` assigns."""
    marks: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
            continue
        for sub in ast.walk(value):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Attribute)
                and sub.value.attr == "mark"
            ):
                marks.add(sub.attr)
    return marks


def test_every_integration_test_module_is_marked_integration() -> None:
    modules = sorted(INTEGRATION.rglob("test_*.py"))
    assert len(modules) > 10, "tests/integration moved?"
    unmarked = [
        str(path.relative_to(INTEGRATION))
        for path in modules
        if "integration" not in module_marks(path)
    ]
    assert not unmarked, (
        "add `pytestmark = pytest.mark.integration` (or include it in the module's pytestmark "
        f"list) to: {', '.join(unmarked)}"
    )


def test_the_scan_reads_lists_and_single_marks(tmp_path: Path) -> None:
    single = tmp_path / "test_single.py"
    single.write_text("import pytest\npytestmark = pytest.mark.integration\n")
    listed = tmp_path / "test_listed.py"
    listed.write_text("import pytest\npytestmark = [pytest.mark.anyio, pytest.mark.integration]\n")
    other = tmp_path / "test_other.py"
    other.write_text(
        "import pytest\npytestmark = pytest.mark.anyio\n\ndef f():\n    integration = 1\n"
    )
    assert module_marks(single) == {"integration"}
    assert module_marks(listed) == {"anyio", "integration"}
    assert module_marks(other) == {"anyio"}

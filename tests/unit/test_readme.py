"""The README's examples, run as written (so README and tests cannot drift).

The "Testing your handlers" block is a complete test module. Its test functions are compiled
from README.md into this module (pytest collects them here, on both anyio backends), and the
block also runs as its own file under a bare pytest configuration, as a user who copies it
would run it. The "Quick start" block runs as a script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.unit.doc_blocks import ROOT, exec_block, python_block, run_bare_pytest

README = ROOT / "README.md"
SECTION = "## Testing your handlers"

_CODE = exec_block(README, SECTION, globals())


def test_the_readme_block_defines_at_least_one_test() -> None:
    tests = re.findall(r"^async def (test_\w+)", _CODE, re.MULTILINE)
    assert tests
    assert all(callable(globals().get(name)) for name in tests)


def test_the_readme_block_passes_under_plain_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_readme_example.py").write_text(_CODE, encoding="utf-8")
    done = run_bare_pytest(tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), done.stdout
    assert "skipped" not in done.stdout


def test_the_readme_quick_start_runs_as_a_script(tmp_path: Path) -> None:
    code, _ = python_block(README, "## Quick start")
    script = tmp_path / "quick_start.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_TASK_")}
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f-]{36} AddTaskResultCode\.OK\n", done.stdout), done.stdout

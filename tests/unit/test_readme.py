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

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Testing your handlers"


def readme_block(section: str) -> tuple[str, int]:
    """The first ```python block after the ``section`` heading, and its first line number."""
    text = README.read_text(encoding="utf-8")
    start = text.index(section)
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no python block after {section!r} in README.md"
    return match.group(1), text.count("\n", 0, match.start(1)) + 1


_CODE, _FIRST_LINE = readme_block(SECTION)
# Padded so that a failing assertion's traceback points at the README's own line.
exec(compile("\n" * (_FIRST_LINE - 1) + _CODE, str(README), "exec"), globals())


def test_the_readme_block_defines_at_least_one_test() -> None:
    tests = re.findall(r"^async def (test_\w+)", _CODE, re.MULTILINE)
    assert tests
    assert all(callable(globals().get(name)) for name in tests)


def test_the_readme_block_passes_under_plain_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_readme_example.py").write_text(_CODE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), done.stdout
    assert "skipped" not in done.stdout


def test_the_readme_quick_start_runs_as_a_script(tmp_path: Path) -> None:
    code, _ = readme_block("## Quick start")
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

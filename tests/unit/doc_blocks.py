"""Code blocks of the repository's Markdown documents, run by the tests as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_block(document: Path, section: str) -> tuple[str, int]:
    """The first ```python block after the ``section`` heading, and its first line number."""
    text = document.read_text(encoding="utf-8")
    match = _BLOCK.search(text, text.index(section))
    assert match is not None, f"no python block after {section!r} in {document.name}"
    return match.group(1), text.count("\n", 0, match.start(1)) + 1


def exec_block(document: Path, section: str, namespace: dict[str, Any]) -> str:
    """Run the block in ``namespace`` (a test module's globals), so pytest collects its tests.

    Padded so that a failing assertion's traceback points at the document's own line.
    """
    code, first_line = python_block(document, section)
    exec(compile("\n" * (first_line - 1) + code, str(document), "exec"), namespace)
    return code


def run_bare_pytest(
    directory: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Bare pytest (no project configuration) over ``directory``, as a user would run it."""
    (directory / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

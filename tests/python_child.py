"""Start a Python child process from the repository root, its output merged into one pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "spawn_python"]

ROOT = Path(__file__).resolve().parents[1]


def spawn_python(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -c code`` in :data:`ROOT` with ``env``; stdout and stderr as one text pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

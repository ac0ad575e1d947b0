"""The layering holds: import-linter's contracts pass, and the public names are tidy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import resilient_task.domain
import resilient_task.errors
from resilient_task.errors import ResilientTaskError

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = [resilient_task.domain, resilient_task.errors]


def isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: SCREAMING_CASE constants, then CamelCase classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_every_public_name_exists(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_public_names_are_sorted_and_unique(module: ModuleType) -> None:
    names = list(module.__all__)
    assert names == sorted(set(names), key=isort_style)


def test_every_error_derives_from_resilient_task_error() -> None:
    for name in resilient_task.errors.__all__:
        error = getattr(resilient_task.errors, name)
        assert issubclass(error, ResilientTaskError), name


def test_the_errors_docstring_draws_every_error() -> None:
    tree = resilient_task.errors.__doc__ or ""
    drawn = set(re.findall(r"^[\s│├└─]*(\w+Error)\b", tree, flags=re.MULTILINE))
    assert drawn == set(resilient_task.errors.__all__)

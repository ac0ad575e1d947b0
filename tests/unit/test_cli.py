"""The ``resilient-task`` command line (synchronous: ``main`` runs its own event loop)."""

from __future__ import annotations

import pytest

from resilient_task.cli import main


def test_demo_runs_the_payment_flow_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0

    out = capsys.readouterr().out
    assert "demo succeeded" in out
    assert "UNEXPECTED" not in out


def test_db_upgrade_without_a_database_url_exits_2_and_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RESILIENT_TASK_DATABASE_URL", raising=False)

    assert main(["db", "upgrade"]) == 2

    err = capsys.readouterr().err
    assert "--database-url" in err
    assert "RESILIENT_TASK_DATABASE_URL" in err


def test_worker_with_an_unimportable_app_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", "--app", "no_such_module_for_resilient_task:app"]) == 1

    assert "cannot import 'no_such_module_for_resilient_task'" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])

    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err

"""What a newcomer meets first: nodes that would lose tasks refuse to start, bad settings say so.

The worker refusals run ``main`` in-process; starting a real worker and the example producer
run as subprocesses, as a user would run them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_task.cli import main

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_TASK_")}
    env.update(extra)
    return env


def test_a_worker_on_the_in_memory_store_is_refused_naming_the_variable() -> None:
    # A subprocess with a timeout: without the refusal the worker would run until a signal.
    done = subprocess.run(
        [PYTHON, "-m", "resilient_task.cli", "worker", "--app", "tests.unit.cli_apps:memory_node"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: tests.unit.cli_apps:memory_node keeps its tasks in")
    assert "RESILIENT_TASK_DATABASE_URL" in done.stderr
    assert "--in-memory" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_log_level_is_refused_before_the_worker_starts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENT_TASK_LOG_LEVEL", "chatty")
    assert main(["worker", "--app", "tests.unit.cli_apps:database_node"]) == 1

    err = capsys.readouterr().err
    assert err.startswith("error: RESILIENT_TASK_LOG_LEVEL must be one of DEBUG, INFO")
    assert "Traceback" not in err


def test_a_worker_asked_for_in_memory_runs_until_sigterm() -> None:
    command = [PYTHON, "-m", "resilient_task.cli", "worker", "--in-memory",
               "--app", "tests.unit.cli_apps:memory_node"]  # fmt: skip
    env = clean_env(RESILIENT_TASK_LOG_LEVEL="info")
    with subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stderr is not None
            lines: list[str] = []
            while line := worker.stderr.readline():  # the worker logs to stderr
                lines.append(line)
                if "running; SIGTERM or SIGINT stops it" in line:
                    break
            assert any("running; SIGTERM" in line for line in lines), "".join(lines)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()


def test_the_example_producer_without_a_database_refuses_instead_of_losing_tasks() -> None:
    done = subprocess.run(
        [PYTHON, "examples/payments_worker.py", "add", "100"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "added" not in done.stdout
    assert done.stderr.startswith("error: this node runs no workers and has no database")
    assert "RESILIENT_TASK_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("RESILIENT_TASK_CLEANER_INTERVAL_S", "soon"), ("RESILIENT_TASK_KAFKA_EXTRA", "{tls")],
)
def test_a_bad_variable_stops_the_example_with_one_line_naming_it(name: str, value: str) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "resilient_task.cli", "worker", "--app", "examples.payments_worker:app"],
        cwd=ROOT,
        env=clean_env(**{name: value}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {name} must be")
    assert done.stderr.count("\n") == 1

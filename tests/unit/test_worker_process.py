"""The ``resilient-task worker`` process: a clean stop exits 0, a dead node exits 1 loudly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _worker(app: str) -> subprocess.Popen[str]:
    code = (
        "import sys; from resilient_task.cli import main; "
        f"sys.exit(main(['worker', '--app', {app!r}, '--in-memory']))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESILIENT_TASK_LOG_LEVEL": "INFO"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_worker_whose_node_dies_logs_an_error_and_exits_1_instead_of_idling() -> None:
    worker = _worker("tests.unit.worker_crash_apps:crashing_node")
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 1, output
    assert "ERROR   resilient_task.worker: worker " in output
    assert "stopped: it can no longer accept work (SystemExit: a predicate that exits)" in output


def test_a_worker_stopped_by_sigterm_exits_0() -> None:
    worker = _worker("tests.unit.cli_apps:memory_node")
    try:
        deadline = time.monotonic() + 60
        assert worker.stdout is not None
        while time.monotonic() < deadline:  # wait until it serves (bounded: never hangs)
            ready, _, _ = select.select([worker.stdout], [], [], deadline - time.monotonic())
            line = worker.stdout.readline() if ready else ""
            if not line or "SIGTERM or SIGINT stops it gracefully" in line:
                break
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert "ERROR" not in output

"""The ``resilient-task worker`` process: a clean stop exits 0, a dead node exits 1 loudly."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from typing import IO

from tests.python_child import ROOT, spawn_python


def _worker(app: str) -> subprocess.Popen[str]:
    code = (
        "import sys; from resilient_task.cli import main; "
        f"sys.exit(main(['worker', '--app', {app!r}, '--in-memory']))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESILIENT_TASK_LOG_LEVEL": "INFO"}
    return spawn_python(code, env)


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    """Copy ``stream``'s lines into ``lines``; an empty string marks its end."""
    for line in stream:
        lines.put(line)
    lines.put("")


def test_a_worker_whose_node_dies_logs_an_error_and_exits_1_instead_of_idling() -> None:
    worker = _worker("tests.unit.worker_crash_apps:crashing_node")
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 1, output
    assert "ERROR   resilient_task.worker: worker " in output
    assert "stopped: it can no longer accept work (SystemExit: a predicate that exits)" in output


def test_a_worker_stopped_by_sigterm_exits_0() -> None:
    worker = _worker("tests.unit.cli_apps:memory_node")
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    try:
        assert worker.stdout is not None
        # A reader thread, not select() on the pipe: lines already in the text buffer would
        # not wake select, and the wait would run to its bound.
        reader = threading.Thread(target=_pump, args=(worker.stdout, lines), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it serves (bounded: never hangs)
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if not line or "SIGTERM or SIGINT stops it gracefully" in line:
                break
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        reader.join(timeout=10)
        while not lines.empty():
            seen.append(lines.get())
        output = "".join(seen)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        if worker.stdout is not None:
            worker.stdout.close()
    assert worker.returncode == 0, output
    assert "ERROR" not in output
